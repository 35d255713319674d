"""Shared helpers for the kernel launchers: backend dispatch and input validation."""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

try:  # Triton is optional: every op keeps a plain-torch path.
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    HAS_TRITON = False

BACKENDS = ("auto", "triton", "torch")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_enabled() -> bool:
    """True when Triton runs kernels through its numpy interpreter (CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "no", "off")


def interpreter_active() -> bool:
    """True when kernels on CPU tensors can actually run through the interpreter.

    Triton decides at import time whether its own helpers (``tl.sum``, ``tl.cdiv``...) are
    interpretable, so ``TRITON_INTERPRET=1`` set after the first ``import triton`` is
    not enough.
    """
    if not (HAS_TRITON and interpreter_enabled()):
        return False
    import triton.language as tl

    return type(tl.cdiv).__name__ == "InterpretedFunction"


def resolve_backend(backend: str, *tensors: Optional[torch.Tensor]) -> str:
    """Map ``backend`` to ``"triton"`` or ``"torch"`` for the given input tensors.

    ``"auto"`` picks Triton for CUDA tensors (when Triton is importable) and the torch
    reference otherwise. ``"triton"`` insists on the kernel and fails loudly when it
    cannot run, rather than silently falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    is_cuda = all(t.is_cuda for t in tensors if t is not None)
    if backend == "auto":
        return "triton" if (HAS_TRITON and is_cuda) else "torch"
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' requested but triton is not installed")
    if not is_cuda and not interpreter_active():
        late = " (it is set, but triton was imported before it was)" if interpreter_enabled() else ""
        raise RuntimeError(
            "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton "
            f"is first imported to run the kernel on CPU tensors through the interpreter{late}"
        )
    return "triton"


def check_same_device(**tensors: Optional[torch.Tensor]) -> None:
    items = [(name, t) for name, t in tensors.items() if t is not None]
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; "
                "all inputs must be on the same device"
            )


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be one of {tuple(str(d) for d in FLOAT_DTYPES)}, got {t.dtype}"
        )


def check_ndim(name: str, t: torch.Tensor, ndims: Sequence[int], layout: str) -> None:
    if t.dim() not in ndims:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")


def check_cu_seqlens(
    cu_seqlens: torch.Tensor,
    total_tokens: int,
    *,
    max_seqlen: Optional[int] = None,
    validate: bool = True,
) -> None:
    """Check a flash-attention style ``cu_seqlens`` (int32, (B+1,)) against the tokens.

    Shape and dtype checks are free. ``validate=True`` additionally reads the values
    (one small device->host copy, a sync on CUDA) to check that they start at 0, never
    decrease, end at ``total_tokens`` and that no sequence exceeds ``max_seqlen``; hot
    loops that build ``cu_seqlens`` themselves can pass ``validate=False``.
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise ValueError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must be 1-D of shape (B+1,), got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.stride(0) != 1:
        raise ValueError(f"cu_seqlens must be contiguous, got stride {cu_seqlens.stride()}")
    if not validate:
        return
    values = cu_seqlens.detach().to("cpu", torch.int64)
    first, last = int(values[0]), int(values[-1])
    if first != 0:
        raise ValueError(f"cu_seqlens[0]={first} != 0")
    if last != total_tokens:
        raise ValueError(f"cu_seqlens[-1]={last} != total_tokens={total_tokens}")
    if values.numel() > 1:
        lengths = values[1:] - values[:-1]
        if bool((lengths < 0).any()):
            bad = int(torch.nonzero(lengths < 0)[0])
            raise ValueError(
                f"cu_seqlens must be non-decreasing, got cu_seqlens[{bad}]={int(values[bad])} > "
                f"cu_seqlens[{bad + 1}]={int(values[bad + 1])}"
            )
        longest = int(lengths.max())
        if max_seqlen is not None and longest > max_seqlen:
            raise ValueError(f"max_seqlen={max_seqlen} < longest sequence length {longest}")


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
