"""Embedding quantization with sentence-transformers' rules (``util.quantize_embeddings``).

- ``int8`` / ``uint8``: every dimension is cut into 256 equal buckets between a per-dimension
  minimum and maximum (``ranges``, shape ``(2, D)``). Ranges come from ``ranges`` if given, else
  from ``calibration_embeddings``, else from the embeddings being quantized -- which needs at
  least two of them. Values outside the range clip to the end buckets; ``int8`` is the ``uint8``
  bucket minus 128.
- ``binary`` / ``ubinary``: one bit per dimension (``value > 0``), packed 8 to a byte, most
  significant bit first and zero-padded; ``binary`` stores each byte minus 128 as ``int8``.
- ``float32``: a plain cast.

The arithmetic (float32 ranges and steps, ``floor``) follows sentence-transformers so that the
same float inputs give the same codes.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
# Fewer calibration rows than this give noisy bucket edges; sentence-transformers warns too.
_FEW_CALIBRATION_ROWS = 100


def check_precision(precision: Any) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"Precision {precision!r} is not supported; expected one of {PRECISIONS}")


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return t.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a numpy array, a tensor or a list of them; got {type(x).__name__}") from e


def _ranges_from(data: np.ndarray, precision: str, from_calibration: bool) -> np.ndarray:
    if not from_calibration:
        if data.ndim == 1 or data.shape[0] == 1:
            raise ValueError(
                f"Cannot compute {precision} quantization ranges from a single embedding; pass `ranges` or "
                "`calibration_embeddings` computed from a representative set of embeddings"
            )
        if data.shape[0] < _FEW_CALIBRATION_ROWS:
            logger.warning("Computing %s quantization ranges from only %d embeddings; pass `ranges` or "
                           "`calibration_embeddings` from more embeddings for stable buckets", precision, data.shape[0])
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"calibration embeddings must be a non-empty 2-D array, got shape {data.shape}")
    return np.vstack((data.min(axis=0), data.max(axis=0)))


def _calibration(calibration_embeddings: Any, dim: int) -> np.ndarray:
    cal = _to_numpy(calibration_embeddings, "calibration_embeddings")
    if cal.ndim == 1:
        cal = cal[None, :]
    if cal.ndim != 2 or cal.shape[-1] != dim:
        raise ValueError(f"calibration_embeddings must have shape (n, {dim}) to match the embeddings, "
                         f"got {cal.shape}")
    return cal


def _check_ranges(ranges: Any, dim: int) -> np.ndarray:
    r = _to_numpy(ranges, "ranges")
    if r.shape != (2, dim):
        raise ValueError(f"ranges must have shape (2, {dim}) (per-dimension minimum and maximum), got {r.shape}")
    if not np.issubdtype(r.dtype, np.number):
        raise ValueError(f"ranges must be numeric, got dtype {r.dtype}")
    return r


def quantize_embeddings(
    embeddings: Any,
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
):
    """Quantize float embeddings to ``precision`` (see the module docstring for the rules).

    ``embeddings`` is a ``(N, D)`` or ``(D,)`` array or tensor, or a list of ``(D,)`` rows; a list
    of ``(n_tokens, D)`` matrices (token embeddings) gives a list of quantized matrices that share
    one set of ranges. Returns numpy: ``int8``/``uint8`` of the same shape, or ``ceil(D / 8)``
    bytes per row for the binary precisions.
    """
    check_precision(precision)
    if isinstance(embeddings, (list, tuple)):
        if not embeddings:
            return []
        items = [_to_numpy(e, "embeddings") for e in embeddings]
        if items[0].ndim == 2:
            return _quantize_matrices(items, precision, ranges, calibration_embeddings)
        try:
            arr = np.stack(items)
        except ValueError as e:
            raise ValueError(f"embeddings rows have different shapes: {sorted({i.shape for i in items})}") from e
    else:
        arr = _to_numpy(embeddings, "embeddings")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"embeddings to quantize must be floating point, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"embeddings must be 1-D or 2-D, got shape {arr.shape}")
    dim = arr.shape[-1]

    if precision == "float32":
        return arr.astype(np.float32)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(arr > 0, axis=-1)
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)

    out_dtype = np.int8 if precision == "int8" else np.uint8
    if arr.ndim == 2 and arr.shape[0] == 0:
        return np.zeros((0, dim), dtype=out_dtype)
    if ranges is not None:
        r = _check_ranges(ranges, dim)
    elif calibration_embeddings is not None:
        r = _ranges_from(_calibration(calibration_embeddings, dim), precision, from_calibration=True)
    else:
        r = _ranges_from(arr, precision, from_calibration=False)
    r = r.astype(np.float32, copy=False)
    low = r[0]
    step = (r[1] - low) / np.float32(255)
    # A constant dimension has zero width; any step maps it to bucket 0.
    step = np.where(step == 0, np.float32(1), step)
    buckets = np.clip(np.floor((arr - low) / step), 0, 255)
    if precision == "uint8":
        return buckets.astype(np.uint8)
    return (buckets - 128).astype(np.int8)


def _quantize_matrices(items: list[np.ndarray], precision: str, ranges: Any, calibration_embeddings: Any):
    """Token-embedding matrices: calibrate once over all of them so every text uses the same buckets."""
    dims = {m.shape[-1] for m in items}
    if any(m.ndim != 2 for m in items) or len(dims) != 1:
        raise ValueError(f"a list of matrices must all be (n_tokens, D) with one D; got shapes "
                         f"{sorted({m.shape for m in items})}")
    if precision in ("int8", "uint8") and ranges is None:
        dim = dims.pop()
        if calibration_embeddings is not None:
            ranges = _ranges_from(_calibration(calibration_embeddings, dim), precision, from_calibration=True)
        else:
            stacked = np.concatenate(items, axis=0)
            if len(stacked):
                ranges = _ranges_from(stacked, precision, from_calibration=False)
    return [quantize_embeddings(m, precision, ranges=ranges) for m in items]
