"""encode() against sentence-transformers' encode() on the same model and texts."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from conftest import compare_encode, cosines, max_abs_err, save_random_bert, save_st_model, spearman_x100

ATOL = 1e-6  # sentence embeddings (unit vectors): measured 1.5e-7


def test_real_model_sts_dev_matches_sentence_transformers(ml_real, st_real, sts_rows, sts_sentences):
    ours = ml_real.encode(sts_sentences, batch_size=64)
    ref = st_real.encode(sts_sentences, batch_size=64)
    assert ours.shape == ref.shape == (3000, 384) and ours.dtype == np.float32
    cos = cosines(ours, ref)
    assert cos.min() >= 0.99999, (cos.min(), int(cos.argmin()))
    assert np.abs(ours - ref).max() < 1e-5

    gold = np.array([s for s, _, _ in sts_rows])
    sp_ours = spearman_x100(ours, gold)
    sp_ref = spearman_x100(ref, gold)
    assert abs(sp_ours - sp_ref) <= 1e-4, (sp_ours, sp_ref)
    assert abs(sp_ref - 86.716) < 0.01  # the published reference for this data and model


def test_real_model_truncates_like_sentence_transformers(ml_real, st_real, paragraphs):
    assert ml_real.max_seq_length == st_real.max_seq_length == 256
    # 16 texts over the 256-token cap: the three long paragraphs and pairs of the others.
    long = paragraphs[-3:] + [" ".join(paragraphs[i:i + 2]) for i in range(0, 26, 2)]
    assert all(len(ids) == 256 for ids in ml_real.tokenizer.encode(long))
    ours = ml_real.encode(long, batch_size=5)
    ref = st_real.encode(long, batch_size=5)
    assert cosines(ours, ref).min() >= 0.99999


def test_normalize_embeddings_and_tensor_outputs(ml_real, st_real, sentences):
    texts = sentences[:10]
    ours = ml_real.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    ref = st_real.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    assert isinstance(ours, torch.Tensor) and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    lst = ml_real.encode(texts, convert_to_numpy=False)
    assert isinstance(lst, list) and len(lst) == 10 and lst[0].shape == (384,)


POOLINGS = [
    ("cls",), ("max",), ("mean",), ("mean_sqrt_len_tokens",), ("weightedmean",), ("lasttoken",),
    ("cls", "mean", "max"), ("weightedmean", "cls", "lasttoken", "mean_sqrt_len_tokens"),
]


@pytest.fixture(scope="module")
def random_hf(tmp_path_factory, real_model_path):
    return save_random_bert(tmp_path_factory.mktemp("hf"), real_model_path, max_position_embeddings=96)


def _check_same(folder, texts, rel_tol=1e-5, **encode_kwargs):
    err, ml, st = compare_encode(folder, texts, **encode_kwargs)
    assert err <= rel_tol, err
    return ml, st


@pytest.mark.parametrize("modes", POOLINGS, ids=["+".join(m) for m in POOLINGS])
def test_pooling_modes_match(tmp_path, random_hf, sentences, paragraphs, modes):
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=modes)
    _check_same(folder, sentences[:30] + paragraphs[:4])


def test_dense_and_normalize_match(tmp_path, random_hf, sentences, paragraphs):
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=("cls", "mean"),
                           dense=[(48, "Tanh"), (24, "GELU")], normalize=True)
    ml, _ = _check_same(folder, sentences[:30] + paragraphs[:4])
    assert ml.get_sentence_embedding_dimension() == 24


@pytest.mark.parametrize("include_prompt", [True, False])
@pytest.mark.parametrize("modes", [("mean",), ("cls", "max", "weightedmean", "lasttoken")], ids=["mean", "mixed"])
def test_prompts_match(tmp_path, random_hf, sentences, paragraphs, include_prompt, modes):
    prompts = {"query": "query: ", "document": "passage: ", "long": "Represent this scientific sentence for retrieval: "}
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=modes, include_prompt=include_prompt,
                           prompts=prompts, default_prompt_name="query")
    texts = sentences[:12] + paragraphs[:2] + ["", "a"]
    ml, st = _check_same(folder, texts)  # default prompt
    assert ml.prompts == st.prompts and ml.default_prompt_name == st.default_prompt_name == "query"
    _check_same(folder, texts, prompt_name="long")
    _check_same(folder, texts, prompt="custom prefix ")
    _check_same(folder, texts, prompt="")


def test_max_seq_length_override_matches(tmp_path, random_hf, paragraphs):
    folder = save_st_model(tmp_path / "st", random_hf, max_seq_length=40)
    ml, st = _check_same(folder, paragraphs[:6])
    assert ml.max_seq_length == 40
    ml.max_seq_length = 17
    st.max_seq_length = 17
    np.testing.assert_allclose(ml.encode(paragraphs[:6]), st.encode(paragraphs[:6]), atol=1e-5)


def test_plain_hf_folder_uses_mean_pooling(random_hf, sentences):
    _check_same(random_hf, sentences[:20])


@contextlib.contextmanager
def _prompts(models, prompts, default_prompt_name=None):
    saved = [(m.prompts, m.default_prompt_name) for m in models]
    try:
        for m in models:
            m.prompts = dict(prompts)
            m.default_prompt_name = default_prompt_name
        yield
    finally:
        for m, (p, d) in zip(models, saved):
            m.prompts, m.default_prompt_name = p, d


def test_encode_query_and_document_pick_prompts_like_sentence_transformers(ml_real, st_real, texts):
    q, docs = texts[:2], texts[2:4]
    prompts = {"query": "query: ", "document": "", "passage": "passage: ", "corpus": "corpus: "}
    with _prompts((ml_real, st_real), prompts, default_prompt_name="passage"):
        calls = [
            lambda m: m.encode_query(q),                       # "query: "
            lambda m: m.encode_document(docs),                 # "document" exists and is "": no prompt
            lambda m: m.encode(docs),                          # default_prompt_name -> "passage: "
            lambda m: m.encode_query(q, prompt_name="corpus"),
            lambda m: m.encode_query(q[0]),                    # single string -> 1-D
            lambda m: m.encode_document(docs, None, None, 2, False, "sentence_embedding", "float32", False, True),
        ]
        for i, call in enumerate(calls):
            ours, ref = call(ml_real), call(st_real)
            assert type(ours) is type(ref) and tuple(ours.shape) == tuple(ref.shape), i
            assert max_abs_err(ours, ref) < ATOL, i
        # The prompt really applies: encode_document with the empty "document" prompt is plain encode().
        np.testing.assert_allclose(ml_real.encode_document(docs), ml_real.encode(docs, prompt=""), atol=1e-6)
        assert max_abs_err(ml_real.encode_query(q), ml_real.encode(q, prompt="")) > 1e-2
    # Without "document", the next candidate ("passage") is used.
    with _prompts((ml_real, st_real), {"query": "", "passage": "passage: ", "corpus": "corpus: "}):
        ours, ref = ml_real.encode_document(docs), st_real.encode_document(docs)
        assert max_abs_err(ours, ref) < ATOL
        np.testing.assert_allclose(ours, ml_real.encode(docs, prompt="passage: "), atol=1e-6)

