"""Fused residual add + LayerNorm (BERT's post-LN ``LayerNorm(x + residual)``)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._utils import HAS_TRITON, check_float, check_same_device, next_pow2, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["add_layer_norm", "add_layer_norm_ref"]

# One program normalises whole rows; wider rows would spill registers.
_MAX_H = 16384


if HAS_TRITON:

    @triton.jit
    def _add_layer_norm_kernel(
        x_ptr,  # (N, H)
        res_ptr,  # (N, H), unused when HAS_RESIDUAL is False
        w_ptr,  # (H,)
        b_ptr,  # (H,)
        out_ptr,  # (N, H) contiguous
        N,
        H,
        stride_x,
        stride_r,
        eps,
        HAS_RESIDUAL: tl.constexpr,
        ROWS: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_H)
        col_mask = cols < H
        mask = (rows < N)[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)[:, None]
        x = tl.load(x_ptr + rows64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            x += tl.load(res_ptr + rows64 * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        # Two-pass statistics on the register tile: as cheap as one pass here and free of
        # the cancellation of E[x^2] - E[x]^2.
        mean = tl.sum(x, axis=1) / H
        centered = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(centered * centered, axis=1) / H
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = centered * rstd[:, None] * w[None, :] + b[None, :]
        tl.store(out_ptr + rows64 * H + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def _check(x, residual, weight, bias, eps):
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() < 1:
        raise ValueError(f"x must have at least one dim (..., H), got shape {tuple(x.shape)}")
    check_float("x", x)
    width = x.shape[-1]
    if residual is not None:
        if not isinstance(residual, torch.Tensor):
            raise ValueError(f"residual must be a torch.Tensor or None, got {type(residual).__name__}")
        check_float("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        check_float(name, t)
        if tuple(t.shape) != (width,):
            raise ValueError(f"{name} must have shape (H,)=({width},), got {tuple(t.shape)}")
    if not isinstance(eps, (float, int)) or isinstance(eps, bool) or eps < 0:
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    check_same_device(x=x, residual=residual, weight=weight, bias=bias)


def add_layer_norm_ref(
    x: torch.Tensor,
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-12,
    *,
    backend: str = "torch",
) -> torch.Tensor:
    """Plain-torch :func:`add_layer_norm` with float32 statistics."""
    del backend
    _check(x, residual, weight, bias, eps)
    h = x.float() if residual is None else x.float() + residual.float()
    return F.layer_norm(h, (x.shape[-1],), weight.float(), bias.float(), float(eps)).to(x.dtype)


def add_layer_norm(
    x: torch.Tensor,
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-12,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``LayerNorm(x + residual)`` over the last dim in one read of each input.

    Args:
        x: ``(..., H)`` float32/float16/bfloat16 (leading dims are flattened).
        residual: same shape as ``x`` (any float dtype), or ``None`` for a plain LayerNorm.
        weight, bias: ``(H,)``, any float dtype.
        eps: variance epsilon (BERT uses 1e-12).
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        Contiguous tensor shaped like ``x``, in ``x.dtype``; statistics in float32.
    """
    if resolve_backend(backend, x, residual, weight, bias) == "torch":
        return add_layer_norm_ref(x, residual, weight, bias, eps)
    _check(x, residual, weight, bias, eps)
    width = x.shape[-1]
    if width > _MAX_H:
        raise ValueError(f"H={width} not supported, expected H <= {_MAX_H}")
    # reshape is a view for the usual row-major inputs (strided rows included) and a copy
    # only for layouts the kernel could not address anyway.
    x2 = x.reshape(-1, width)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    r2 = None
    if residual is not None:
        r2 = residual.reshape(-1, width)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
    rows = x2.shape[0]
    out = torch.empty(rows, width, dtype=x.dtype, device=x.device)
    if rows == 0 or width == 0:
        return out.view(x.shape)
    block_h = next_pow2(width)
    # Several rows per program when H is small: fewer, fatter programs keep more bytes
    # in flight per SM than one short row each.
    rows_per_prog = max(1, min(16, 4096 // block_h))
    num_warps = 4 if block_h * rows_per_prog <= 4096 else 8
    if block_h >= 8192:
        num_warps = 16
    grid = (triton.cdiv(rows, rows_per_prog),)
    _add_layer_norm_kernel[grid](
        x2,
        r2 if r2 is not None else x2,
        weight,
        bias,
        out,
        rows,
        width,
        x2.stride(0),
        r2.stride(0) if r2 is not None else 0,
        float(eps),
        HAS_RESIDUAL=r2 is not None,
        ROWS=rows_per_prog,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out.view(x.shape)
