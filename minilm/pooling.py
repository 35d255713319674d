"""Sentence-transformers' pooling modes over the unpadded layout.

``hidden`` is ``(total_tokens, H)`` and ``cu_seqlens`` ``(B + 1,)``; each mode gives ``(B, H)``
and several modes are concatenated in sentence-transformers' fixed order.
Semantics follow sentence-transformers' padded implementation exactly, including its edge
cases: with ``include_prompt=False`` the first ``prompt_length`` tokens are masked out, a
sequence left with no tokens pools to zeros (mean) and its CLS falls back to position 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .varlen import length_runs, run_blocks

# The order legacy ``pooling_mode_*`` flags are concatenated in; a 6.x ``pooling_mode`` list
# is concatenated in the order it is written.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def modes_from_config(cfg: dict) -> tuple[tuple[str, ...], bool]:
    """(modes, include_prompt) from a ``1_Pooling/config.json`` of any sentence-transformers version."""
    if "pooling_mode" in cfg and not isinstance(cfg["pooling_mode"], bool):
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if cfg.get(key, False))
        if not modes:
            modes = ("mean",)
    for m in modes:
        if m not in POOLING_MODES:
            raise ValueError(f"Unknown pooling mode {m!r} in Pooling config; supported: {POOLING_MODES}")
    return modes, bool(cfg.get("include_prompt", True))


def _segment_sum(x: Tensor, seqlens: list[int], acc: torch.dtype, skip: int = 0,
                 weights: Tensor | None = None) -> Tensor:
    """Per-sequence sums of ``x`` (total_tokens, W) over tokens ``skip..n-1`` -> (B, W) in ``acc``.

    Sequences of equal length are summed as one dense ``(g, n, W)`` block: no scatter, and a
    sequence's sum never depends on its neighbours (batch invariance). ``weights`` (n_max,)
    multiplies token ``i`` of every sequence by ``weights[i]``.
    """
    out = x.new_zeros(len(seqlens), x.shape[1], dtype=acc)
    for _, b, block in run_blocks(x, length_runs(seqlens)):  # block: (g, n, W)
        g, n = block.shape[:2]
        if n > skip:
            block = block[:, skip:].to(acc)  # (g, n - skip, W)
            if weights is not None:
                block = block * weights[skip:n, None]
            out[b:b + g] = block.sum(1)
    return out


def pool(hidden: Tensor, cu_seqlens: Tensor, modes: Sequence[str], prompt_length: int = 0,
         backend: str = "torch", seqlens: Sequence[int] | None = None) -> Tensor:
    """hidden (total_tokens, H), cu_seqlens (B + 1,) -> (B, len(modes) * H).

    ``seqlens``: the sequence lengths as host ints, when the caller has them; otherwise they
    are read back from ``cu_seqlens`` (a host sync on CUDA).

    Outputs are concatenated in the order of ``modes``.
    Float16/bfloat16 inputs are accumulated in float32 for the mean variants, as
    sentence-transformers does, and cast back. ``backend="triton"`` runs plain mean pooling
    (the common case) as one Triton kernel; every other case takes the PyTorch path.
    """
    if backend == "triton" and tuple(modes) == ("mean",):
        from .kernels.pooling import varlen_mean_pool

        return varlen_mean_pool(hidden, cu_seqlens, skip_first=prompt_length, backend="triton", validate=False)
    T, H = hidden.shape
    B = cu_seqlens.numel() - 1
    device = hidden.device
    cu = cu_seqlens.long()
    seqlens_t = cu[1:] - cu[:-1]  # (B,)
    seqlens = list(seqlens) if seqlens is not None else seqlens_t.tolist()
    counts = (seqlens_t - prompt_length).clamp(min=0) if prompt_length else seqlens_t

    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    out = []
    mean_sum = None
    for mode in modes:
        if mode == "cls":
            first = cu[:-1] + torch.where(counts > 0, prompt_length, 0) if prompt_length else cu[:-1]
            out.append(hidden[first.clamp(max=max(T - 1, 0))] if T else hidden.new_zeros(B, H))
        elif mode == "lasttoken":
            last = (cu[1:] - 1).clamp(min=0)
            v = hidden[last] if T else hidden.new_zeros(B, H)
            # A sequence whose every token is masked pools to zeros, like sentence-transformers'.
            out.append(torch.where((counts > 0)[:, None], v, torch.zeros_like(v)))
        elif mode == "max":
            m = torch.full((B, H), float("-inf"), device=device, dtype=hidden.dtype)
            for _, b, block in run_blocks(hidden, length_runs(seqlens)):  # block: (g, n, H)
                if block.shape[1] > prompt_length:
                    m[b:b + block.shape[0]] = block[:, prompt_length:].amax(1)
            out.append(m)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mean_sum = _segment_sum(hidden, seqlens, acc, prompt_length)
            denom = counts.to(acc).clamp(min=1e-9)[:, None]
            if mode == "mean_sqrt_len_tokens":
                denom = denom.sqrt()
            out.append((mean_sum / denom).to(hidden.dtype))
        elif mode == "weightedmean":
            n_max = max(seqlens, default=0)
            w = torch.arange(1, n_max + 1, device=device, dtype=acc)  # weight = 1-based position
            num = _segment_sum(hidden, seqlens, acc, prompt_length, weights=w)
            den = _segment_sum(torch.ones(T, 1, device=device, dtype=acc), seqlens, acc, prompt_length, weights=w)
            out.append((num / den.clamp(min=1e-9)).to(hidden.dtype))
        else:
            raise ValueError(f"Unknown pooling mode {mode!r}")
    return torch.cat(out, dim=-1)
