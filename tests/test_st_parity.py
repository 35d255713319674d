"""encode() against sentence-transformers' encode() on the same model and texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save_random_bert, save_st_model


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def test_real_model_sts_dev_matches_sentence_transformers(ml_real, st_real, sts_rows, sts_sentences):
    ours = ml_real.encode(sts_sentences, batch_size=64)
    ref = st_real.encode(sts_sentences, batch_size=64)
    assert ours.shape == ref.shape == (3000, 384) and ours.dtype == np.float32
    cos = _cosines(ours, ref)
    assert cos.min() >= 0.99999, (cos.min(), int(cos.argmin()))
    assert np.abs(ours - ref).max() < 1e-5

    gold = np.array([s for s, _, _ in sts_rows])
    sp_ours = _spearman(_cosines(ours[0::2], ours[1::2]), gold) * 100
    sp_ref = _spearman(_cosines(ref[0::2], ref[1::2]), gold) * 100
    assert abs(sp_ours - sp_ref) <= 1e-4, (sp_ours, sp_ref)
    assert abs(sp_ref - 86.716) < 0.01  # the published reference for this data and model


def test_real_model_truncates_like_sentence_transformers(ml_real, st_real, scifact_texts):
    assert ml_real.max_seq_length == st_real.max_seq_length == 256
    ours = ml_real.encode(scifact_texts[:16], batch_size=5)
    ref = st_real.encode(scifact_texts[:16], batch_size=5)
    assert _cosines(ours, ref).min() >= 0.99999


def test_normalize_embeddings_and_tensor_outputs(ml_real, st_real, sts_sentences):
    texts = sts_sentences[:10]
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
    import minilm
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    ml = minilm.SentenceTransformer(str(folder), device="cpu")
    assert ml.max_seq_length == st.max_seq_length
    assert ml.get_sentence_embedding_dimension() == st.get_embedding_dimension()
    ref = st.encode(texts, batch_size=7, **encode_kwargs)
    ours = ml.encode(texts, batch_size=7, **encode_kwargs)
    assert ours.shape == ref.shape
    scale = max(np.abs(ref).max(), 1e-12)
    err = np.abs(ours - ref).max() / scale
    assert err <= rel_tol, err
    return ml, st


@pytest.mark.parametrize("modes", POOLINGS, ids=["+".join(m) for m in POOLINGS])
def test_pooling_modes_match(tmp_path, random_hf, sts_sentences, scifact_texts, modes):
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=modes)
    _check_same(folder, sts_sentences[:30] + scifact_texts[:4])


def test_dense_and_normalize_match(tmp_path, random_hf, sts_sentences, scifact_texts):
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=("cls", "mean"),
                           dense=[(48, "Tanh"), (24, "GELU")], normalize=True)
    ml, _ = _check_same(folder, sts_sentences[:30] + scifact_texts[:4])
    assert ml.get_sentence_embedding_dimension() == 24


@pytest.mark.parametrize("include_prompt", [True, False])
@pytest.mark.parametrize("modes", [("mean",), ("cls", "max", "weightedmean", "lasttoken")], ids=["mean", "mixed"])
def test_prompts_match(tmp_path, random_hf, sts_sentences, scifact_texts, include_prompt, modes):
    prompts = {"query": "query: ", "document": "passage: ", "long": "Represent this scientific sentence for retrieval: "}
    folder = save_st_model(tmp_path / "st", random_hf, pooling_mode=modes, include_prompt=include_prompt,
                           prompts=prompts, default_prompt_name="query")
    texts = sts_sentences[:12] + scifact_texts[:2] + ["", "a"]
    ml, st = _check_same(folder, texts)  # default prompt
    assert ml.prompts == st.prompts and ml.default_prompt_name == st.default_prompt_name == "query"
    _check_same(folder, texts, prompt_name="long")
    _check_same(folder, texts, prompt="custom prefix ")
    _check_same(folder, texts, prompt="")


def test_max_seq_length_override_matches(tmp_path, random_hf, scifact_texts):
    folder = save_st_model(tmp_path / "st", random_hf, max_seq_length=40)
    ml, st = _check_same(folder, scifact_texts[:6])
    assert ml.max_seq_length == 40
    ml.max_seq_length = 17
    st.max_seq_length = 17
    np.testing.assert_allclose(ml.encode(scifact_texts[:6]), st.encode(scifact_texts[:6]), atol=1e-5)


def test_plain_hf_folder_uses_mean_pooling(random_hf, sts_sentences):
    _check_same(random_hf, sts_sentences[:20])


def test_similarity_matches(ml_real, st_real, sts_sentences):
    a = ml_real.encode(sts_sentences[:6])
    b = ml_real.encode(sts_sentences[6:10])
    for name in ("cosine", "dot", "euclidean", "manhattan"):
        ml_real.similarity_fn_name = name
        st_real.similarity_fn_name = name
        torch.testing.assert_close(ml_real.similarity(a, b), st_real.similarity(a, b), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ml_real.similarity_pairwise(a[:4], b), st_real.similarity_pairwise(a[:4], b),
                                   atol=1e-5, rtol=1e-5)
    ml_real.similarity_fn_name = st_real.similarity_fn_name = "cosine"
