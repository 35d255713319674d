"""Fused bias add + exact (erf) GELU, the BERT intermediate activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import HAS_TRITON, check_float, check_same_device, next_pow2, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["bias_gelu", "bias_gelu_ref"]


if HAS_TRITON:

    @triton.jit
    def _bias_gelu_kernel(
        x_ptr,  # (N, H) contiguous
        bias_ptr,  # (H,)
        out_ptr,  # (N, H) contiguous
        N,
        H,
        ROWS: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        # A 2-D tile rather than a flat index: the bias is loaded once per program and no
        # per-element (64-bit) modulo is needed to find each element's column.
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        col_mask = cols < H
        mask = (rows < N)[:, None] & col_mask[None, :]
        offs = rows.to(tl.int64)[:, None] * H + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        h = x + b[None, :]
        y = 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def _check(x, bias):
    for name, t in (("x", x), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_float(name, t)
    if x.dim() < 1 or tuple(bias.shape) != (x.shape[-1],):
        raise ValueError(f"bias must have shape (H,) with H = x.shape[-1]; got x {tuple(x.shape)}, bias {tuple(bias.shape)}")
    check_same_device(x=x, bias=bias)


def bias_gelu_ref(x: torch.Tensor, bias: torch.Tensor, *, backend: str = "torch") -> torch.Tensor:
    """Plain-torch :func:`bias_gelu`, computed in float32."""
    del backend
    _check(x, bias)
    return F.gelu(x.float() + bias.float(), approximate="none").to(x.dtype)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """``gelu(x + bias)`` with the exact erf GELU, in one pass over ``x``.

    Args:
        x: ``(..., H)`` float32/float16/bfloat16 (made contiguous if it is not).
        bias: ``(H,)``, any float dtype.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        Contiguous tensor shaped like ``x`` in ``x.dtype``; math in float32.
    """
    if resolve_backend(backend, x, bias) == "torch":
        return bias_gelu_ref(x, bias)
    _check(x, bias)
    width = x.shape[-1]
    xc = x.contiguous()
    out = torch.empty_like(xc)
    if xc.numel() == 0:
        return out
    rows = xc.numel() // width
    block_h = min(next_pow2(width), 512)
    rows_per_prog = max(1, 4096 // block_h)
    grid = (triton.cdiv(rows, rows_per_prog), triton.cdiv(width, block_h))
    _bias_gelu_kernel[grid](
        xc, bias.contiguous(), out, rows, width, ROWS=rows_per_prog, BLOCK_H=block_h, num_warps=8
    )
    return out
