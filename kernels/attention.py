"""Variable-length (packed) non-causal attention, flash-attention style.

Sequences are packed back to back, as in flash-attention's varlen API: ``q, k, v`` are
``(total_tokens, heads, head_dim)`` and ``cu_seqlens`` (int32, ``(B+1,)``) holds the
offsets of the ``B`` sequences; ``max_seqlen`` is the longest length. Every query attends
to all keys of its own sequence and nothing else. The kernel streams K/V blocks with an
online softmax, so no ``(L, L)`` matrix is ever materialised.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch

from ._utils import (
    HAS_TRITON,
    check_cu_seqlens,
    check_float,
    check_same_device,
    next_pow2,
    resolve_backend,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["varlen_attention", "varlen_attention_ref"]

MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


if HAS_TRITON:

    @triton.jit
    def _varlen_attn_fwd_kernel(
        q_ptr,  # (total_tokens, heads, head_dim), any token/head strides
        k_ptr,
        v_ptr,
        o_ptr,
        cu_seqlens_ptr,  # (B+1,) int32
        bias_ptr,  # (B or broadcast, heads, >=max_seqlen, >=max_seqlen)
        stride_qt,
        stride_qh,
        stride_kt,
        stride_kh,
        stride_vt,
        stride_vh,
        stride_ot,
        stride_oh,
        stride_bb,
        stride_bh,
        stride_bm,
        stride_bn,
        num_heads,
        head_dim,
        max_seqlen,
        qk_scale,  # softmax scale * log2(e): the softmax runs in base 2
        SEQ_BUCKET,  # autotune key only
        HAS_BIAS: tl.constexpr,
        IEEE: tl.constexpr,
        UPCAST_DOT: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        # 1-D grid, query blocks fastest: the blocks of one (sequence, head) run side by
        # side and share its K/V through L2, and the grid has no 65535 limit on B * heads.
        pid = tl.program_id(0)
        num_m = tl.cdiv(max_seqlen, BLOCK_M)
        pid_m = pid % num_m
        pid_bh = pid // num_m
        b = pid_bh // num_heads
        h = pid_bh % num_heads
        start = tl.load(cu_seqlens_ptr + b)
        seqlen = tl.load(cu_seqlens_ptr + b + 1) - start
        if pid_m * BLOCK_M >= seqlen:
            return  # past the end of a shorter sequence (or an empty one)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n0 = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        m_valid = offs_m < seqlen
        d_valid = offs_d < head_dim
        tok_m = (start + offs_m).to(tl.int64)

        q = tl.load(
            q_ptr + tok_m[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
            mask=m_valid[:, None] & d_valid[None, :],
            other=0.0,
        )
        if UPCAST_DOT:
            q = q.to(tl.float32)
        k_base = k_ptr + h * stride_kh + start.to(tl.int64) * stride_kt
        v_base = v_ptr + h * stride_vh + start.to(tl.int64) * stride_vt
        # Unused (and never dereferenced) without a bias; strides are 0 then.
        bias_base = bias_ptr + b.to(tl.int64) * stride_bb + h.to(tl.int64) * stride_bh

        m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        for n0 in range(0, seqlen, BLOCK_N):
            offs_n = n0 + offs_n0
            n_valid = offs_n < seqlen
            # K is read transposed, (BLOCK_D, BLOCK_N), straight into the dot's layout.
            k = tl.load(
                k_base + offs_n[None, :] * stride_kt + offs_d[:, None],
                mask=n_valid[None, :] & d_valid[:, None],
                other=0.0,
            )
            v = tl.load(
                v_base + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=n_valid[:, None] & d_valid[None, :],
                other=0.0,
            )
            if UPCAST_DOT:
                k = k.to(tl.float32)
            if IEEE:
                s = tl.dot(q, k, input_precision="ieee")
            else:
                s = tl.dot(q, k)
            s = s * qk_scale
            if HAS_BIAS:
                bias = tl.load(
                    bias_base + offs_m[:, None] * stride_bm + offs_n[None, :] * stride_bn,
                    mask=m_valid[:, None] & n_valid[None, :],
                    other=0.0,
                )
                s += bias.to(tl.float32) * 1.4426950408889634
            # Every block holds >= 1 valid key (n0 < seqlen), so the running max stays
            # finite and padded query rows (q = 0) never produce NaN.
            s = tl.where(n_valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            # P is rounded to V's dtype as flash-attention does, so the second matmul runs
            # on the tensor cores at the input precision.
            p = p.to(v.dtype)
            if UPCAST_DOT:
                p = p.to(tl.float32)
                v = v.to(tl.float32)
            acc = acc * alpha[:, None]
            if IEEE:
                acc = tl.dot(p, v, acc, input_precision="ieee")
            else:
                acc = tl.dot(p, v, acc)  # accumulates in place in the MMA
            m_i = m_new

        out = acc / l_i[:, None]
        tl.store(
            o_ptr + tok_m[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
            out.to(o_ptr.dtype.element_ty),
            mask=m_valid[:, None] & d_valid[None, :],
        )

    def _configs(block_d: int):
        """A few (BLOCK_M, BLOCK_N, warps, stages) candidates per padded head_dim.

        Kept to three so the first call compiles in seconds; the autotuner keys on the
        head dim, the max_seqlen bucket and the dtypes.
        """
        if block_d <= 64:
            shapes = [(128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2)]
        elif block_d <= 128:
            shapes = [(128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3)]
        else:
            shapes = [(64, 32, 4, 2), (64, 64, 8, 2), (32, 32, 4, 2)]
        return [
            triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in shapes
        ]

    _AUTOTUNED = {}

    # Timings cached on disk (next to the compiled kernels): a warm start then skips timing
    # every config again for each new key, which costs ~0.1 s per config per key.
    _CACHE_RESULTS = (
        {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    )

    def _autotuned_kernel(block_d: int):
        fn = _AUTOTUNED.get(block_d)
        if fn is None:
            fn = triton.autotune(
                configs=_configs(block_d), key=["SEQ_BUCKET", "BLOCK_D", "HAS_BIAS", "IEEE"], **_CACHE_RESULTS
            )(_varlen_attn_fwd_kernel)
            _AUTOTUNED[block_d] = fn
        return fn


def _check(q, k, v, cu_seqlens, max_seqlen, scale, bias, validate):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be (total_tokens, heads, head_dim), got shape {tuple(t.shape)}")
        check_float(name, t)
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v shapes must match, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v dtypes must match, got {q.dtype}, {k.dtype}, {v.dtype}")
    total, heads, head_dim = q.shape
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim={head_dim} not supported, expected 1 <= head_dim <= {MAX_HEAD_DIM}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"max_seqlen must be an int >= 0, got {max_seqlen!r}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise ValueError(f"scale must be a float or None, got {scale!r}")
    check_cu_seqlens(cu_seqlens, total, max_seqlen=max_seqlen, validate=validate)
    batch = cu_seqlens.numel() - 1
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise ValueError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        check_float("bias", bias)
        if bias.dim() == 3:
            lead_ok = bias.shape[0] == heads
        elif bias.dim() == 4:
            lead_ok = bias.shape[0] == batch and bias.shape[1] == heads
        else:
            lead_ok = False
        if not lead_ok or bias.shape[-2] < max_seqlen or bias.shape[-1] < max_seqlen:
            raise ValueError(
                f"bias must be (heads, >=max_seqlen, >=max_seqlen) or (B, heads, >=max_seqlen, "
                f">=max_seqlen) with heads={heads}, B={batch}, max_seqlen={max_seqlen}; "
                f"got shape {tuple(bias.shape)}"
            )
    check_same_device(q=q, k=k, v=v, cu_seqlens=cu_seqlens, bias=bias)


def varlen_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: Optional[float] = None,
    *,
    bias: Optional[torch.Tensor] = None,
    backend: str = "torch",
    validate: bool = True,
) -> torch.Tensor:
    """Plain-torch :func:`varlen_attention`: one explicit float32 softmax per sequence."""
    del backend
    _check(q, k, v, cu_seqlens, max_seqlen, scale, bias, validate)
    head_dim = q.shape[-1]
    scale = head_dim**-0.5 if scale is None else float(scale)
    out = torch.zeros_like(q, memory_format=torch.contiguous_format)
    bounds = cu_seqlens.tolist()
    for b in range(len(bounds) - 1):
        s, e = bounds[b], bounds[b + 1]
        if e == s:
            continue
        qs, ks, vs = (t[s:e].float().transpose(0, 1) for t in (q, k, v))  # (heads, L, d)
        scores = torch.matmul(qs, ks.transpose(1, 2)) * scale
        if bias is not None:
            seq_bias = bias if bias.dim() == 3 else bias[b]
            scores = scores + seq_bias[:, : e - s, : e - s].float()
        probs = torch.softmax(scores, dim=-1)
        out[s:e] = torch.matmul(probs, vs).transpose(0, 1).to(q.dtype)
    return out


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: Optional[float] = None,
    *,
    bias: Optional[torch.Tensor] = None,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Non-causal softmax attention within each packed sequence.

    Args:
        q, k, v: ``(total_tokens, heads, head_dim)``, float32/float16/bfloat16, one dtype,
            unit stride in head_dim; token and head strides are free, so views into a
            fused ``(total_tokens, 3, heads, head_dim)`` QKV tensor need no copy.
            Any ``head_dim <= 256`` (padded to a power of two inside the kernel).
        cu_seqlens: ``(B+1,)`` int32 sequence offsets; ``cu_seqlens[-1] == total_tokens``.
        max_seqlen: the longest sequence length (an upper bound is fine, only slower).
        scale: softmax scale, default ``head_dim ** -0.5``.
        bias: optional additive score bias (MPNet's relative position bias), indexed by
            ``[head, query_pos_in_seq, key_pos_in_seq]``: ``(heads, Lb, Lb)`` shared by
            all sequences, or ``(B, heads, Lb, Lb)``; ``Lb >= max_seqlen``; any strides.
        backend: ``"auto"`` (Triton on CUDA, torch on CPU), ``"triton"`` or ``"torch"``.
        validate: read ``cu_seqlens`` back to check its values (a host sync on CUDA).

    Returns:
        Contiguous ``(total_tokens, heads, head_dim)`` in ``q.dtype``; softmax and
        accumulation in float32.
    """
    if resolve_backend(backend, q, k, v, cu_seqlens, bias) == "torch":
        return varlen_attention_ref(
            q, k, v, cu_seqlens, max_seqlen, scale, bias=bias, validate=validate
        )
    _check(q, k, v, cu_seqlens, max_seqlen, scale, bias, validate)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must have unit stride in head_dim, got strides {t.stride()}")
    total, heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    out = torch.empty((total, heads, head_dim), dtype=q.dtype, device=q.device)
    if total == 0 or batch == 0 or heads == 0 or max_seqlen == 0:
        return out
    scale = head_dim**-0.5 if scale is None else float(scale)
    block_d = max(16, next_pow2(head_dim))  # tl.dot needs K >= 16
    interpret = not q.is_cuda
    # Triton 3.9's interpreter computes bf16 tl.dot wrongly; upcasting there keeps the
    # rest of the bf16 path (loads, P rounding, stores) under test.
    upcast = interpret and q.dtype == torch.bfloat16
    ieee = q.dtype == torch.float32 or upcast
    if bias is not None:
        if bias.dim() == 3:
            sbb, (sbh, sbm, sbn) = 0, bias.stride()
        else:
            sbb, sbh, sbm, sbn = bias.stride()
        bias_arg = bias
    else:
        sbb = sbh = sbm = sbn = 0
        bias_arg = q  # never read: HAS_BIAS prunes the loads
    args = (
        q, k, v, out, cu_seqlens, bias_arg,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        sbb, sbh, sbm, sbn,
        heads, head_dim, max_seqlen, scale * _LOG2E,
        min(next_pow2(max_seqlen), 1024),
    )
    meta = dict(HAS_BIAS=bias is not None, IEEE=ieee, UPCAST_DOT=upcast, BLOCK_D=block_d)

    def grid(cfg):
        return (triton.cdiv(max_seqlen, cfg["BLOCK_M"]) * batch * heads,)

    if interpret:
        # Autotuning would time every config through the interpreter; one is enough.
        _varlen_attn_fwd_kernel[grid(dict(BLOCK_M=64))](*args, **meta, BLOCK_M=64, BLOCK_N=64)
    else:
        _autotuned_kernel(block_d)[grid](*args, **meta)
    return out
