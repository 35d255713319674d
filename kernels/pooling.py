"""Mean pooling over token embeddings, packed (varlen) and padded forms.

Both kernels accumulate in float32 and return the hidden states' dtype, matching
sentence-transformers' ``Pooling(pooling_mode="mean")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import (
    HAS_TRITON,
    check_cu_seqlens,
    check_float,
    check_ndim,
    check_same_device,
    next_pow2,
    resolve_backend,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = [
    "varlen_mean_pool",
    "varlen_mean_pool_ref",
    "masked_mean_pool",
    "masked_mean_pool_ref",
]

# Same constants as sentence-transformers (count clamp) and F.normalize (norm clamp).
_COUNT_EPS = 1e-9
_NORM_EPS = 1e-12
# A normalised row must live in one program; beyond this the register tile gets silly.
_MAX_NORMALIZE_H = 16384


if HAS_TRITON:

    @triton.jit
    def _varlen_mean_pool_kernel(
        hidden_ptr,  # (total_tokens, H)
        cu_seqlens_ptr,  # (B+1,) int32
        out_ptr,  # (B, H)
        H,
        stride_ht,
        stride_ob,
        skip_first,
        BLOCK_T: tl.constexpr,
        BLOCK_H: tl.constexpr,
        NORMALIZE: tl.constexpr,
    ):
        b = tl.program_id(0)
        offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        h_mask = offs_h < H
        end = tl.load(cu_seqlens_ptr + b + 1)
        first = tl.load(cu_seqlens_ptr + b) + skip_first
        # A 2-D accumulator keeps BLOCK_T independent add chains (and loads) in flight;
        # it is reduced over tokens once at the end.
        acc = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
        for t0 in range(first, end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            ptrs = hidden_ptr + rows.to(tl.int64)[:, None] * stride_ht + offs_h[None, :]
            x = tl.load(ptrs, mask=(rows < end)[:, None] & h_mask[None, :], other=0.0)
            acc += x.to(tl.float32)
        count = tl.maximum(end - first, 0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / tl.maximum(count, 1e-9)
        if NORMALIZE:
            norm = tl.sqrt(tl.sum(mean * mean, axis=0))
            mean = mean / tl.maximum(norm, 1e-12)
        tl.store(out_ptr + b.to(tl.int64) * stride_ob + offs_h, mean.to(out_ptr.dtype.element_ty), mask=h_mask)

    @triton.jit
    def _masked_mean_pool_kernel(
        hidden_ptr,  # (B, L, H)
        mask_ptr,  # (B, L)
        out_ptr,  # (B, H)
        L,
        H,
        stride_hb,
        stride_hl,
        stride_mb,
        stride_ml,
        stride_ob,
        BLOCK_T: tl.constexpr,
        BLOCK_H: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        h_mask = offs_h < H
        acc = tl.zeros((BLOCK_T, BLOCK_H), dtype=tl.float32)
        weight_sum = tl.zeros((BLOCK_T,), dtype=tl.float32)
        for t0 in range(0, L, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            w = tl.load(mask_ptr + b * stride_mb + rows * stride_ml, mask=rows < L, other=0).to(tl.float32)
            # Padding rows (weight 0) are never read: on padded batches that is most of
            # the bandwidth. Differs from x * 0 only where padding holds inf/NaN.
            live = (w != 0.0)[:, None] & h_mask[None, :]
            ptrs = hidden_ptr + b * stride_hb + rows.to(tl.int64)[:, None] * stride_hl + offs_h[None, :]
            x = tl.load(ptrs, mask=live, other=0.0)
            acc += x.to(tl.float32) * w[:, None]
            weight_sum += w
        mean = tl.sum(acc, axis=0) / tl.maximum(tl.sum(weight_sum, axis=0), 1e-9)
        tl.store(out_ptr + b * stride_ob + offs_h, mean.to(out_ptr.dtype.element_ty), mask=h_mask)


def _row_major_2d(name: str, t: torch.Tensor) -> None:
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must have unit stride in its last dim, got strides {t.stride()}")


# ---------------------------------------------------------------------------- varlen


def _check_varlen_pool(hidden, cu_seqlens, skip_first, validate):
    if not isinstance(hidden, torch.Tensor):
        raise ValueError(f"hidden must be a torch.Tensor, got {type(hidden).__name__}")
    check_ndim("hidden", hidden, (2,), "(total_tokens, H)")
    check_float("hidden", hidden)
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first must be an int >= 0, got {skip_first!r}")
    check_cu_seqlens(cu_seqlens, hidden.shape[0], validate=validate)
    check_same_device(hidden=hidden, cu_seqlens=cu_seqlens)


def varlen_mean_pool_ref(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    skip_first: int = 0,
    normalize: bool = False,
    backend: str = "torch",
    validate: bool = True,
) -> torch.Tensor:
    """Plain-torch :func:`varlen_mean_pool` (segment sums with ``index_add_``).

    ``backend`` is accepted for signature parity and ignored.
    """
    del backend
    _check_varlen_pool(hidden, cu_seqlens, skip_first, validate)
    batch = cu_seqlens.numel() - 1
    total, width = hidden.shape
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    seq_id = torch.repeat_interleave(torch.arange(batch, device=hidden.device), lengths, output_size=total)
    pos = torch.arange(total, device=hidden.device) - cu[:-1].repeat_interleave(lengths, output_size=total)
    keep = pos >= skip_first
    sums = torch.zeros(batch, width, dtype=torch.float32, device=hidden.device)
    sums.index_add_(0, seq_id[keep], hidden[keep].float())
    counts = (lengths - skip_first).clamp(min=0).to(torch.float32)
    mean = sums / counts.clamp(min=_COUNT_EPS)[:, None]
    if normalize:
        mean = F.normalize(mean, p=2.0, dim=-1, eps=_NORM_EPS)
    return mean.to(hidden.dtype)


def varlen_mean_pool(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    skip_first: int = 0,
    normalize: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Mean of each packed sequence's token embeddings.

    Args:
        hidden: ``(total_tokens, H)`` float32/float16/bfloat16, unit stride in H.
        cu_seqlens: ``(B+1,)`` int32 prefix sums of the sequence lengths.
        skip_first: leave out the first ``skip_first`` tokens of every sequence
            (sentence-transformers' ``include_prompt=False``); a sequence with no
            token left pools to zeros.
        normalize: L2-normalise each float32 mean (``F.normalize``, eps 1e-12) before
            the cast back to ``hidden.dtype``.
        backend: ``"auto"`` (Triton on CUDA, torch on CPU), ``"triton"`` or ``"torch"``.
        validate: read ``cu_seqlens`` back to check its values (a host sync on CUDA).

    Returns:
        ``(B, H)`` in ``hidden.dtype``; zero-length sequences give zero rows.
    """
    if resolve_backend(backend, hidden, cu_seqlens) == "torch":
        return varlen_mean_pool_ref(
            hidden, cu_seqlens, skip_first=skip_first, normalize=normalize, validate=validate
        )
    _check_varlen_pool(hidden, cu_seqlens, skip_first, validate)
    _row_major_2d("hidden", hidden)
    batch = cu_seqlens.numel() - 1
    width = hidden.shape[1]
    out = torch.empty(batch, width, dtype=hidden.dtype, device=hidden.device)
    if batch == 0 or width == 0:
        return out
    if normalize:
        block_h = next_pow2(width)
        if block_h > _MAX_NORMALIZE_H:
            raise ValueError(f"normalize=True supports H <= {_MAX_NORMALIZE_H}, got H={width}")
    else:
        # Narrow column blocks multiply the programs, so small batches still fill the GPU.
        block_h = min(next_pow2(width), 128)
    block_t = max(1, min(32, 4096 // block_h))
    grid = (batch, triton.cdiv(width, block_h))
    _varlen_mean_pool_kernel[grid](
        hidden,
        cu_seqlens,
        out,
        width,
        hidden.stride(0),
        out.stride(0),
        # Any skip >= the longest sequence empties them all; clamping keeps it int32.
        min(skip_first, hidden.shape[0]),
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        NORMALIZE=normalize,
        num_warps=4 if block_t * block_h <= 4096 else 8,
    )
    return out


# ---------------------------------------------------------------------------- padded


def _check_masked_pool(hidden, attention_mask):
    if not isinstance(hidden, torch.Tensor) or not isinstance(attention_mask, torch.Tensor):
        raise ValueError("hidden and attention_mask must be torch.Tensors")
    check_ndim("hidden", hidden, (3,), "(B, L, H)")
    check_float("hidden", hidden)
    check_ndim("attention_mask", attention_mask, (2,), "(B, L)")
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != hidden (B, L) {tuple(hidden.shape[:2])}"
        )
    if attention_mask.is_complex():
        raise ValueError(f"attention_mask must be a bool/int/float tensor, got {attention_mask.dtype}")
    check_same_device(hidden=hidden, attention_mask=attention_mask)


def masked_mean_pool_ref(
    hidden: torch.Tensor, attention_mask: torch.Tensor, *, backend: str = "torch"
) -> torch.Tensor:
    """Plain-torch :func:`masked_mean_pool`: sentence-transformers' formula in float32."""
    del backend
    _check_masked_pool(hidden, attention_mask)
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    summed = (hidden.float() * mask).sum(dim=1)
    return (summed / mask.sum(dim=1).clamp(min=_COUNT_EPS)).to(hidden.dtype)


def masked_mean_pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:
    """Mean pooling of a padded batch (sentence-transformers' mean pooling).

    Args:
        hidden: ``(B, L, H)`` float32/float16/bfloat16, unit stride in H.
        attention_mask: ``(B, L)`` of any bool/int/float dtype; the weight of each token.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``(B, H)`` = ``sum(hidden * mask) / clamp(sum(mask), 1e-9)`` in ``hidden.dtype``.
    """
    if resolve_backend(backend, hidden, attention_mask) == "torch":
        return masked_mean_pool_ref(hidden, attention_mask)
    _check_masked_pool(hidden, attention_mask)
    _row_major_2d("hidden", hidden)
    batch, length, width = hidden.shape
    out = torch.empty(batch, width, dtype=hidden.dtype, device=hidden.device)
    if batch == 0 or width == 0:
        return out
    mask = attention_mask
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)  # same bytes; sidesteps i1 pointer loads
    block_h = min(next_pow2(width), 128)
    block_t = max(1, min(32, 4096 // block_h))
    grid = (batch, triton.cdiv(width, block_h))
    _masked_mean_pool_kernel[grid](
        hidden,
        mask,
        out,
        length,
        width,
        hidden.stride(0),
        hidden.stride(1),
        mask.stride(0),
        mask.stride(1),
        out.stride(0),
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        num_warps=4,
    )
    return out
