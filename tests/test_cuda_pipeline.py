"""minilm.cuda_pipeline: token-budget planning, packed assembly, shape buckets and their
padding, the no-host-sync rule of the CUDA forward, the graph runner's eager fallback, and
(on a CUDA machine) graph replay, batch invariance and memory."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch

import minilm
from minilm import cuda_pipeline as cp
from minilm.engine import EncodeRequest
from minilm.model import padded_sdpa
from minilm.varlen import make_varlen_batch

from conftest import interpreter_ready, save_random_bert, save_st_model

rng = np.random.default_rng(0)


needs_interpreter = pytest.mark.skipif(not interpreter_ready(), reason="needs triton with TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ----------------------------------------------------------------------- planner
def _plan_reference(lengths, batch_size, max_tokens):
    """Text-by-text greedy loop, the obvious way to write the planner."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out, cur, tok = [], [], 0
    for i in order:
        if cur and len(cur) >= batch_size and tok + lengths[i] > max_tokens:
            out.append(cur)
            cur, tok = [], 0
        cur.append(i)
        tok += lengths[i]
    if cur:
        out.append(cur)
    return out


@pytest.mark.parametrize("batch_size,max_tokens", [(1, 64), (32, 64), (4, 1000), (32, 32768), (3, 5)])
def test_plan_token_budget_matches_greedy_reference(batch_size, max_tokens):
    lengths = rng.integers(1, 300, size=700)
    lengths[::7] = 16  # ties: the order among equal lengths must be stable
    got = cp.plan_token_budget(lengths, batch_size, max_tokens)
    want = _plan_reference(lengths.tolist(), batch_size, max_tokens)
    assert [g.tolist() for g in got] == want


def test_plan_token_budget_bounds():
    lengths = rng.integers(1, 512, size=3000)
    batches = cp.plan_token_budget(lengths, 32, 8192)
    assert sorted(np.concatenate(batches).tolist()) == list(range(3000))
    for b in batches[:-1]:
        assert len(b) >= 32
        assert lengths[b].sum() <= 8192 or len(b) == 32  # over budget only to honour batch_size
    assert cp.plan_token_budget(np.array([], dtype=np.int64), 32, 100) == []
    # One text longer than the budget still gets a batch.
    assert [b.tolist() for b in cp.plan_token_budget(np.array([500, 3]), 1, 100)] == [[0], [1]]
    with pytest.raises(ValueError, match="batch_size"):
        cp.plan_token_budget(lengths, 0, 100)


# ----------------------------------------------------------------------- buckets
def test_round_up_grid():
    vals = [cp.round_up(n) for n in range(1, 5000)]
    assert all(v >= n for n, v in zip(range(1, 5000), vals))
    assert all(v <= 1.25 * n for n, v in zip(range(1, 5000), vals))
    assert len(set(vals)) < 60  # few shapes -> few graphs
    assert [cp.round_up(n) for n in (17, 20, 21, 33, 100)] == [20, 20, 24, 40, 112]


@pytest.mark.parametrize("T,B,L", [(16, 1, 16), (1000, 60, 17), (32768, 2048, 33), (5, 2, 3), (4096, 8, 512)])
def test_bucket_has_room_for_fillers(T, B, L):
    bk = cp.ShapeBuckets(max_seqlen_cap=512).bucket(T, B, L)
    assert bk.tokens >= T and bk.max_seqlen >= L and bk.max_seqlen & (bk.max_seqlen - 1) == 0
    assert bk.seqs >= B + -(-(bk.tokens - T) // bk.max_seqlen)


# ---------------------------------------------------------------------- assembly
def _random_ids(n, lo=1, hi=40, vocab=1000):
    return [rng.integers(0, vocab, size=int(k)).tolist() for k in rng.integers(lo, hi, size=n)]


@pytest.mark.parametrize("offset", [0, 2])
def test_assemble_matches_make_varlen_batch(offset):
    ids = _random_ids(50)
    order = rng.permutation(50)[:37]
    packed, shape, lengths = cp.assemble(ids, order, offset)
    ref = make_varlen_batch([ids[i] for i in order], offset, with_token_types=False)
    batch, rows = cp.batch_from_packed(torch.from_numpy(packed), shape)
    assert torch.equal(batch.input_ids.long(), ref.input_ids)
    assert torch.equal(batch.position_ids.long(), ref.position_ids)
    assert torch.equal(batch.cu_seqlens, ref.cu_seqlens)
    assert batch.max_seqlen == ref.max_seqlen
    assert rows.tolist() == order.tolist()


def test_assemble_padded_to_bucket():
    ids = _random_ids(30, 5, 60)
    order = np.arange(30)
    T = sum(map(len, ids))
    shape = cp.ShapeBuckets(min_tokens=T + 300, min_seqs=1).bucket(T, 30, 59)  # plenty of padding
    packed, _, _ = cp.assemble(ids, order, 2, shape)
    batch, rows = cp.batch_from_packed(torch.from_numpy(packed), shape)
    ref = make_varlen_batch(ids, 2, with_token_types=False)
    cu = batch.cu_seqlens.long()
    assert torch.equal(batch.input_ids[:T].long(), ref.input_ids)
    assert torch.equal(batch.position_ids[:T].long(), ref.position_ids)
    assert torch.equal(batch.cu_seqlens[:31], ref.cu_seqlens)
    fill = torch.diff(cu[30:])
    assert int(cu[-1]) == shape.tokens and bool((fill >= 0).all()) and bool((fill <= shape.max_seqlen).all())
    assert int(fill.sum()) == shape.tokens - T
    assert bool((batch.position_ids[T:] == 2).all())  # filler positions stay inside the table
    assert rows[:30].tolist() == list(range(30))
    with pytest.raises(ValueError, match="does not fit"):
        cp.assemble(ids, order, 0, cp.Bucket(T - 1, 30, 64))


# ------------------------------------------------------------ model fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, real_model_path):
    tmp = tmp_path_factory.mktemp("cuda_pipeline")
    hf = save_random_bert(tmp / "hf", real_model_path, hidden_size=64, num_attention_heads=2,
                          num_hidden_layers=2, intermediate_size=96, max_position_embeddings=80)
    folder = save_st_model(tmp / "st", hf)
    return minilm.SentenceTransformer(str(folder), device="cpu")


@contextlib.contextmanager
def _triton_route(model, on: bool):
    model.engine.backend = "triton" if on else None
    try:
        yield
    finally:
        model.engine.backend = None


def _texts(sentences, n=40):
    return sentences[:n] + ["x", "a much longer sentence " * 5]


@pytest.mark.parametrize("triton_route", [False, pytest.param(True, marks=needs_interpreter)])
def test_padding_to_bucket_leaves_real_rows_bitwise_equal(tiny_model, sentences, triton_route):
    ids = tiny_model.tokenizer.encode(_texts(sentences))
    order = np.argsort([-len(s) for s in ids], kind="stable")
    with _triton_route(tiny_model, triton_route), torch.inference_mode():
        exact, shape, _ = cp.assemble(ids, order, tiny_model.config.position_offset)
        T, B, L = shape.tokens, shape.seqs, 2 * shape.max_seqlen
        # Filler sequences, then 5 empty ones, and attention told a max_seqlen 2x too long.
        big = cp.Bucket(T + 150, B + -(-150 // L) + 5, L)
        padded, big, _ = cp.assemble(ids, order, tiny_model.config.position_offset, big)
        assert padded[2 * big.tokens + big.seqs - 4:2 * big.tokens + big.seqs + 1].tolist() == [T + 150] * 5
        b0, _ = cp.batch_from_packed(torch.from_numpy(exact), shape)
        b1, _ = cp.batch_from_packed(torch.from_numpy(padded), big)
        h0, h1 = tiny_model.encoder(b0, tiny_model.engine.backend), tiny_model.encoder(b1, tiny_model.engine.backend)
        assert torch.equal(h0, h1[:T])
        e0 = tiny_model.engine.sentence_embeddings(h0, b0.cu_seqlens, EncodeRequest())
        e1 = tiny_model.engine.sentence_embeddings(h1, b1.cu_seqlens, EncodeRequest())
        assert torch.equal(e0, e1[:len(ids)])


# -------------------------------------------------------------------- no host sync
class HostSyncError(AssertionError):
    pass


_SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                 "unique", "masked_select")


@contextlib.contextmanager
def forbid_host_syncs():
    """Make every Tensor operation that needs a tensor's *values* on the host raise.

    On CUDA each of these is a device->host copy that waits for the GPU. Checked here on CPU
    tensors, where they are free, so a CPU test can catch a sync the CUDA path would pay.
    Triton's interpreter reads tensors on the host by design; the guard is lifted while a
    kernel runs through it (a compiled kernel launch reads nothing back).
    """
    active = threading.local()
    active.on = True
    saved = {}

    def guarded(owner, name, orig, check=None):
        def wrapped(*a, **k):
            if getattr(active, "on", False) and (check is None or check(*a, **k)):
                raise HostSyncError(f"host sync on the CUDA path: {owner.__name__}.{name}")
            return orig(*a, **k)
        return wrapped

    def no_output_size(*a, **k):
        return k.get("output_size") is None

    def bool_index(self, idx, *rest):
        items = idx if isinstance(idx, tuple) else (idx,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    targets = [(torch.Tensor, m, None) for m in _SYNC_METHODS]
    targets += [(torch.Tensor, "repeat_interleave", no_output_size), (torch, "repeat_interleave", no_output_size),
                (torch, "nonzero", None), (torch, "unique", None), (torch, "masked_select", None),
                (torch.Tensor, "__getitem__", bool_index), (torch.Tensor, "__setitem__", bool_index)]
    for owner, name, check in targets:
        orig = getattr(owner, name)
        saved[(owner, name)] = orig
        setattr(owner, name, guarded(owner, name, orig, check))
    grid_call = None
    try:
        from triton.runtime.interpreter import GridExecutor

        grid_call = GridExecutor.__call__

        def lifted(self, *a, **k):
            prev, active.on = active.on, False
            try:
                return grid_call(self, *a, **k)
            finally:
                active.on = prev

        GridExecutor.__call__ = lifted
    except ImportError:
        pass
    try:
        yield
    finally:
        for (owner, name), orig in saved.items():
            setattr(owner, name, orig)
        if grid_call is not None:
            GridExecutor.__call__ = grid_call


def test_sync_guard_catches_value_reads():
    x = torch.arange(6)
    cases = [lambda: x.sum().item(), lambda: x.tolist(), lambda: bool((x == 1).all()), lambda: int(x[0]),
             lambda: torch.repeat_interleave(x, x), lambda: x[x > 2], lambda: torch.nonzero(x),
             lambda: range(x[2])]
    with forbid_host_syncs():
        for f in cases:
            with pytest.raises(HostSyncError):
                f()
        torch.repeat_interleave(x, x, output_size=15)  # sizes known on the host: fine
        x[1:3] + x.view(2, 3).sum(0)[0]
    assert x.tolist() == list(range(6))  # restored


@needs_interpreter
def test_cuda_route_forward_issues_no_host_sync(tiny_model, sentences):
    """The forward the CUDA strategy runs (Triton attention, add+LayerNorm, mean pooling) on
    a bucket-padded batch, with every host read of a tensor value forbidden."""
    ids = tiny_model.tokenizer.encode(_texts(sentences, 20))
    order = np.argsort([-len(s) for s in ids], kind="stable")
    hb = cp.BatchAssembler().assemble(ids, order, tiny_model.config.position_offset, cp.ShapeBuckets())
    with _triton_route(tiny_model, True), torch.inference_mode():
        request = EncodeRequest(pooling_skip=1, normalize=True)
        fn, capturable = cp.sentence_forward(tiny_model.engine, request)
        assert capturable
        batch, rows = cp.batch_from_packed(hb.packed, hb.shape)
        ref = fn(batch)
        out = torch.zeros(len(ids), ref.shape[1])
        with forbid_host_syncs():
            emb = fn(batch)[:hb.num_seqs]
            out.index_copy_(0, rows[:hb.num_seqs].long(), emb)
    assert torch.equal(emb, ref[:hb.num_seqs])


def test_padded_sdpa_issues_no_host_sync():
    """CUDA without Triton uses padded SDPA: it must decide its layout from host ints."""
    ids = _random_ids(12, 1, 20)
    order = np.arange(12)
    packed, _, _ = cp.assemble(ids, order, 0, cp.Bucket(400, 40, 32))
    batch, _ = cp.batch_from_packed(torch.from_numpy(packed), cp.Bucket(400, 40, 32))
    qkv = torch.randn(400, 3, 2, 8)
    ref = padded_sdpa(qkv, batch)
    batch._pad_index = batch._key_mask = None
    with forbid_host_syncs():
        got = padded_sdpa(qkv, batch)
    assert torch.equal(got, ref)
    # The reference: plain per-sequence softmax attention.
    cu = batch.cu_seqlens.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        if e > s:
            q, k, v = qkv[s:e].unbind(1)
            w = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / 8 ** 0.5, -1)
            assert torch.allclose(got[s:e], torch.einsum("hqk,khd->qhd", w, v), atol=1e-5)


def test_pool_with_host_seqlens_issues_no_host_sync():
    from minilm.pooling import pool

    hidden = torch.randn(30, 8)
    cu = torch.tensor([0, 4, 4, 30], dtype=torch.int32)
    modes = ("cls", "max", "mean", "lasttoken")
    ref = pool(hidden, cu, modes, 1)
    with forbid_host_syncs():
        got = pool(hidden, cu, modes, 1, seqlens=[4, 0, 26])
    assert torch.equal(got, ref)
    assert torch.allclose(got[2, 16:24], hidden[5:30].mean(0), atol=1e-6)


# ---------------------------------------------------------------- graph runner, pipeline
def test_graph_runner_runs_eagerly_without_cuda(tiny_model, sentences):
    ids = tiny_model.tokenizer.encode(_texts(sentences, 10))
    order = np.arange(len(ids))
    calls = []

    def fn(batch):
        calls.append(batch.input_ids.shape[0])
        return batch.input_ids[:, None].float() * 2

    runner = cp.CudaGraphRunner(fn, torch.device("cpu"), per="token", capture_after=1)
    asm = cp.BatchAssembler()
    for _ in range(3):
        hb = asm.assemble(ids, order, 0, cp.ShapeBuckets())
        out, packed = runner(hb, asm)
        assert out.shape[0] == hb.num_tokens < hb.shape.tokens
    assert not runner.enabled and runner.graphs == {} and runner.eager_runs == 3 == len(calls)
    want = torch.tensor([t for s in ids for t in s], dtype=torch.float32)[:, None] * 2
    assert torch.equal(out, want)


def test_graph_runner_falls_back_when_capture_fails(monkeypatch):
    runner = cp.CudaGraphRunner(lambda b: b.input_ids[:, None].float(), torch.device("cpu"), per="sequence",
                                capture_after=1)
    runner.enabled = True  # pretend CUDA: the capture below fails as a real one could

    def broken(*a):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runner, "_capture", broken)
    asm = cp.BatchAssembler()
    hb = asm.assemble([[5, 6], [7]], np.array([0, 1]), 0)
    out, _ = runner(hb, asm)
    assert hb.shape in runner.failed and runner.eager_runs == 1
    assert out.tolist() == [[5.0], [6.0]]  # sequence rows: the first num_seqs rows
    runner(hb, asm)
    assert runner.eager_runs == 2  # a failed bucket is not captured again


def test_host_copy_on_cpu_is_the_tensor():
    t = torch.ones(3)
    assert cp.HostCopy(t).wait() is t


@pytest.mark.parametrize("n,size", [(0, 4), (3, 4), (4, 4), (10, 4), (12, 4)])
def test_prefetched_chunks_in_order(n, size):
    seen = []

    def fn(chunk):
        seen.append(threading.current_thread().name)
        return [x * 2 for x in chunk]

    items = list(range(n))
    got = list(cp.prefetched(fn, items, size))
    assert got == [[x * 2 for x in items[s:s + size]] for s in range(0, n, size)]
    if n > size:
        assert all(t.startswith("minilm-tokenize") for t in seen)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 513, 5000, 14498, 200_001])
@pytest.mark.parametrize("size,first", [(64, 8), (8192, 512), (100, 100), (100, None), (7, 3)])
def test_chunk_sizes_ramp_up_and_down(n, size, first):
    got = cp.chunk_sizes(n, size, first)
    assert sum(got) == n and all(0 < c <= size for c in got)
    if first is None or first >= size:
        assert got == [size] * (n // size) + ([n % size] if n % size else [])
        return
    if not got:
        return
    assert got[0] == min(n, first)
    peak = got.index(max(got))
    # Up: each chunk doubles the one before (or is capped); down: never grows again.
    assert all(b <= 2 * a for a, b in zip(got[:peak], got[1:peak + 1]))
    assert all(b <= a for a, b in zip(got[peak:], got[peak + 1:]))
    assert got[-1] <= max(first, 1) or len(got) == 1
    if n >= 8 * size:  # long inputs run mostly full-size chunks
        assert got.count(size) >= len(got) - 2 * (size // first).bit_length() - 2


def test_chunk_sizes_worked_example():
    # 14,498 texts, chunks of 8,192 from 512: 512, 1,024, 2,048, 4,096 (up to 7,680 used);
    # 6,818 left: half is 3,409; then 1,705 of 3,409; 852 of 1,704; 512 (the floor) of 852; 340.
    assert cp.chunk_sizes(14498, 8192, 512) == [512, 1024, 2048, 4096, 3409, 1705, 852, 512, 340]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prefetched_keeps_order_and_at_most_depth_chunks_in_flight(depth):
    lock, live, most, small_beside_another = threading.Lock(), [0], [0], []

    def fn(chunk):
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
            if len(chunk) < 32 and live[0] > 1:
                small_beside_another.append(len(chunk))
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return list(chunk)

    items = list(range(200))
    got = list(cp.prefetched(fn, items, 32, first=4, depth=depth))
    sizes = cp.chunk_sizes(200, 32, 4)
    assert [len(c) for c in got] == sizes and sum(got, []) == items
    assert most[0] == depth  # the consumer here is instant, so every worker is kept busy
    assert small_beside_another == []  # ramp chunks are tokenized one at a time


@pytest.mark.parametrize("triton_route", [False, pytest.param(True, marks=needs_interpreter)])
def test_pipeline_matches_sentence_transformers(tiny_model, sentences, triton_route):
    from sentence_transformers import SentenceTransformer

    texts = _texts(sentences, 20 if triton_route else 60)  # the interpreter is slow
    st = SentenceTransformer(str(tiny_model.model_path), device="cpu")
    want = st.encode(texts, batch_size=16)
    with _triton_route(tiny_model, triton_route), torch.inference_mode():
        pipe = cp.CudaPipeline(tiny_model.engine, EncodeRequest(), max_tokens=256)
        ids = tiny_model.tokenizer.encode(texts)
        got = pipe.encode_ids(ids, chunk_size=25, batch_size=4)
        again = pipe.encode_texts(texts[::-1], tiny_model.tokenizer.encode, chunk_size=7, batch_size=1)[::-1]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999
    assert np.array_equal(got, again)  # other chunks, batches and neighbours: same bits


# -------------------------------------------------------------------- CUDA only
@pytest.fixture(scope="module")
def gpu_model(real_model_path):
    return minilm.SentenceTransformer(str(real_model_path), device="cuda", dtype=torch.float16)


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_replay_equals_eager(gpu_model, sts_sentences):
    ids = gpu_model.tokenizer.encode(sts_sentences[:3000])
    pipe = cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=4096)
    pipe.runner.capture_after = 1
    graphed = pipe.encode_ids(ids, batch_size=1)
    graphed2 = pipe.encode_ids(ids, batch_size=1)
    assert pipe.runner.graphs and pipe.runner.replays > 0
    eager = cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=4096)
    eager.runner.enabled = False  # the same padded shapes, run eagerly
    ref = eager.encode_ids(ids, batch_size=1)
    assert eager.runner.eager_runs > 0 and not eager.runner.graphs
    assert np.array_equal(graphed, ref)
    assert np.array_equal(graphed, graphed2)


@pytest.mark.cuda
@needs_cuda
def test_cuda_embeddings_bitwise_batch_invariant(gpu_model, sts_sentences, scifact_texts):
    """Issue 11 goal 5: for a fixed dtype, the batch, its neighbours and the bucket padding
    change nothing, through encode() and through the pipeline (graphs or not)."""
    texts = sts_sentences[:1500] + scifact_texts
    a = gpu_model.encode(texts, batch_size=32)
    assert np.array_equal(a, gpu_model.encode(texts[::-1], batch_size=512)[::-1])
    assert np.array_equal(a[:100], gpu_model.encode(texts[:100], batch_size=7))
    ids = gpu_model.tokenizer.encode(texts)
    graphed = cp.CudaPipeline(gpu_model.engine, EncodeRequest())
    graphed.runner.capture_after = 1
    for pipe, kw in ((graphed, {}), (graphed, dict(batch_size=2048)), (cp.CudaPipeline(gpu_model.engine, EncodeRequest(), use_graphs=False), {}),
                     (cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=1000), dict(chunk_size=333))):
        assert np.array_equal(a, pipe.encode_ids(ids, **kw)), kw


@pytest.mark.cuda
@needs_cuda
def test_cuda_pipeline_forward_has_no_sync(gpu_model, sts_sentences):
    """Copy in, forward (graph replay, and eager), scatter out: nothing waits for the GPU."""
    ids = gpu_model.tokenizer.encode(sts_sentences[:2000])
    for graphs in (True, False):
        pipe = cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=8192, use_graphs=graphs)
        pipe.runner.capture_after = 1
        pipe.encode_ids(ids)  # warm-up: autotuning and captures may sync
        order = cp.plan_token_budget(np.array([len(s) for s in ids]), 32, 8192)[0]
        hb = pipe.assembler.assemble(ids, order, gpu_model.config.position_offset, pipe.buckets)
        out = torch.zeros(len(ids), 384, dtype=gpu_model.dtype, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.inference_mode():
                emb, packed = pipe.runner(hb, pipe.assembler)
                _, rows = cp.batch_from_packed(packed, hb.shape)
                out.index_copy_(0, rows[:hb.num_seqs].long(), emb)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert (pipe.runner.replays > 0) == graphs
        torch.cuda.synchronize()


@pytest.mark.cuda
@needs_cuda
def test_cuda_peak_memory_bounded_by_token_budget(gpu_model, sts_sentences, scifact_texts):
    texts = (sts_sentences + scifact_texts * 20)[:6000]
    ids = gpu_model.tokenizer.encode(texts)
    for budget in (4096, 16384):  # warm-up: Triton's autotuner allocates a large scratch buffer
        cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=budget, use_graphs=False).encode_ids(ids, chunk_size=2048)
    peaks = {}
    for budget in (4096, 16384):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        cp.CudaPipeline(gpu_model.engine, EncodeRequest(), max_tokens=budget, use_graphs=False).encode_ids(ids, chunk_size=2048)
        torch.cuda.synchronize()
        peaks[budget] = torch.cuda.max_memory_allocated() - base
    # Activations scale with the budget: well under 16 KiB per token (fp16, hidden 384,
    # MLP 1536) plus a little per chunk; it fails if a batch ignored the budget.
    for budget, peak in peaks.items():
        assert peak < budget * 16 * 1024 + 64 * 2**20, (budget, peak)
