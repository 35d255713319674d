"""A hand-written BERT-family encoder over unpadded (varlen) batches.

Every per-token op (embeddings, the fused QKV projection, the MLP, LayerNorm) runs on a
``(total_tokens, hidden)`` tensor holding only real tokens. Attention is the only op that
needs sequence boundaries; it gets them from ``cu_seqlens`` (int32, ``(batch + 1,)``), as in
flash-attention's varlen interface.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MPNET_NUM_BUCKETS, EncoderConfig
from .linear import Linear
from .varlen import VarlenBatch, pad_input, run_blocks, unpad_input

logger = logging.getLogger(__name__)


def _embedding(num: int, dim: int) -> nn.Embedding:
    # Every weight is overwritten by the checkpoint, so skip the random init. It also matters
    # for load time: normal_ on the meta device imports torch._dynamo (seconds).
    return nn.Embedding(num, dim, _weight=torch.empty(num, dim))


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = _embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = _embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = _embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, batch: VarlenBatch) -> Tensor:
        x = self.word(batch.input_ids) + self.position(batch.position_ids)  # (total_tokens, hidden)
        if self.token_type is not None:
            if batch.token_type_ids is None:
                # Single-segment input: every token has type 0; a broadcast row saves a gather.
                x = x + self.token_type.weight[0]
            else:
                x = x + self.token_type(batch.token_type_ids)
        return self.norm(x)


# The attention paths, one per backend; the engine picks the backend once per device and
# dtype (see minilm.engine.choose_backend) and passes it down explicitly.
BACKENDS = ("sdpa_runs", "math_runs", "sdpa_padded", "triton")
# (q, k, v, attn_mask=None, scale=None) -> output, each (g, heads, n, head_dim): SDPA's signature.
AttentionFn = Callable[..., Tensor]


class Attention(nn.Module):
    """Multi-head self-attention within each sequence of a varlen batch."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        # One (3 * hidden, hidden) matmul instead of three: fewer, larger GEMMs.
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor, batch: VarlenBatch, backend: str) -> Tensor:
        T, H = x.shape
        qkv = self.qkv(x).view(T, 3, self.num_heads, self.head_dim)  # (total_tokens, 3, heads, head_dim)
        if backend == "triton":
            from .kernels.attention import varlen_attention

            q, k, v = qkv.unbind(1)  # strided views, no copy
            # validate=False: checking cu_seqlens' values would sync the GPU every layer.
            o = varlen_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, bias=batch.attn_bias,
                                 backend="triton", validate=False)
        elif backend == "sdpa_runs":
            o = attention_per_run(qkv, batch, bias=batch.attn_bias)
        elif backend == "math_runs":
            o = attention_per_run(qkv, batch, bias=batch.attn_bias, pick=fastest_cpu_attention)
        else:
            o = padded_sdpa(qkv, batch, bias=batch.attn_bias)
        return self.out(o.reshape(T, H))


def attention_per_run(qkv: Tensor, batch: VarlenBatch, bias: Optional[Tensor] = None,
                      pick: Optional[Callable[[int, torch.dtype], AttentionFn]] = None,
                      scale: Optional[float] = None) -> Tensor:
    """Attention one call per run of equal-length sequences (the CPU path).

    qkv: (total_tokens, 3, heads, head_dim) -> (total_tokens, heads, head_dim)
    bias: optional (heads, >= max_seqlen, >= max_seqlen) additive score bias (MPNet)
    pick: (run length, dtype) -> the attention function for that run (default: SDPA for all;
        :func:`fastest_cpu_attention` is the measured choice)
    scale: the score scale, default 1/sqrt(head_dim); 1.0 where it is folded into q already

    Each run is a view of the token layout, so no FLOP is spent on padding. A sequence's
    result depends only on its own tokens, never on which other sequences share the batch or
    how long they are: this is what makes CPU embeddings batch-invariant. (``pick`` sees only
    the sequence's own length, so it keeps that true.)
    """
    T, _, nh, hd = qkv.shape
    runs = batch.length_runs()
    out = None if len(runs) == 1 else qkv.new_empty(T, nh, hd)
    for t0, _, block in run_blocks(qkv, runs):  # block: (g, n, 3, heads, head_dim)
        g, n = block.shape[:2]
        if n == 0:
            continue
        q, k, v = block.permute(2, 0, 3, 1, 4)  # each (g, heads, n, head_dim)
        mask = None if bias is None else bias[:, :n, :n]
        attend = F.scaled_dot_product_attention if pick is None else pick(n, qkv.dtype)
        o = attend(q, k, v, attn_mask=mask, scale=scale).transpose(1, 2)  # (g, n, heads, head_dim)
        if out is None:
            return o.reshape(T, nh, hd)  # a single run: no copy when the output is (g, n)-major
        out[t0:t0 + g * n].view(g, n, nh, hd).copy_(o)
    return out if out is not None else qkv.new_empty(T, nh, hd)


def fastest_cpu_attention(n: int, dtype: torch.dtype) -> AttentionFn:
    """The faster CPU attention for a run of ``n``-token sequences of ``dtype``: head size 32,
    2 threads, Zen 4, 2,048 tokens a call, ``benchmarks/bench_cpu_attention.py`` (RESULTS.md,
    "CPU attention kernels").

    float32: :func:`math_attention` up to 160 tokens (16 tokens 1.3 ms against SDPA's 4.2, 128
    tokens 4.5 against 4.9), SDPA above (192 tokens: even; 256: 7.0 against 7.3): SDPA's flash
    kernel is blocked for long sequences. bfloat16: :func:`math_attention` at every length (16
    tokens 1.1 against 2.8 ms, 256 tokens 6.3 against 7.2): its bf16 matmuls run at about twice
    float32's rate, where SDPA's bf16 kernel is no faster than its float32 one.
    """
    if dtype == torch.bfloat16 or n <= CPU_MATH_ATTENTION_UPTO:
        return math_attention
    return F.scaled_dot_product_attention


CPU_MATH_ATTENTION_UPTO = 160
# math_attention materializes scores for as many sequences at a time as fit in about this
# many bytes: whole, a run of 16 x 256-token sequences has 50 MB of float32 scores, and the
# softmax over them ran at memory speed (20 ms, longer than both bf16 matmuls together).
SCORE_BLOCK_BYTES = 1 << 21
# The AVX-512 vector width of torch's bf16 softmax kernel (see _math_block).
_BF16_SOFTMAX_LANES = 32


def math_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None,
                   scale: Optional[float] = None) -> Tensor:
    """softmax(q k^T * scale + mask) v as plain matmuls, a few sequences at a time.

    q, k, v: (g, heads, n, head_dim) -> (g, heads, n, head_dim); scale defaults to 1/sqrt(head_dim)
    attn_mask: optional float mask broadcastable to (heads, n, n), the same for every sequence
    """
    g, h, n, _ = q.shape
    per = max(1, SCORE_BLOCK_BYTES // (h * n * n * q.element_size()))
    if per >= g:
        return _math_block(q, k, v, attn_mask, scale)
    out = q.new_empty(q.shape)
    for i in range(0, g, per):
        _math_block(q[i:i + per], k[i:i + per], v[i:i + per], attn_mask, scale, out=out[i:i + per])
    return out


def _math_block(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor], scale: Optional[float],
                out: Optional[Tensor] = None) -> Tensor:
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if scale != 1.0:
        q = q * scale
    scores = torch.matmul(q, k.transpose(-1, -2))  # (g, heads, n, n)
    n = scores.shape[-1]
    if n % _BF16_SOFTMAX_LANES and scores.dtype in (torch.bfloat16, torch.float16):
        # torch.softmax's bf16 CPU kernel is fast only on rows of whole 32-lane vectors; on
        # others the casts and a float32 softmax cost less. Whole attention, 2,048 tokens, 2
        # threads, Zen 4: n = 56 2.2 against 3.4 ms, n = 250 6.0 against 7.0 ms; at n = 128
        # and 256 the bf16 softmax stays ahead (3.4 against 3.6, 5.9 against 6.3 ms).
        scores = scores.float()
    if attn_mask is not None:
        scores.add_(attn_mask)  # in place: bf16 scores stay bf16 under a float32 mask
    if n < 16:
        # torch.softmax's CPU kernel takes a slow path for rows shorter than 16: 3.4-3.9 ms
        # against 0.7-0.9 ms for these three ops on 4,096-token batches (2 threads, Zen 4).
        p = (scores - scores.amax(-1, keepdim=True)).exp_()
        p = p.div_(p.sum(-1, keepdim=True))
    else:
        p = torch.softmax(scores, dim=-1)
    return torch.matmul(p.to(v.dtype), v, out=out)


def padded_sdpa(qkv: Tensor, batch: VarlenBatch, bias: Optional[Tensor] = None) -> Tensor:
    """Attention through PyTorch's SDPA on a padded view of the batch.

    qkv: (total_tokens, 3, heads, head_dim) -> (total_tokens, heads, head_dim)
    bias: optional (heads, max_seqlen, max_seqlen) float added to the scores of every sequence
    """
    T, _, nh, hd = qkv.shape
    B, L = batch.batch_size, batch.max_seqlen
    if B * L == T:
        # Every sequence is full length (no sequence exceeds L, so only then do they fill
        # B * L): the padded layout is a plain view, no mask needed. Decided from host ints;
        # reading the lengths would sync the GPU.
        q, k, v = qkv.view(B, L, 3, nh, hd).permute(2, 0, 3, 1, 4)  # each (B, heads, L, head_dim)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return o.transpose(1, 2).reshape(T, nh, hd)
    q, k, v = pad_input(qkv, batch).permute(2, 0, 3, 1, 4)  # each (B, heads, L, head_dim)
    mask = batch.key_mask() if bias is None else _masked_bias(bias, batch.key_mask())
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return unpad_input(o.transpose(1, 2), batch)  # (total_tokens, heads, head_dim)


def _masked_bias(bias: Tensor, key_mask: Tensor) -> Tensor:
    """(heads, L, L) bias + (B, 1, 1, L) key mask -> (B, heads, L, L) additive float mask."""
    return bias.unsqueeze(0).masked_fill(~key_mask, float("-inf"))


def relative_position_bucket(relative_position: Tensor, num_buckets: int = MPNET_NUM_BUCKETS,
                             max_distance: int = 128) -> Tensor:
    """T5-style bidirectional buckets, as MPNet computes them: half the buckets per direction,
    exact below ``num_buckets // 4``, logarithmic up to ``max_distance``, clamped beyond.

    relative_position: key position - query position, int64 -> bucket ids, int64
    """
    n = -relative_position
    half = num_buckets // 2
    ret = (n < 0).long() * half
    n = n.abs()
    max_exact = half // 2
    # Same float32 ops in the same order as transformers, so boundary distances (16, 32, 64)
    # land in the same bucket. n == 0 gives log(0) = -inf, discarded by the where().
    large = max_exact + (
        torch.log(n.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).long()
    large = large.clamp(max=half - 1)
    return ret + torch.where(n < max_exact, n, large)


class RelativePositionBias(nn.Module):
    """MPNet's learned relative position bias: one table shared by all layers, indexed by the
    bucket of (key - query) with positions counted 0..L-1 inside each sequence."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.table = _embedding(cfg.relative_attention_num_buckets, cfg.num_attention_heads)
        self._buckets: Optional[Tensor] = None  # (n, n) int64 cache; depends only on key - query

    def buckets(self, L: int, device: torch.device) -> Tensor:
        b = self._buckets
        if b is None or b.shape[0] < L or b.device != device:
            # Computed on the CPU so the float32 log is the same as transformers' CPU reference
            # on every device; a few hundred KiB, rebuilt only when a longer batch arrives.
            n = max(L, 128)
            pos = torch.arange(n)
            b = relative_position_bucket(pos[None, :] - pos[:, None]).to(device)  # (n, n)
            self._buckets = b
        return b[:L, :L]

    def forward(self, L: int) -> Tensor:
        """-> (heads, L, L) bias in the table's dtype."""
        return self.table(self.buckets(L, self.table.weight.device)).permute(2, 0, 1).contiguous()


class MLP(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = cfg.hidden_act  # an ACTIVATIONS name (EncoderConfig checks it)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.up(x, activation=self.act))  # (total_tokens, hidden)


class Layer(nn.Module):
    """One post-LayerNorm transformer layer (BERT order: sublayer, add, norm)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    @staticmethod
    def _add_norm(x: Tensor, residual: Tensor, norm: nn.LayerNorm, backend: str) -> Tensor:
        if backend == "triton":
            from .kernels.layernorm import add_layer_norm

            return add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, backend="triton")
        return norm(x + residual)

    def forward(self, x: Tensor, batch: VarlenBatch, backend: str) -> Tensor:
        x = self._add_norm(self.attn(x, batch, backend), x, self.attn_norm, backend)  # (total_tokens, hidden)
        return self._add_norm(self.mlp(x), x, self.mlp_norm, backend)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.position_bias = RelativePositionBias(cfg) if cfg.relative_attention_num_buckets else None

    def forward(self, batch: VarlenBatch, backend: str = "sdpa_runs") -> Tensor:
        """batch -> last hidden state, (total_tokens, hidden). ``backend`` is one of
        :data:`BACKENDS`: the attention and residual+LayerNorm path."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if self.position_bias is not None:
            batch = replace(batch, attn_bias=self.position_bias(batch.max_seqlen))
        x = self.embeddings(batch)
        for layer in self.layers:
            x = layer(x, batch, backend)
        return x
