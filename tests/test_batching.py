"""Padding-free batching: unpadded vs padded forward, order restoration, the token budget,
and batch invariance."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import minilm
from minilm.model import padded_sdpa, sdpa_per_run
from minilm.varlen import VarlenBatch, make_varlen_batch


def test_run_attention_matches_padded_attention(ml_real, sts_sentences, scifact_texts):
    """The CPU path (SDPA per run of equal lengths) against masked SDPA on the padded batch,
    and the whole encoder against a padded plain-torch forward of its own weights."""
    texts = sorted(sts_sentences[:40] + scifact_texts[:5], key=len, reverse=True)
    ids = ml_real.tokenizer.encode(texts)
    ids.sort(key=len, reverse=True)
    batch = make_varlen_batch(ids, with_token_types=False)
    torch.manual_seed(0)
    qkv = torch.randn(batch.total_tokens, 3, 12, 32)
    torch.testing.assert_close(sdpa_per_run(qkv, batch), padded_sdpa(qkv, batch), atol=2e-6, rtol=0)
    # Unsorted batches still work (every run then has one sequence).
    random.Random(0).shuffle(ids)
    b2 = make_varlen_batch(ids, with_token_types=False)
    qkv2 = torch.randn(b2.total_tokens, 3, 12, 32)
    torch.testing.assert_close(sdpa_per_run(qkv2, b2), padded_sdpa(qkv2, b2), atol=2e-6, rtol=0)


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


def test_unpadded_forward_matches_padded_forward(ml_real, sts_sentences, scifact_texts):
    ids = ml_real.tokenizer.encode(sts_sentences[:30] + scifact_texts[:3])
    with torch.inference_mode():
        got = ml_real.encoder(make_varlen_batch(ids, with_token_types=False))
        ref = _padded_reference_forward(ml_real.encoder, ids)
    assert (got - ref).abs().max().item() < 2e-5


def test_order_is_restored(ml_real, sts_sentences):
    texts = sts_sentences[:50]
    full = ml_real.encode(texts, batch_size=8)
    for i in (0, 17, 49):
        np.testing.assert_array_equal(full[i], ml_real.encode(texts[i]))


def test_token_budget_is_respected(real_model_path, sts_sentences, scifact_texts):
    m = minilm.SentenceTransformer(str(real_model_path), device="cpu", max_batch_tokens=600)
    texts = sts_sentences[:200] + scifact_texts[:10]
    seen = []
    orig = m.engine.forward_ids

    def spy(ids, device):
        seen.append((len(ids), max(map(len, ids)), sum(map(len, ids))))
        return orig(ids, device)

    m.engine.forward_ids = spy
    out = m.encode(texts, batch_size=64)
    assert out.shape == (210, 384)
    assert sum(n for n, _, _ in seen) == 210
    for n, longest, _ in seen:
        assert n <= 64
        assert n == 1 or n * longest <= 600, (n, longest)
    # The budget, not batch_size, cut the long texts' batches: at most 2 of 256 tokens.
    assert max(n for n, longest, _ in seen if longest == 256) == 2
    np.testing.assert_array_equal(out, m.encode(texts, batch_size=64))


def test_batch_invariance_is_bitwise_on_cpu(ml_real, sts_sentences, scifact_texts):
    """A text's float32 embedding does not depend on the other texts in the call, their order,
    batch_size or the token budget: bitwise, on this CPU path."""
    probe = sts_sentences[:25] + scifact_texts[:3] + ["a", "", "Short one."]
    base = ml_real.encode(probe, batch_size=len(probe))
    rng = random.Random(1)
    others = sts_sentences[100:400] + scifact_texts[3:12]
    worst = 0.0
    for batch_size, budget in [(1, None), (3, None), (16, None), (64, 2048), (128, 16384), (7, 300)]:
        mix = probe + rng.sample(others, 60)
        order = list(range(len(mix)))
        rng.shuffle(order)
        ml_real.max_batch_tokens = budget
        try:
            out = ml_real.encode([mix[i] for i in order], batch_size=batch_size)
        finally:
            ml_real.max_batch_tokens = None
        got = out[np.argsort(order)][: len(probe)]
        worst = max(worst, float(np.abs(got - base).max()))
    assert worst == 0.0, worst


def test_chunked_encoding_equals_one_chunk(ml_real, sts_sentences):
    texts = sts_sentences[:60]
    whole = ml_real.encode(texts, batch_size=16)
    ml_real.chunk_size = 7  # chunk boundaries fall inside batches, prompts and all
    try:
        chunked = ml_real.encode(texts, batch_size=16)
        toks = ml_real.encode(texts[:10], output_value="token_embeddings")
    finally:
        ml_real.chunk_size = None
    np.testing.assert_array_equal(chunked, whole)
    ref_toks = ml_real.encode(texts[:10], output_value="token_embeddings")
    assert all(torch.equal(a, b) for a, b in zip(toks, ref_toks))


def test_bfloat16_stays_close_to_float32_on_sts_dev(real_model_path, ml_real, sts_rows, sts_sentences):
    """bfloat16 against our own float32 on STS-dev: per-text cosine and the Spearman.
    On CPUs without bf16 matrix units bf16 is emulated and slow, so CI takes the first 500
    pairs; benchmarks/bench_encode.py reports the full set."""
    from conftest import spearman_x100

    n = 1000
    bf = minilm.SentenceTransformer(str(real_model_path), device="cpu", dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    e16 = bf.encode(sts_sentences[:n], batch_size=64)
    e32 = ml_real.encode(sts_sentences[:n], batch_size=64)
    assert e16.dtype == np.float32  # numpy has no bfloat16: outputs are upcast like sentence-transformers'
    cos = (e16 * e32).sum(1) / (np.linalg.norm(e16, axis=1) * np.linalg.norm(e32, axis=1))
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
