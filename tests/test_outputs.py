"""What encode() returns: shapes, output_value (token embeddings, feature dicts), truncate_dim and
the numpy/tensor/list conversions, against sentence-transformers; and minilm/outputs.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minilm
from conftest import max_abs_err

ATOL = 1e-6  # sentence embeddings (unit vectors): measured 1.5e-7 to 2.4e-7
TOKEN_ATOL = 1e-5  # token embeddings (values up to ~6): measured 3.6e-6

def test_output_shapes(tiny):
    assert tiny.encode("one").shape == (32,)
    assert tiny.encode(["one", "two"]).shape == (2, 32)
    assert tiny.encode(("one", "two")).dtype == np.float32
    assert tiny.encode(np.array(["one", "two"])).shape == (2, 32)
    empty = tiny.encode([])
    assert isinstance(empty, np.ndarray) and empty.size == 0
    assert tiny.encode([], convert_to_tensor=True).numel() == 0
    toks = tiny.encode(["one two three", "x"], output_value="token_embeddings")
    assert [t.shape[0] for t in toks] == [5, 3]  # [CLS] one two three [SEP] / [CLS] x [SEP]



def test_token_embeddings_match_sentence_transformers(ml_real, st_real, texts):
    batch = texts[:10] + ["", "a"]
    ours = ml_real.encode(batch, output_value="token_embeddings", batch_size=5)
    ref = st_real.encode(batch, output_value="token_embeddings", batch_size=5)
    assert isinstance(ours, list) and len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert isinstance(o, torch.Tensor) and o.shape == r.shape  # special tokens kept, padding dropped
        assert max_abs_err(o, r) < TOKEN_ATOL
    one = ml_real.encode("A man plays a guitar.", output_value="token_embeddings", prompt="query: ")
    ref_one = st_real.encode("A man plays a guitar.", output_value="token_embeddings", prompt="query: ")
    assert one.shape == ref_one.shape and max_abs_err(one, ref_one) < TOKEN_ATOL


def test_output_value_none_gives_feature_dicts(ml_real, st_real, texts):
    batch = texts[:8]
    kw = dict(output_value=None, truncate_dim=100, normalize_embeddings=True, batch_size=5)
    ours, ref = ml_real.encode(batch, **kw), st_real.encode(batch, **kw)
    assert isinstance(ours, list) and len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert list(o) == list(r)  # same keys, same order
        n = o["input_ids"].numel()
        # Ours hold each text's own tokens; sentence-transformers pads rows to the batch's longest.
        assert torch.equal(o["input_ids"], r["input_ids"][:n]) and int(r["attention_mask"].sum()) == n
        assert torch.equal(o["attention_mask"], torch.ones(n, dtype=torch.int64))
        assert torch.equal(o["token_type_ids"], r["token_type_ids"][:n])
        assert o["modality"] == r["modality"] == "text"
        assert o["token_embeddings"].shape == (n, 384)
        assert max_abs_err(o["token_embeddings"], r["token_embeddings"][:n]) < TOKEN_ATOL
        # truncate_dim applies; normalize_embeddings does not (as in sentence-transformers).
        assert o["sentence_embedding"].shape == (100,)
        assert max_abs_err(o["sentence_embedding"], r["sentence_embedding"]) < ATOL
        assert float(o["sentence_embedding"].norm()) < 0.9

    single = ml_real.encode("Just one.", output_value=None, prompt="query: ")
    ref_single = st_real.encode("Just one.", output_value=None, prompt="query: ")
    assert isinstance(single, dict) and list(single) == list(ref_single)
    assert single["prompt_length"] == ref_single["prompt_length"]
    assert torch.equal(single["input_ids"], ref_single["input_ids"])
    assert ml_real.encode([], output_value=None) == []
    with pytest.raises(ValueError, match="precision='int8' needs output_value"):
        ml_real.encode(batch, output_value=None, precision="int8")


def test_truncate_dim_after_normalize_module_and_before_normalize_embeddings(ml_real, st_real, real_model_path,
                                                                             texts):
    batch = texts[:8]
    for kw in ({"truncate_dim": 64}, {"truncate_dim": 64, "normalize_embeddings": True}):
        ours, ref = ml_real.encode(batch, **kw), st_real.encode(batch, **kw)
        assert ours.shape == ref.shape == (8, kw["truncate_dim"]) and max_abs_err(ours, ref) < ATOL
    norms = np.linalg.norm(ml_real.encode(batch, truncate_dim=64), axis=1)
    assert norms.max() < 0.9  # the model's Normalize ran before truncation
    np.testing.assert_allclose(np.linalg.norm(ml_real.encode(batch, truncate_dim=64, normalize_embeddings=True),
                                              axis=1), 1.0, atol=1e-5)

    short = minilm.SentenceTransformer(str(real_model_path), device="cpu", truncate_dim=128)
    assert short.get_sentence_embedding_dimension() == 128
    ref = st_real.encode(batch, truncate_dim=128)
    np.testing.assert_allclose(short.encode(batch), ref, atol=ATOL)
    np.testing.assert_allclose(short.encode(batch, truncate_dim=32), ref[:, :32], atol=ATOL)
    with pytest.raises(ValueError, match="truncate_dim=385 is larger than the embedding dimension 384"):
        ml_real.encode(batch, truncate_dim=385)
    with pytest.raises(ValueError, match="truncate_dim=1000 is larger than the embedding dimension 384"):
        minilm.SentenceTransformer(str(real_model_path), device="cpu", truncate_dim=1000)
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer, got 0"):
        ml_real.encode(batch, truncate_dim=0)


def test_conversions_match_sentence_transformers(ml_real, st_real, texts):
    batch = texts[:3]
    for inp in (batch, batch[0]):
        for kw in ({}, {"convert_to_tensor": True, "normalize_embeddings": True}, {"convert_to_numpy": False},
                   {"convert_to_tensor": True, "convert_to_numpy": False}):
            ours, ref = ml_real.encode(inp, **kw), st_real.encode(inp, **kw)
            assert type(ours) is type(ref), kw
            if isinstance(ref, list):
                assert len(ours) == len(ref) and all(o.shape == r.shape for o, r in zip(ours, ref))
                assert max_abs_err(torch.stack(ours), torch.stack(ref)) < ATOL
            else:
                assert tuple(ours.shape) == tuple(ref.shape) and ours.dtype == ref.dtype, kw
                assert max_abs_err(ours, ref) < ATOL
            if isinstance(ours, torch.Tensor):
                assert ours.device == ml_real.device
    for kw in ({}, {"convert_to_tensor": True}, {"convert_to_numpy": False}):
        ours, ref = ml_real.encode([], **kw), st_real.encode([], **kw)
        assert type(ours) is type(ref) and len(ours) == len(ref) == 0, kw



# ------------------------------------------------------------------ minilm/outputs.py directly
@pytest.mark.parametrize("convert_to_numpy, convert_to_tensor", [(True, False), (True, True), (False, False)])
def test_quantized_output_wraps_codes_like_sentence_transformers(st_real, texts, st_float, convert_to_numpy,
                                                                 convert_to_tensor):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    from minilm.outputs import quantized_output

    emb = torch.from_numpy(st_float[:10])
    got = quantized_output(emb, "int8", convert_to_numpy, convert_to_tensor)
    ref = st_real.encode(texts[:10], precision="int8", convert_to_numpy=convert_to_numpy,
                         convert_to_tensor=convert_to_tensor)
    assert type(got) is type(ref)
    if isinstance(ref, list):
        assert len(got) == len(ref) and type(got[0]) is type(ref[0]) and got[0].dtype == ref[0].dtype
        got, ref = torch.stack(got), torch.stack(ref)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if isinstance(got, torch.Tensor):
        assert got.device.type == "cpu"
        got = got.numpy()
    np.testing.assert_array_equal(got, st_quantize(st_float[:10], "int8"))


def test_feature_dicts_hold_each_texts_own_tokens():
    from minilm.outputs import feature_dicts

    ids = [[101, 7, 8, 102], [101, 102]]
    toks = [torch.randn(4, 6), torch.randn(2, 6)]
    sent = torch.randn(2, 6)
    with_types = feature_dicts(ids, toks, sent, with_token_types=True, prompt_length=2)
    assert list(with_types[0]) == ["input_ids", "token_type_ids", "attention_mask", "modality", "prompt_length",
                                   "token_embeddings", "sentence_embedding"]
    assert with_types[1]["input_ids"].tolist() == [101, 102] and with_types[1]["attention_mask"].tolist() == [1, 1]
    assert with_types[0]["token_embeddings"] is toks[0] and torch.equal(with_types[1]["sentence_embedding"], sent[1])
    plain = feature_dicts(ids, toks, sent, with_token_types=False, prompt_length=None)
    assert "token_type_ids" not in plain[0] and "prompt_length" not in plain[0]
