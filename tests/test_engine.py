"""The execution engine: the backend switch, the device strategies, batch planning, and the
picklable spec that worker processes rebuild an engine from."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import minilm
from minilm import engine as engine_mod
from minilm.engine import CpuStrategy, CudaStrategy, EncodeRequest, EngineSpec, choose_backend, strategy_for
from minilm.varlen import make_varlen_batch


def test_backend_is_chosen_from_device_dtype_and_triton(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_backend(cpu, torch.float32) == "sdpa_runs"
    monkeypatch.setattr(engine_mod, "has_bf16_dot", lambda: True)
    assert choose_backend(cpu, torch.bfloat16) == "math_runs"
    monkeypatch.setattr(engine_mod, "has_bf16_dot", lambda: False)  # emulated bf16 matmuls: keep SDPA
    assert choose_backend(cpu, torch.bfloat16) == "sdpa_runs"
    monkeypatch.setattr(engine_mod, "triton_available", lambda: True)
    assert choose_backend(cuda, torch.float16) == "triton"
    monkeypatch.setattr(engine_mod, "triton_available", lambda: False)
    assert choose_backend(cuda, torch.float16) == "sdpa_padded"


@pytest.mark.parametrize("bf16_dot", [False, True])
def test_cpu_without_native_bf16_warns(monkeypatch, caplog, bf16_dot):
    # Only the bf16 dot-product flags decide: torch's oneDNN probe says yes on any AVX-512
    # CPU (Skylake-X too, which converts to float32), so it cannot be what the warning reads.
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(engine_mod, "has_bf16_dot", lambda: bf16_dot)
    with caplog.at_level("WARNING", logger="minilm.engine"):
        choose_backend(torch.device("cpu"), torch.bfloat16)
    assert ("no native" in caplog.text) == (not bf16_dot)


def test_backend_is_chosen_once_per_device_and_dtype(ml_real, monkeypatch):
    calls = []
    monkeypatch.setattr(engine_mod, "choose_backend", lambda d, t: calls.append((d, t)) or "sdpa_runs")
    eng = engine_mod.Engine(ml_real.encoder, ml_real.tokenizer, ml_real.pooling_modes, True, ml_real.heads, 384)
    for _ in range(3):
        eng.encode(["a b c", "d"], EncodeRequest())
    assert calls == [(torch.device("cpu"), torch.float32)]


def test_pinned_backend_is_validated_and_used(ml_real):
    eng = ml_real.engine
    with pytest.raises(ValueError, match="backend must be one of"):
        eng.backend = "cuda-magic"
    eng.backend = "sdpa_padded"  # the padded path also runs on CPU tensors
    try:
        assert eng.backend == "sdpa_padded"
        padded = ml_real.encode(["a short one", "and a somewhat longer sentence here"])
    finally:
        eng.backend = None
    assert eng.backend == "sdpa_runs"
    ref = ml_real.encode(["a short one", "and a somewhat longer sentence here"])
    assert np.abs(padded - ref).max() < 1e-5


def test_strategies_per_device_and_the_engine_defaults_follow_them(ml_real):
    assert isinstance(strategy_for(torch.device("cpu")), CpuStrategy)
    assert isinstance(strategy_for(torch.device("cuda")), CudaStrategy)
    eng = ml_real.engine
    assert eng.effective_max_batch_tokens() == CpuStrategy.max_batch_tokens
    assert eng.effective_max_batch_tokens(torch.device("cuda")) is None  # GPUs: no token cap by default
    eng.max_batch_tokens, eng.chunk_size = 777, 55
    try:
        assert eng.effective_max_batch_tokens(torch.device("cuda")) == 777
        assert eng.effective_chunk_size() == 55
    finally:
        eng.max_batch_tokens = eng.chunk_size = None


@pytest.mark.parametrize("lengths, rows, seqs", [
    ([3], 64, 2),            # a tiny batch: one filler sequence up to the step
    ([40, 24], 64, 2),       # already a multiple of the step: no filler
    ([40, 25], 128, 3),
    ([300, 200, 100], 640, 4),
])
def test_cpu_strategy_pads_each_pass_to_the_gemm_row_step(lengths, rows, seqs):
    ids = [[101] + [7] * (n - 2) + [102] for n in lengths]
    batch, n_real, t_real = CpuStrategy().to_device(ids, 0, torch.device("cpu"))
    assert (n_real, t_real) == (len(lengths), sum(lengths))
    assert batch.total_tokens == rows and batch.batch_size == seqs
    assert rows >= CpuStrategy.min_gemm_rows and rows % CpuStrategy.gemm_rows_step == 0
    ref = make_varlen_batch(ids, with_token_types=False)
    assert torch.equal(batch.input_ids[:t_real], ref.input_ids)
    assert torch.equal(batch.cu_seqlens[:len(lengths) + 1], ref.cu_seqlens)


def test_cpu_passes_take_few_distinct_row_counts(ml_real, monkeypatch):
    """oneDNN caches a kernel per GEMM shape: a run of many calls must reuse a few shapes."""
    seen = set()
    real = CpuStrategy.to_device

    def spy(self, ids, offset, device):
        batch, n, t = real(self, ids, offset, device)
        seen.add(batch.total_tokens)
        return batch, n, t

    monkeypatch.setattr(CpuStrategy, "to_device", spy)
    rng = np.random.default_rng(1)
    words = "the quick brown fox jumps over a lazy dog while it rains in the valley".split()
    for _ in range(40):
        texts = [" ".join(rng.choice(words, int(rng.integers(2, 40)))) for _ in range(int(rng.integers(1, 90)))]
        ml_real.encode(texts)
    # Passes of at most 2,048 tokens in 64-row steps: 32 shapes at most, whatever the texts.
    assert len(seen) <= 32, sorted(seen)


def test_plan_batches_respects_batch_size_and_token_budget(ml_real):
    eng = ml_real.engine
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500).tolist()
    old = eng.max_batch_tokens
    eng.max_batch_tokens = 1000
    try:
        batches = eng.plan_batches(lengths, batch_size=40, device=torch.device("cpu"))
    finally:
        eng.max_batch_tokens = old
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) <= 40
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or longest * len(b) <= 1000
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)


def test_plan_batches_fill_budget_lets_the_budget_alone_cut(ml_real):
    eng = ml_real.engine
    lengths = [12] * 300 + [200] * 7
    old = eng.max_batch_tokens
    try:
        eng.max_batch_tokens = 1000
        batches = eng.plan_batches(lengths, batch_size=8, device=torch.device("cpu"), fill_budget=True)
        capped = eng.plan_batches(lengths, batch_size=8, device=torch.device("cpu"))
    finally:
        eng.max_batch_tokens = old
    sizes = [len(b) for b in batches]
    assert sorted(i for b in batches for i in b) == list(range(307))
    # By hand: 5 x 200 tokens; then 2 x 200 + 3 x 12 (a batch pays for its longest text);
    # then 83 x 12 (996 tokens) until the last 48 short texts, far past batch_size=8.
    assert sizes == [5, 5, 83, 83, 83, 48]
    assert all(max(lengths[i] for i in b) * len(b) <= 1000 for b in batches)
    assert max(len(b) for b in capped) == 8  # without fill_budget, batch_size is the cap


def test_spec_rebuilds_an_identical_engine(ml_real):
    ml_real.max_seq_length = 32
    try:
        spec = pickle.loads(pickle.dumps(ml_real.engine.spec(ml_real.model_path)))
        assert isinstance(spec, EngineSpec) and spec.max_seq_length == 32
        rebuilt = spec.build("cpu")
        texts = ["one two three", " ".join(["long"] * 100)]
        got = rebuilt.encode(texts, EncodeRequest())
        ref = ml_real.encode(texts)
    finally:
        ml_real.max_seq_length = 256
    np.testing.assert_array_equal(got, ref)
    assert spec.differences(ml_real.engine.spec(ml_real.model_path)) == {"max_seq_length": (32, 256)}


def test_request_resolution_in_the_facade(real_model_path):
    m = minilm.SentenceTransformer(str(real_model_path), device="cpu", prompts={"q": "query: "})
    r = m._request(prompt_name="q", convert_to_tensor=True, output_value="sentence_embedding")
    assert r.prompt == "query: " and r.prompt_length == m.tokenizer.prompt_length("query: ")
    assert r.pooling_skip == 0  # include_prompt=True: the prompt's tokens are pooled
    assert r.convert_to_tensor and not r.convert_to_numpy
    r = m._request(output_value="token_embeddings")
    assert not r.convert_to_numpy and not r.convert_to_tensor


def test_cuda_strategy_chunk_schedule_is_wired_and_changes_no_embedding(real_model_path):
    """CudaStrategy's schedule reaches the tokenizer's chunks (spied): a ramp for inputs of
    up to ramp_upto_chunks chunks, fixed chunks beyond; and no schedule changes an embedding
    bit."""
    from minilm.cuda_pipeline import chunk_sizes

    m = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    texts = [f"text {i} " + "word " * (i % 17) for i in range(301)]  # 4.7 chunks of 64
    m.chunk_size = 64
    seen = []
    encode = m.engine.tokenizer.encode
    m.engine.tokenizer.encode = lambda chunk: (seen.append(len(chunk)), encode(chunk))[1]
    got = {}
    try:
        for first, upto, depth, ramped in ((None, 8, 1, False), (8, 8, 2, True), (8, 4, 2, False)):
            strategy = CudaStrategy()
            strategy.first_chunk, strategy.ramp_upto_chunks, strategy.tokenize_ahead = first, upto, depth
            m.engine.strategy = strategy
            seen.clear()
            got[first, upto] = m.encode(texts, batch_size=8)
            assert seen == chunk_sizes(len(texts), 64, 8 if ramped else None)
    finally:
        m.engine.tokenizer.encode = encode
        m.engine.strategy = None
        m.chunk_size = None
    assert chunk_sizes(len(texts), 64, 8)[:4] == [8, 16, 32, 64]
    for key in ((8, 8), (8, 4)):
        np.testing.assert_array_equal(got[key], got[None, 8])


def test_cuda_strategy_pipeline_runs_eagerly_on_cpu_and_matches(real_model_path):
    """The CUDA strategy's sentence path (token-budget batches, packed assembly, row scatter,
    host copies) pinned onto a CPU engine: eager, and equal to the CPU strategy's result."""
    m = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    texts = [f"sentence number {i} " + "word " * (i % 23) for i in range(300)] + [""]
    ref = m.encode(texts, prompt="query: ", normalize_embeddings=True, truncate_dim=200)
    m.engine.strategy = CudaStrategy()
    m.chunk_size = 64  # several chunks: the overlap and ordering logic runs
    try:
        got = m.encode(texts, prompt="query: ", normalize_embeddings=True, truncate_dim=200, batch_size=8)
        tokens = m.encode(texts[:5], output_value="token_embeddings")  # the generic loop
        assert len(m.engine._pipelines) == 1
        m.encode(texts[:5], prompt="query: ", normalize_embeddings=True, truncate_dim=200)
        assert len(m.engine._pipelines) == 1  # the same options reuse the pipeline
    finally:
        m.engine.strategy = None
        m.chunk_size = None
    assert got.shape == ref.shape == (301, 200)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=0)
    assert len(tokens) == 5 and tokens[0].shape[1] == 384
