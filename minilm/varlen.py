"""The packed (varlen) batch layout and its helpers, in flash-attention's vocabulary.

A batch of B sequences is one ``(total_tokens, ...)`` tensor holding only real tokens, laid
end to end, plus ``cu_seqlens`` (int32, ``(B + 1,)``, cumulative lengths from 0) and
``max_seqlen``. Everything here builds, moves or reshapes that layout; nothing here knows
about models.

Batches are length-sorted, so consecutive sequences of equal length form *runs*: a run of
``g`` sequences of length ``n`` is a dense ``(g, n, ...)`` view of the token layout, which
lets CPU attention and pooling work without padding, masks or scatters (see
:func:`length_runs` and :func:`run_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor


@dataclass
class VarlenBatch:
    """A batch of sequences laid end to end.

    input_ids:      (total_tokens,) int64
    cu_seqlens:     (batch + 1,) int32, cumulative sequence lengths starting at 0
    max_seqlen:     length of the longest sequence
    position_ids:   (total_tokens,) int64
    token_type_ids: (total_tokens,) int64, or None for models without token types
    attn_bias:      (heads, max_seqlen, max_seqlen) float, added to every sequence's attention
                    scores (MPNet's relative position bias), or None; set by the Encoder
    """

    input_ids: Tensor
    cu_seqlens: Tensor
    max_seqlen: int
    position_ids: Tensor
    token_type_ids: Optional[Tensor] = None
    attn_bias: Optional[Tensor] = None
    _pad_index: Optional[Tensor] = None
    _key_mask: Optional[Tensor] = None
    _runs: Optional[list] = None

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def total_tokens(self) -> int:
        return self.input_ids.numel()

    def seqlens(self) -> Tensor:
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    def pad_index(self) -> Tensor:
        """(total_tokens,) int64: row of each token in the padded ``(batch * max_seqlen)`` layout."""
        if self._pad_index is None:
            seqlens = self.seqlens()
            # output_size: without it repeat_interleave reads the lengths back (a host sync).
            T = self.total_tokens
            starts = torch.repeat_interleave(self.cu_seqlens[:-1].long(), seqlens, output_size=T)
            seq_ids = torch.repeat_interleave(torch.arange(self.batch_size, device=seqlens.device), seqlens,
                                              output_size=T)
            pos = torch.arange(self.total_tokens, device=seqlens.device) - starts
            self._pad_index = seq_ids * self.max_seqlen + pos
        return self._pad_index

    def length_runs(self) -> list[tuple[int, int, int]]:
        """See :func:`length_runs`; cached per batch."""
        if self._runs is None:
            self._runs = length_runs(self.seqlens().tolist())
        return self._runs

    def key_mask(self) -> Tensor:
        """(batch, 1, 1, max_seqlen) bool: True where a key is a real token."""
        if self._key_mask is None:
            ar = torch.arange(self.max_seqlen, device=self.cu_seqlens.device)
            self._key_mask = (ar[None, :] < self.seqlens()[:, None]).view(self.batch_size, 1, 1, self.max_seqlen)
        return self._key_mask


def length_runs(seqlens: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive sequences of equal length, as
    ``(first_token, num_sequences, length)``. In a length-sorted batch each run is a dense
    ``(num_sequences, length)`` block of the token layout, so attention over it needs no
    padding and no mask, and per-sequence reductions need no scatter."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for n in seqlens:
        if runs and runs[-1][2] == n:
            t0, g, _ = runs[-1]
            runs[-1] = (t0, g + 1, n)
        else:
            runs.append((start, 1, n))
        start += n
    return runs


def run_blocks(x: Tensor, runs: list[tuple[int, int, int]]) -> Iterator[tuple[int, int, Tensor]]:
    """``(first_token, first_sequence, block)`` per run, ``block`` being the
    ``(num_sequences, length, *x.shape[1:])`` view of ``x`` (total_tokens, ...) that holds it."""
    b = 0
    for t0, g, n in runs:
        yield t0, b, x[t0:t0 + g * n].view(g, n, *x.shape[1:])
        b += g


def cu_seqlens_from(lengths: Tensor) -> Tensor:
    """(B,) lengths -> (B + 1,) int32 cumulative lengths starting at 0."""
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    torch.cumsum(lengths, 0, out=cu[1:])
    return cu


def make_varlen_batch(sequences: list[list[int]], position_offset: int = 0,
                      type_ids: list[list[int]] | None = None, with_token_types: bool = True) -> VarlenBatch:
    """Build a :class:`VarlenBatch` on CPU from token-id lists; position ids count from
    ``position_offset`` in every sequence."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int32)
    cu = cu_seqlens_from(lengths)
    input_ids = torch.tensor([t for s in sequences for t in s], dtype=torch.int64)
    starts = torch.repeat_interleave(cu[:-1].long(), lengths.long())  # (total_tokens,) first token of each token's sequence
    positions = torch.arange(input_ids.numel()) - starts + position_offset
    token_types = None
    if with_token_types:
        if type_ids is None:
            token_types = torch.zeros_like(input_ids)
        else:
            token_types = torch.tensor([t for s in type_ids for t in s], dtype=torch.int64)
    return VarlenBatch(input_ids, cu, int(lengths.max()) if len(sequences) else 0, positions, token_types)


def batch_to(batch: VarlenBatch, device: torch.device, pin: bool) -> VarlenBatch:
    """Move a batch's integer tensors to ``device`` in one copy.

    Pinned and asynchronous on CUDA: a copy from pageable memory waits for the GPU to drain,
    so the CPU could not prepare the next batch while the GPU works on this one.
    """
    T = batch.total_tokens
    packed = torch.cat([batch.input_ids, batch.position_ids, batch.cu_seqlens.long()])  # (2 * T + B + 1,) int64
    if pin:
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=pin)
    return VarlenBatch(packed[:T], packed[2 * T:].int(), batch.max_seqlen, packed[T:2 * T], None)


def pad_input(x: Tensor, batch: VarlenBatch) -> Tensor:
    """(total_tokens, ...) -> (batch, max_seqlen, ...), zeros after each sequence's end."""
    B, L = batch.batch_size, batch.max_seqlen
    padded = x.new_zeros(B * L, *x.shape[1:])
    padded.index_copy_(0, batch.pad_index(), x)
    return padded.view(B, L, *x.shape[1:])


def unpad_input(padded: Tensor, batch: VarlenBatch) -> Tensor:
    """(batch, max_seqlen, ...) -> (total_tokens, ...): the real tokens only, in order."""
    return padded.reshape(-1, *padded.shape[2:]).index_select(0, batch.pad_index())
