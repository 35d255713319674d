"""The CUDA strategy's moving parts: token-budget batches, packed host assembly, shape
buckets with CUDA graphs, and device-to-host copies that overlap the next chunk's work.

On short text the GPU finishes a batch's kernels faster than the host can issue them, so
this module removes host work and host waits from the loop rather than touching kernels:

* :func:`plan_token_budget` cuts length-sorted texts into batches by *real* tokens (the
  layout is unpadded). On CUDA minilm picks its own batch: ``batch_size`` is only a lower
  bound on texts per batch. On CPU ``batch_size`` stays an upper bound (the engine's CPU
  strategy keeps :meth:`minilm.engine.Engine.plan_batches`). Embeddings do not depend on
  the batch, so this changes speed, not results.
* :class:`BatchAssembler` builds a batch's ``input_ids``, ``position_ids``, ``cu_seqlens``
  and output rows with a few numpy operations, into one reusable (pinned on CUDA) int32
  buffer, so a batch reaches the GPU in one asynchronous copy.
* :class:`ShapeBuckets` rounds (tokens, sequences, max_seqlen) up to a few shapes; the
  padding is only at the tail (filler sequences of at most ``max_seqlen`` tokens for the
  extra tokens, zero-length sequences for the extra slots), so real rows are computed
  exactly as without padding.
* :class:`CudaGraphRunner` captures a forward once per bucket and replays it; without CUDA,
  for one-off shapes, or if capture fails, it runs the forward eagerly.
* :class:`HostCopy` starts a device-to-host copy into pinned memory and waits for it only
  when the result is needed.
* :class:`CudaPipeline` composes them for sentence embeddings (:func:`sentence_forward`):
  ``embed_chunk`` (ids -> a copy in flight), ``embed_chunks``/``encode_ids`` (chunk k-1's
  copy waited on after chunk k is queued), ``encode_texts`` (plus :func:`prefetched`
  tokenization of chunk k+1 on a worker thread). Keep one per (model, output options) so
  its graphs survive across ``encode`` calls.

The forward on this path issues no host sync: every size it needs (``max_seqlen``, the
number of real rows) comes from the host-side lengths, never from a device tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections import deque
from itertools import accumulate, chain
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .varlen import VarlenBatch

logger = logging.getLogger(__name__)

# Real tokens per forward pass on CUDA. On an H100, batch 2048 of ~16-token sentences
# (~32k tokens) was the fastest measured end to end (issue 11), and at that size one
# MiniLM-L6 forward is ~0.7 TFLOP: long enough that launches no longer dominate, small
# enough that activations stay well under 1 GB in float16.
DEFAULT_TOKEN_BUDGET = 32768


# ------------------------------------------------------------------------- planning
def plan_token_budget(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Indices sorted by decreasing length, cut into batches of at most ``max_tokens`` real
    tokens and at least ``batch_size`` texts (the last batch may be smaller; a single text
    longer than the budget still gets a batch of its own).

    Sorting keeps each batch's lengths close, so ``max_seqlen`` (attention's grid) is tight.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"batch_size and max_tokens must be >= 1, got {batch_size}, {max_tokens}")
    n = lengths.size
    if n == 0:
        return []
    order = np.argsort(-lengths, kind="stable")
    cum = np.concatenate(([0], np.cumsum(lengths[order])))  # cum[i]: tokens before sorted text i
    cuts = [0]
    # One iteration per batch, not per text: the number of batches is tokens / budget.
    while cuts[-1] < n:
        s = cuts[-1]
        by_tokens = int(np.searchsorted(cum, cum[s] + max_tokens, side="right")) - 1
        cuts.append(min(n, max(by_tokens, s + batch_size, s + 1)))
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


# -------------------------------------------------------------------------- buckets
def round_up(n: int, steps_per_octave: int = 4) -> int:
    """Smallest value >= n on a grid of ``steps_per_octave`` steps per power of two
    (4 steps: ..., 16, 20, 24, 28, 32, 40, ...): at most 1.25x padding, few distinct shapes."""
    n = int(n)
    if n <= 2 * steps_per_octave:
        return max(n, 0)
    hi = 1 << (n - 1).bit_length()
    step = max(1, hi // (2 * steps_per_octave))
    return -(-n // step) * step


@dataclass(frozen=True)
class Bucket:
    """A padded batch shape: ``tokens`` rows, ``seqs`` sequences, attention's ``max_seqlen``."""

    tokens: int
    seqs: int
    max_seqlen: int


class ShapeBuckets:
    """Rounds a batch's (total tokens, sequences, longest sequence) up to a bucket.

    ``max_seqlen`` goes to a power of two (the attention kernel's autotune key is
    ``next_pow2(max_seqlen)``, so a padded batch runs the same kernel config as the unpadded
    one), capped at ``max_seqlen_cap``. Tokens and sequences go to ``steps_per_octave``
    steps per octave. The extra tokens form filler sequences of at most ``max_seqlen``
    tokens each (so no filler is longer than a real sequence could be), and they need
    sequence slots of their own.
    """

    def __init__(self, steps_per_octave: int = 4, min_tokens: int = 64, min_seqs: int = 8,
                 max_seqlen_cap: Optional[int] = None):
        self.steps = steps_per_octave
        self.min_tokens = min_tokens
        self.min_seqs = min_seqs
        self.max_seqlen_cap = max_seqlen_cap

    def bucket(self, total_tokens: int, num_seqs: int, max_seqlen: int) -> Bucket:
        L = 1 << max(0, (int(max_seqlen) - 1).bit_length())
        if self.max_seqlen_cap is not None:
            L = max(min(L, self.max_seqlen_cap), max_seqlen)
        T = round_up(max(total_tokens, self.min_tokens), self.steps)
        fillers = -(-(T - total_tokens) // L) if L else 0
        B = round_up(max(num_seqs + fillers, self.min_seqs), self.steps)
        return Bucket(T, B, L)


# ------------------------------------------------------------------------- assembly
@dataclass
class HostBatch:
    """One assembled batch on the host.

    ``packed`` (int32, pinned on CUDA) holds ``[input_ids (T) | position_ids (T) |
    cu_seqlens (S + 1) | rows (S)]`` for the padded shape (T = ``shape.tokens``, S =
    ``shape.seqs``); ``rows`` are the texts' positions in the chunk's output (only the first
    ``num_seqs`` are meaningful). ``num_seqs``/``num_tokens`` count the real ones.
    """

    packed: Tensor
    shape: Bucket
    num_seqs: int
    num_tokens: int
    lengths: np.ndarray
    slot: int = -1  # the assembler's ring slot holding ``packed``


def batch_from_packed(packed: Tensor, shape: Bucket) -> tuple[VarlenBatch, Tensor]:
    """Views of a packed int32 buffer (see :class:`HostBatch`) -> (VarlenBatch, rows)."""
    T, S = shape.tokens, shape.seqs
    batch = VarlenBatch(input_ids=packed[:T], cu_seqlens=packed[2 * T:2 * T + S + 1],
                        max_seqlen=shape.max_seqlen, position_ids=packed[T:2 * T])
    return batch, packed[2 * T + S + 1:2 * T + 2 * S + 1]


def packed_size(shape: Bucket) -> int:
    return 2 * shape.tokens + 2 * shape.seqs + 1


def assemble(ids: Sequence[Sequence[int]], order: np.ndarray, position_offset: int,
             shape: Optional[Bucket] = None, out: Optional[np.ndarray] = None,
             lengths: Optional[np.ndarray] = None) -> tuple[np.ndarray, Bucket, np.ndarray]:
    """Pack texts ``ids[i] for i in order`` into one int32 array (layout of :class:`HostBatch`).

    ``shape`` pads to a bucket (tail only: filler sequences of at most ``shape.max_seqlen``
    tokens, id 0, every position at ``position_offset``, then zero-length sequences); None
    packs exactly. ``out`` is filled in place when given (it must be large enough).
    ``lengths``: every text's length (``len(ids[i])`` for all i), when the caller has them.
    Returns (packed view, shape, the batch's lengths).
    """
    seqs = [ids[i] for i in order]
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs)) if lengths is None \
        else np.asarray(lengths, dtype=np.int64)[order]
    B = len(seqs)
    T = int(lengths.sum())
    L = int(lengths.max()) if B else 0
    if shape is None:
        shape = Bucket(T, B, L)
    elif shape.tokens < T or shape.max_seqlen < L or \
            shape.seqs < B + (-(-(shape.tokens - T) // shape.max_seqlen) if shape.max_seqlen else 0):
        raise ValueError(f"batch of {T} tokens, {B} texts, longest {L} does not fit bucket {shape}")
    Tb, Sb = shape.tokens, shape.seqs
    n = packed_size(shape)
    buf = np.empty(n, dtype=np.int32) if out is None else out[:n]
    input_ids, positions = buf[:Tb], buf[Tb:2 * Tb]
    cu, rows = buf[2 * Tb:2 * Tb + Sb + 1], buf[2 * Tb + Sb + 1:]
    # fromiter over the chained lists is the fastest way from Python ints to an array.
    input_ids[:T] = np.fromiter(chain.from_iterable(seqs), dtype=np.int32, count=T)
    input_ids[T:] = 0
    cu[0] = 0
    cu[1:B + 1] = np.cumsum(lengths)
    positions[:T] = np.arange(position_offset, T + position_offset, dtype=np.int32) - np.repeat(cu[:B], lengths)
    positions[T:] = position_offset
    pad = Tb - T
    if pad:
        nf = -(-pad // shape.max_seqlen)
        cu[B + 1:B + 1 + nf] = np.minimum(T + shape.max_seqlen * np.arange(1, nf + 1), Tb)
        cu[B + 1 + nf:] = Tb
    else:
        cu[B + 1:] = T
    rows[:B] = order
    rows[B:] = 0
    return buf, shape, lengths


class BatchAssembler:
    """:func:`assemble` into a small ring of reusable host buffers, pinned when CUDA exists.

    A slot is reused only after the copy that last read it has finished (an event per slot),
    so the host can assemble batch k+1 while batch k's copy is in flight.
    """

    def __init__(self, slots: int = 3):
        self.pin = torch.cuda.is_available()
        self._bufs: list[Optional[Tensor]] = [None] * slots
        self._events: list[Optional["torch.cuda.Event"]] = [None] * slots
        self._next = 0

    def _slot(self, n: int) -> tuple[int, Tensor]:
        i = self._next
        self._next = (i + 1) % len(self._bufs)
        if self._events[i] is not None:
            self._events[i].synchronize()  # waits for an old copy only, not for the GPU's work
            self._events[i] = None
        buf = self._bufs[i]
        if buf is None or buf.numel() < n:
            buf = torch.empty(max(n, 2 * (0 if buf is None else buf.numel())), dtype=torch.int32,
                              pin_memory=self.pin)
            self._bufs[i] = buf
        return i, buf

    def assemble(self, ids: Sequence[Sequence[int]], order: np.ndarray, position_offset: int,
                 buckets: Optional[ShapeBuckets] = None, all_lengths: Optional[np.ndarray] = None) -> HostBatch:
        """:func:`assemble` into the next ring slot; ``all_lengths`` as its ``lengths``."""
        if all_lengths is None:
            all_lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        lengths = all_lengths[order]
        shape = None
        if buckets is not None:
            shape = buckets.bucket(int(lengths.sum()), len(order), int(lengths.max()) if len(order) else 0)
        n = packed_size(shape) if shape is not None else 2 * int(lengths.sum()) + 2 * len(order) + 1
        slot, buf = self._slot(n)
        packed, shape, lengths = assemble(ids, order, position_offset, shape, buf.numpy(), all_lengths)
        return HostBatch(buf[:packed.size], shape, len(order), int(lengths.sum()), lengths, slot)

    def to_device(self, hb: HostBatch, device: torch.device, dst: Optional[Tensor] = None) -> Tensor:
        """One asynchronous copy of the packed batch (into ``dst`` when given)."""
        if device.type != "cuda":
            return hb.packed if dst is None else dst.copy_(hb.packed)
        dst = torch.empty(hb.packed.shape, dtype=torch.int32, device=device) if dst is None else dst
        dst.copy_(hb.packed, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self._events[hb.slot] = ev
        return dst


# --------------------------------------------------------------------------- graphs
@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    static_in: Tensor
    static_out: Tensor


class CudaGraphRunner:
    """Runs ``fn(batch) -> Tensor`` on packed batches, through one CUDA graph per bucket.

    ``fn`` must be shape-static given the bucket: it may read ``cu_seqlens`` on the device but
    must not branch on device values (no host sync, which capture would reject anyway).
    ``per`` says whether ``fn``'s output rows are ``"sequence"`` or ``"token"`` rows; a call
    returns (the real rows, the packed int32 batch on the device it ran on). A bucket is captured the ``capture_after``-th time it is seen (one-off
    shapes are not worth a capture) and at most ``max_graphs`` graphs are kept; everything
    else, and everything when CUDA or capture is unavailable, runs eagerly.

    The returned tensor is a view of the graph's static output: consume it (pool, copy,
    scatter) before the next call. All graphs share one memory pool, which is safe because
    replays are issued in order on one stream.
    """

    def __init__(self, fn: Callable[[VarlenBatch], Tensor], device: torch.device, *, per: str = "sequence",
                 capture: bool = True, capture_after: int = 2, max_graphs: int = 48, warmup: int = 2):
        if per not in ("sequence", "token"):
            raise ValueError(f"per must be 'sequence' or 'token', got {per!r}")
        self.fn = fn
        self.device = torch.device(device)
        self.per = per
        self.enabled = capture and self.device.type == "cuda" and torch.cuda.is_available()
        self.capture_after = capture_after
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.graphs: dict[Bucket, _Graph] = {}
        self.seen: dict[Bucket, int] = {}
        self.failed: set[Bucket] = set()
        self.replays = 0
        self.eager_runs = 0
        self._pool = None

    def _real(self, out: Tensor, hb: HostBatch) -> Tensor:
        return out[:hb.num_seqs] if self.per == "sequence" else out[:hb.num_tokens]

    def _eager(self, hb: HostBatch, assembler: BatchAssembler) -> tuple[Tensor, Tensor]:
        self.eager_runs += 1
        packed = assembler.to_device(hb, self.device)
        batch, _ = batch_from_packed(packed, hb.shape)
        return self._real(self.fn(batch), hb), packed

    def _capture(self, hb: HostBatch, assembler: BatchAssembler) -> Optional[_Graph]:
        static_in = torch.empty(hb.packed.shape, dtype=torch.int32, device=self.device)
        assembler.to_device(hb, self.device, static_in)
        batch, _ = batch_from_packed(static_in, hb.shape)
        # Warm-up on a side stream (PyTorch's recipe): autotuning, cuBLAS workspaces and
        # lazily built tables happen here, outside the capture.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        g = torch.cuda.CUDAGraph()
        # thread_local: the tokenizer's worker thread may run meanwhile (it makes no CUDA calls).
        with torch.cuda.graph(g, pool=self._pool, capture_error_mode="thread_local"):
            static_out = self.fn(batch)
        return _Graph(g, static_in, static_out)

    def __call__(self, hb: HostBatch, assembler: BatchAssembler) -> tuple[Tensor, Tensor]:
        key = hb.shape
        if not self.enabled or key in self.failed:
            return self._eager(hb, assembler)
        g = self.graphs.get(key)
        if g is None:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] < self.capture_after or len(self.graphs) >= self.max_graphs:
                return self._eager(hb, assembler)
            try:
                g = self._capture(hb, assembler)
            except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
                logger.warning("CUDA graph capture failed for %s (%s: %s); running it eagerly",
                               key, type(e).__name__, e)
                self.failed.add(key)
                return self._eager(hb, assembler)
            self.graphs[key] = g
        else:
            assembler.to_device(hb, self.device, g.static_in)
        g.graph.replay()
        self.replays += 1
        return self._real(g.static_out, hb), g.static_in


# ----------------------------------------------------------------- device -> host
class HostCopy:
    """A device-to-host copy in flight: into pinned memory with ``non_blocking``, then an
    event; :meth:`wait` blocks on that event only, so the GPU keeps working on what was
    queued after the copy. On CPU tensors it is the tensor itself."""

    def __init__(self, src: Tensor):
        self.event = None
        if src.is_cuda:
            self.host = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            self.host.copy_(src, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = src

    def wait(self) -> Tensor:
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        return self.host


# -------------------------------------------------------------------- composition
def sentence_forward(engine, request) -> tuple[Callable[[VarlenBatch], Tensor], bool]:
    """``batch -> (B, D)`` sentence embeddings of a :class:`minilm.engine.Engine` for
    ``request``, and whether it can be captured in a CUDA graph (only when nothing in it loops
    over host-side lengths: Triton mean pooling; the other pooling modes walk length runs)."""
    backend = engine.backend
    capturable = engine.pooling_modes == ("mean",) and backend == "triton"

    def fn(batch: VarlenBatch) -> Tensor:
        return engine.sentence_embeddings(engine.encoder(batch, backend), batch.cu_seqlens, request)

    return fn, capturable


class CudaPipeline:
    """ids chunk -> host embeddings, for one engine and one request's output options.

    Per chunk: plan by token budget, assemble each batch into a pinned ring slot, copy it in
    one go, run it (graph or eager), scatter the real rows into the chunk's device output
    with device-side row indices (no ``torch.tensor(idx, device=...)``, which would block),
    then start the chunk's device-to-host copy and return it unwaited. :meth:`embed_chunks`
    waits on chunk k-1 after queuing chunk k, so the copy overlaps chunk k's forward;
    :meth:`encode_texts` also tokenizes chunk k+1 on a worker thread meanwhile.
    """

    def __init__(self, engine, request, *, max_tokens: Optional[int] = None, use_graphs: bool = True):
        """``engine``: a :class:`minilm.engine.Engine`; ``request``: the
        :class:`minilm.engine.EncodeRequest` whose output options (pooling skip, truncation,
        normalization) every chunk gets."""
        self.engine = engine
        self.device = engine.device
        fn, capturable = sentence_forward(engine, request)
        self.max_tokens = max_tokens or DEFAULT_TOKEN_BUDGET
        self.graphed = use_graphs and capturable
        self.buckets = ShapeBuckets(max_seqlen_cap=engine.tokenizer.max_length) if self.graphed else None
        self.runner = CudaGraphRunner(fn, self.device, capture=self.graphed)
        self.assembler = BatchAssembler()

    @torch.inference_mode()
    def embed_chunk(self, ids: Sequence[Sequence[int]], batch_size: int = 32) -> HostCopy:
        """(n, D) embeddings of ``ids`` in input order, as a :class:`HostCopy` in flight."""
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        out = None
        offset = self.engine.encoder.config.position_offset
        for order in plan_token_budget(lengths, batch_size, self.max_tokens):
            hb = self.assembler.assemble(ids, order, offset, self.buckets, lengths)
            emb, packed = self.runner(hb, self.assembler)
            if out is None:
                out = emb.new_empty(len(ids), emb.shape[1])
            # Row indices come with the batch's one packed copy: no extra transfer, no wait.
            _, rows = batch_from_packed(packed, hb.shape)
            out.index_copy_(0, rows[:hb.num_seqs].long(), emb)
        return HostCopy(out if out is not None else torch.empty(0, 0, device=self.device))

    def embed_chunks(self, chunks: Iterable[Sequence[Sequence[int]]], batch_size: int = 32) -> Iterator[Tensor]:
        """Host embeddings per chunk, in order; chunk k-1's copy is waited on only after
        chunk k is queued, so the copy overlaps chunk k's forward."""
        pending: Optional[HostCopy] = None
        for ids in chunks:
            nxt = self.embed_chunk(ids, batch_size)
            if pending is not None:
                yield pending.wait()
            pending = nxt
        if pending is not None:
            yield pending.wait()

    def encode_ids(self, ids: Sequence[Sequence[int]], chunk_size: int = 16384, batch_size: int = 32) -> np.ndarray:
        """Pre-tokenized ``ids`` -> (N, D) numpy."""
        chunks = (ids[s:s + chunk_size] for s in range(0, len(ids), chunk_size))
        return self._collect(self.embed_chunks(chunks, batch_size))

    def encode_texts(self, texts: Sequence[str], tokenize: Callable[[Sequence[str]], list],
                     chunk_size: int = 8192, batch_size: int = 32) -> np.ndarray:
        """``texts`` -> (N, D) numpy, tokenizing chunk k+1 on a worker thread (the tokenizers
        library releases the GIL) while chunk k is assembled and run."""
        return self._collect(self.embed_chunks(prefetched(tokenize, texts, chunk_size), batch_size))

    def _collect(self, parts: Iterable[Tensor]) -> np.ndarray:
        parts = [p for p in parts if p.numel()]
        if not parts:
            return np.empty((0, 0), dtype=np.float32)
        out = torch.cat(parts)
        return (out.float() if out.dtype == torch.bfloat16 else out).numpy()


def chunk_sizes(n: int, size: int, first: Optional[int] = None) -> list[int]:
    """How :func:`prefetched` cuts ``n`` items: chunks of at most ``size``; with ``first``,
    the chunks start at ``first`` items and double up to ``size``, and toward the end each
    takes half of what is left (never fewer than ``first``).

    Why: on CUDA, ``encode`` from text is bound by the tokenizer, and the work it cannot
    overlap is the first chunk's tokenization (nothing runs before it) and the last chunk's
    forward and copy (no tokenization is left to hide them). Small chunks at both ends shrink
    both, and full-size chunks in between keep the per-chunk overheads few.
    """
    if n <= 0:
        return []
    if first is None or first >= size:
        return [size] * (n // size) + ([n % size] if n % size else [])
    out, ramp = [], max(1, first)
    while n > 0:
        c = min(n, size, ramp, max(first, -(-n // 2)))
        out.append(c)
        n -= c
        ramp *= 2
    return out


def prefetched(fn: Callable[[Sequence], object], items: Sequence, size: int, *,
               first: Optional[int] = None, depth: int = 1) -> Iterator:
    """``fn(chunk)`` for each chunk of ``items`` (cut by :func:`chunk_sizes`), in order,
    computing chunks ahead on worker threads while the caller works on the current one: up to
    ``depth`` full-size chunks, one at a time otherwise.

    Two full-size chunks in flight let the tokenizer's native, GIL-free part of one run while
    the other's ids are turned into Python lists, which holds the GIL. The small chunks at the
    ends exist to shorten the serial head and tail, and a second tokenization running beside
    one of them would only slow the one the device is waiting for.
    """
    sizes = chunk_sizes(len(items), size, first)
    if len(sizes) <= 1:
        if sizes:
            yield fn(items)
        return
    starts = list(accumulate(sizes, initial=0))
    spans = deque(zip(starts, starts[1:]))  # (start, end) of the chunks not yet submitted
    with ThreadPoolExecutor(max(1, depth), thread_name_prefix="minilm-tokenize") as pool:
        pending: deque = deque()

        def fill():
            while spans and len(pending) < (depth if spans[0][1] - spans[0][0] == size else 1):
                a, b = spans.popleft()
                pending.append(pool.submit(fn, items[a:b]))

        fill()
        while pending:
            cur = pending.popleft().result()
            fill()
            yield cur
