"""Padding-free batching: unpadded vs padded forward, order restoration, the token budget,
batch invariance, chunking, bfloat16 on CPU, and encode from several threads."""

from __future__ import annotations

import random

import numpy as np
import torch

import minilm
from conftest import cosines, spearman_x100
from minilm.model import attention_per_run, padded_sdpa
from minilm.varlen import make_varlen_batch


def test_run_attention_matches_padded_attention(ml_real, sentences, paragraphs):
    """The CPU path (SDPA per run of equal lengths) against masked SDPA on the padded batch,
    and the whole encoder against a padded plain-torch forward of its own weights."""
    texts = sorted(sentences[:40] + paragraphs[:5], key=len, reverse=True)
    ids = ml_real.tokenizer.encode(texts)
    ids.sort(key=len, reverse=True)
    batch = make_varlen_batch(ids, with_token_types=False)
    torch.manual_seed(0)
    qkv = torch.randn(batch.total_tokens, 3, 12, 32)
    torch.testing.assert_close(attention_per_run(qkv, batch), padded_sdpa(qkv, batch), atol=2e-6, rtol=0)
    # Unsorted batches still work (every run then has one sequence).
    random.Random(0).shuffle(ids)
    b2 = make_varlen_batch(ids, with_token_types=False)
    qkv2 = torch.randn(b2.total_tokens, 3, 12, 32)
    torch.testing.assert_close(attention_per_run(qkv2, b2), padded_sdpa(qkv2, b2), atol=2e-6, rtol=0)


def _padded_reference_forward(enc, ids):
    """A padded forward with attention masks, written against the encoder's parameters."""
    B, L = len(ids), max(map(len, ids))
    x_ids = torch.zeros(B, L, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.bool)
    for i, s in enumerate(ids):
        x_ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    e = enc.embeddings
    x = e.word(x_ids) + e.position(torch.arange(L))[None] + e.token_type.weight[0]
    x = e.norm(x)
    nh = enc.config.num_attention_heads
    for layer in enc.layers:
        q, k, v = layer.attn.qkv(x).view(B, L, 3, nh, -1).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        att = att.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, L, -1)
        x = layer.attn_norm(layer.attn.out(o) + x)
        x = layer.mlp_norm(layer.mlp(x) + x)
    return x[mask]


def test_unpadded_forward_matches_padded_forward(ml_real, sentences, paragraphs):
    ids = ml_real.tokenizer.encode(sentences[:30] + paragraphs[:3])
    with torch.inference_mode():
        got = ml_real.encoder(make_varlen_batch(ids, with_token_types=False))
        ref = _padded_reference_forward(ml_real.encoder, ids)
    assert (got - ref).abs().max().item() < 2e-5


def test_order_is_restored(ml_real, sentences):
    texts = sentences[:50]
    full = ml_real.encode(texts, batch_size=8)
    for i in (0, 17, 49):
        np.testing.assert_array_equal(full[i], ml_real.encode(texts[i]))


def test_token_budget_is_respected(real_model_path, ml_real, st_real, sentences, paragraphs):
    m = minilm.SentenceTransformer(str(real_model_path), device="cpu", max_batch_tokens=600)
    texts = sentences[:200] + paragraphs[-3:] + paragraphs[:7]  # 3 over 256 tokens
    seen = []
    orig = m.engine.forward_ids

    def spy(ids, device):
        seen.append((len(ids), max(map(len, ids)), sum(map(len, ids))))
        return orig(ids, device)

    m.engine.forward_ids = spy
    out = m.encode(texts, batch_size=4)
    assert out.shape == (210, 384)
    assert sum(n for n, _, _ in seen) == 210
    for n, longest, _ in seen:
        assert n == 1 or n * longest <= 600, (n, longest)
    # Sentence embeddings: the budget alone cuts the passes, so short texts fill it past
    # batch_size, and long ones stop at 2 of 256 tokens.
    assert max(n for n, _, _ in seen) > 4
    assert max(n for n, longest, _ in seen if longest == 256) == 2
    # Token embeddings keep batch_size as the most texts per pass.
    seen.clear()
    toks = m.encode(texts[:40], batch_size=4, output_value="token_embeddings")
    assert len(toks) == 40 and max(n for n, _, _ in seen) == 4
    # Independent references: each text embedded on its own (bitwise, by batch invariance), and
    # sentence-transformers (to rounding).
    for i in (0, 57, 199, 200, 201, 202, 209):
        np.testing.assert_array_equal(out[i], ml_real.encode(texts[i]))
    np.testing.assert_allclose(out, st_real.encode(texts, batch_size=64), rtol=0, atol=1e-6)


def test_batch_invariance_is_bitwise_on_cpu(ml_real, sentences, paragraphs):
    """A text's float32 embedding does not depend on the other texts in the call, their order,
    batch_size or the token budget: bitwise, on this CPU path."""
    probe = sentences[:25] + paragraphs[-3:] + ["a", "", "Short one."]  # 3 truncated at 256 tokens
    base = ml_real.encode(probe, batch_size=len(probe))
    rng = random.Random(1)
    others = sentences[100:] + paragraphs[:12]
    worst = 0.0
    for batch_size, budget in [(1, None), (3, None), (16, None), (64, 2048), (128, 16384), (7, 300)]:
        mix = probe + rng.sample(others, 60)
        order = list(range(len(mix)))
        rng.shuffle(order)
        saved, ml_real.max_batch_tokens = ml_real.max_batch_tokens, budget
        try:
            out = ml_real.encode([mix[i] for i in order], batch_size=batch_size)
        finally:
            ml_real.max_batch_tokens = saved
        got = out[np.argsort(order)][: len(probe)]
        worst = max(worst, float(np.abs(got - base).max()))
    assert worst == 0.0, worst


def test_chunked_encoding_equals_one_chunk(ml_real, sentences):
    texts = sentences[:60]
    whole = ml_real.encode(texts, batch_size=16)
    saved, ml_real.chunk_size = ml_real.chunk_size, 7  # chunk boundaries fall inside batches
    try:
        chunked = ml_real.encode(texts, batch_size=16)
        toks = ml_real.encode(texts[:10], output_value="token_embeddings")
    finally:
        ml_real.chunk_size = saved
    np.testing.assert_array_equal(chunked, whole)
    ref_toks = ml_real.encode(texts[:10], output_value="token_embeddings")
    assert all(torch.equal(a, b) for a, b in zip(toks, ref_toks))


def test_bfloat16_stays_close_to_float32(real_model_path, ml_real, sentences, paragraphs):
    """bfloat16 against our own float32, per text, on our text (short and truncated long ones).
    bf16 is emulated on CPUs without bf16 matrix units, so the sample stays small."""
    texts = sentences[::4] + paragraphs[-3:]
    bf = minilm.SentenceTransformer(str(real_model_path), device="cpu", dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    e16 = bf.encode(texts, batch_size=64)
    e32 = ml_real.encode(texts, batch_size=64)
    assert e16.dtype == np.float32  # numpy has no bfloat16: outputs are upcast like sentence-transformers'
    cos = cosines(e16, e32)
    assert 0.999 < cos.min() < 1.0, cos.min()  # close, and really computed in another precision


def test_bfloat16_stays_close_to_float32_on_sts_dev(real_model_path, ml_real, sts_rows, sts_sentences):
    """bfloat16 against our own float32 on STS-dev: per-text cosine and the Spearman.
    On CPUs without bf16 matrix units bf16 is emulated and slow, so CI takes the first 500
    pairs; benchmarks/bench_encode.py reports the full set."""
    n = 1000
    bf = minilm.SentenceTransformer(str(real_model_path), device="cpu", dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    e16 = bf.encode(sts_sentences[:n], batch_size=64)
    e32 = ml_real.encode(sts_sentences[:n], batch_size=64)
    assert e16.dtype == np.float32  # numpy has no bfloat16: outputs are upcast like sentence-transformers'
    cos = cosines(e16, e32)
    gold = np.array([s for s, _, _ in sts_rows[: n // 2]])
    sp16 = spearman_x100(e16, gold)
    sp32 = spearman_x100(e32, gold)
    assert cos.min() > 0.99, cos.min()
    assert abs(sp16 - sp32) <= 0.2, (sp16, sp32)


def test_packed_transfer_round_trips():
    from minilm.varlen import batch_to

    ref = make_varlen_batch([[5, 6, 7], [8], [9, 10]])
    b = batch_to(ref, torch.device("cpu"), pin=False)
    assert torch.equal(b.input_ids, ref.input_ids) and torch.equal(b.position_ids, ref.position_ids)
    assert b.cu_seqlens.dtype == torch.int32 and torch.equal(b.cu_seqlens, ref.cu_seqlens)
    assert b.max_seqlen == 3


def test_concurrent_encode_from_threads(tiny, sentences):
    """Several threads encode at once (one also changes max_seq_length): each result equals the
    single-threaded one."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [sentences[i * 40:(i + 1) * 40] for i in range(8)]
    expected = [tiny.encode(c, batch_size=8) for c in chunks]

    def work(i):
        return tiny.encode(chunks[i], batch_size=8)

    with ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(work, i) for i in range(8)]
        tiny.max_seq_length = tiny.max_seq_length  # rebuilds the tokenizer while others encode
        results = [f.result() for f in futures]
    for got, exp in zip(results, expected):
        np.testing.assert_allclose(got, exp, atol=1e-6)

