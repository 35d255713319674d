"""int8 inference on CPU: every linear layer of the encoder as an int8 GEMM.

- Weights are quantized once, symmetric, one scale per output channel.
- Activations are quantized per token (one scale per row, from the row's absolute maximum)
  at run time. Integer accumulation is exact, and a row's scale depends only on that row, so
  a text's embedding does not depend on its batch neighbours, like the float paths on CPU.
- SmoothQuant-style smoothing: a per-input-channel factor ``s`` calibrated on text divides
  the activation and multiplies the weight (``x W^T = (x / s)(W s)^T``), moving the outlier
  channels of the LayerNorm outputs into the weights, which quantize them per channel.
- Attention, LayerNorm, GELU and the embeddings stay in the float dtype.

The GEMM itself lives behind :func:`int8_gemm` (and :func:`pack_weight`), so that a CPU on
which another kernel wins can take another path; see ``benchmarks/RESULTS.md`` for the
measurements behind the choice.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
# Migration strength: 0 keeps the activations as they are, 1 moves all their range into the
# weights. 0.5 is SmoothQuant's default and measured best here (benchmarks/RESULTS.md).
SMOOTH_ALPHA = 0.5
_CALIBRATION_BATCH = 32
# Row tiles of about this many bytes of float32 GEMM output (see Int8Linear.forward).
_TILE_BYTES = 1 << 20
_MIN_TILE_ROWS = 256
_MAX_CALIBRATION_TEXTS = 4096


def default_calibration_texts() -> list[str]:
    """The calibration text that ships with minilm: varied English, written for the project."""
    text = resources.files("minilm").joinpath("data", "calibration.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def check_quantize(quantize, device: torch.device) -> None:
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")
    if device.type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on CPU only (it uses the CPU's int8 instructions); "
                         f"got device {device}. Use dtype='float16' or 'bfloat16' on {device.type}")


def check_calibration_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise TypeError("calibration_texts must be a list of str (one text per item), "
                        f"got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"calibration_texts must hold only str; item {i} is {type(t).__name__}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("calibration_texts holds no non-empty text; pass a few hundred representative "
                         "sentences or paragraphs, or None for the text that ships with minilm")
    if len(texts) > _MAX_CALIBRATION_TEXTS:
        logger.info("calibrating int8 on the first %d of %d calibration texts", _MAX_CALIBRATION_TEXTS, len(texts))
        texts = texts[:_MAX_CALIBRATION_TEXTS]
    return texts


# --------------------------------------------------------------------------- the GEMM
def gemm_backend() -> str:
    """``"onednn"``: oneDNN's u8s8 int8 matmul (VNNI / AMX-INT8 / AVX2 paths chosen by oneDNN);
    ``"int_mm"``: ``torch._int_mm``, for builds without oneDNN."""
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "onednn"
    return "int_mm"


def pack_weight(wq: Tensor, backend: str) -> Tensor:
    """int8 ``(out, in)`` weight -> the layout ``int8_gemm`` wants."""
    if backend == "onednn":
        return torch.ops.onednn.qlinear_prepack(wq, None)
    return wq.t().contiguous()  # _int_mm: (in, out)


def int8_gemm(xq: Tensor, w: Tensor, w_scale: Tensor, backend: str, out_dtype: torch.dtype) -> Tensor:
    """``(xq - 128) @ wq^T * w_scale`` in ``out_dtype``: the integer product, scaled per output
    channel (the per-token activation scale is applied by the caller).

    xq: (T, in) uint8, the int8 activation offset by 128 -- oneDNN's fast kernels are u8s8;
    the offset is removed exactly through oneDNN's zero-point compensation.
    """
    if backend == "onednn":
        return torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, w, w_scale, _zero_points(w_scale), None,
                                                  1.0, 0, out_dtype, "none", [], "")
    acc = torch._int_mm((xq.to(torch.int16) - 128).to(torch.int8), w)
    return (acc.to(torch.float32) * w_scale).to(out_dtype)


_ZP_CACHE: dict[int, Tensor] = {}


def _zero_points(w_scale: Tensor) -> Tensor:
    n = w_scale.numel()
    if n not in _ZP_CACHE:
        _ZP_CACHE[n] = torch.zeros(n, dtype=torch.int64)
    return _ZP_CACHE[n]


def quantize_rows(x: Tensor, inv_smooth: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(T, in) float -> ((T, in) uint8 = round(x / s / scale) + 128, (T, 1) float32 scale).

    Written for few passes over memory, which is what these elementwise steps cost: abs and
    a reduction, one fused multiply-add, one truncating cast.
    """
    x = x.float()
    if inv_smooth is not None:
        x = x * inv_smooth
    # abs().amax() measures many times faster than linalg.vector_norm(inf) on CPU.
    amax = x.abs().amax(1, keepdim=True).clamp_min_(1e-8)  # (T, 1)
    # x * 127 / amax lies in [-127, 127]; adding 128.5 and truncating rounds it (ties upward)
    # into [1, 255], so no clamp is needed.
    q = torch.addcmul(_HALF_OFFSET, x, 127.0 / amax).to(torch.uint8)
    return q, amax.mul_(1.0 / 127.0)


_HALF_OFFSET = torch.tensor(128.5)


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` (CPU): int8 weights per output channel, int8 activations per
    token, the product scaled back to the input's float dtype."""

    def __init__(self, linear: nn.Linear, smooth: Optional[Tensor] = None, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend or gemm_backend()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        if smooth is not None:
            smooth = smooth.float()
            w = w * smooth  # column j scaled by s_j, the activation's column j divided by it
        w_scale = w.abs().amax(1).clamp_min(1e-8) / 127.0  # (out,)
        wq = torch.round(w / w_scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", pack_weight(wq, self.backend), persistent=False)
        self.register_buffer("weight_scale", w_scale, persistent=False)
        self.register_buffer("inv_smooth", None if smooth is None else 1.0 / smooth, persistent=False)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            raise ValueError("int8 layers run on CPU only; load the model with quantize=None for "
                             f"{x.device.type}")
        out = x.new_empty(x.shape[0], self.out_features)
        # Row tiles keep the float32 product in cache between the GEMM and its rescaling: on
        # a memory-bound CPU a full-size product cost more than the int8 GEMM saved. Rows are
        # independent, so tiling changes no result.
        rows = max(_MIN_TILE_ROWS, _TILE_BYTES // (4 * self.out_features))
        for i in range(0, x.shape[0], rows):
            q, scale = quantize_rows(x[i:i + rows], self.inv_smooth)
            y = int8_gemm(q, self.weight_int8, self.weight_scale, self.backend, torch.float32)  # (rows, out)
            if self.bias is None:
                torch.mul(y, scale, out=out[i:i + rows])
            else:
                torch.addcmul(self.bias, y, scale, out=out[i:i + rows])
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, backend={self.backend}, "
                f"smoothed={self.inv_smooth is not None}")


# --------------------------------------------------------------------------- calibration
@torch.inference_mode()
def activation_ranges(encoder: nn.Module, batches: Iterable, names: Sequence[str]) -> dict[str, Tensor]:
    """Per-input-channel max |x| seen by each named ``nn.Linear`` over ``batches``."""
    ranges: dict[str, Tensor] = {}
    modules = dict(encoder.named_modules())

    def hook(name):
        def fn(_mod, args):
            m = args[0].detach().abs().float().amax(0)
            ranges[name] = m if name not in ranges else torch.maximum(ranges[name], m)
        return fn

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        for batch in batches:
            encoder(batch)
    finally:
        for h in handles:
            h.remove()
    return ranges


def smoothing_factors(x_max: Tensor, weight: Tensor, alpha: float = SMOOTH_ALPHA) -> Tensor:
    """SmoothQuant: s_j = max|x_j|^alpha / max|W_j|^(1 - alpha), per input channel j."""
    w_max = weight.detach().float().abs().amax(0).clamp_min(1e-5)
    s = x_max.clamp_min(1e-5).pow(alpha) / w_max.pow(1.0 - alpha)
    return s.clamp_min(1e-5)


def quantize_encoder(encoder: nn.Module, calibration_batches: Optional[Iterable] = None,
                     alpha: Optional[float] = SMOOTH_ALPHA) -> nn.Module:
    """Replace every ``nn.Linear`` inside the encoder's layers by an :class:`Int8Linear`, in place.

    ``calibration_batches``: encoder inputs (``VarlenBatch``) over which activation ranges are
    measured for smoothing; None or ``alpha=None`` quantizes without smoothing.
    """
    names = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and n.startswith("layers.")]
    smooth_on = calibration_batches is not None and alpha is not None and alpha > 0
    ranges = activation_ranges(encoder, calibration_batches, names) if smooth_on else {}
    backend = gemm_backend()
    modules = dict(encoder.named_modules())
    for n in names:
        parent_name, _, child = n.rpartition(".")
        lin = modules[n]
        smooth = smoothing_factors(ranges[n], lin.weight, alpha) if n in ranges else None
        setattr(modules[parent_name], child, Int8Linear(lin, smooth, backend))
    logger.info("int8: %d linear layers quantized (%s GEMM, smoothing %s)", len(names), backend,
                f"alpha={alpha}" if smooth_on else "off")
    return encoder


def calibration_batches(tokenizer, texts: Sequence[str], position_offset: int) -> Iterable:
    """Tokenize ``texts`` as ``encode()`` would and yield encoder batches of them."""
    from .varlen import make_varlen_batch

    ids = tokenizer.encode(list(texts))
    for i in range(0, len(ids), _CALIBRATION_BATCH):
        yield make_varlen_batch(ids[i:i + _CALIBRATION_BATCH], position_offset, with_token_types=False)


def quantize_model(encoder: nn.Module, quantize: Optional[str], device: torch.device, tokenizer,
                   calibration_texts: Optional[Sequence[str]] = None) -> Optional[list[str]]:
    """``SentenceTransformer(quantize=..., calibration_texts=...)``: validate both, calibrate on
    ``calibration_texts`` (default: the text shipped with minilm) and quantize the encoder in
    place. Returns the validated calibration texts (None for the default)."""
    if quantize is None:
        raise ValueError("calibration_texts is only used with quantize='int8'")
    check_quantize(quantize, device)
    texts = None if calibration_texts is None else check_calibration_texts(calibration_texts)
    batches = calibration_batches(tokenizer, texts or default_calibration_texts(), encoder.config.position_offset)
    quantize_encoder(encoder, batches)
    return texts
