"""sentence-transformers 6.x API surface beyond encode(): the ``inputs``/``sentences`` names,
``encode_multi_process``, ``tokenize`` and ``save``/``save_pretrained``, each against
sentence-transformers itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import minilm

TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.", "",
         "A much longer sentence, with punctuation; and numbers like 3.14 and 2026."]


@pytest.fixture(scope="module")
def st_model(real_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(real_model_path), device="cpu")


def test_inputs_and_sentences_names(ml_real):
    ref = ml_real.encode(TEXTS)
    np.testing.assert_array_equal(ml_real.encode(inputs=TEXTS), ref)
    np.testing.assert_array_equal(ml_real.encode(sentences=TEXTS), ref)
    np.testing.assert_array_equal(ml_real.encode_query(inputs=TEXTS[:2]), ml_real.encode(TEXTS[:2], prompt_name="query"))
    with pytest.raises(TypeError, match="both inputs and sentences"):
        ml_real.encode(TEXTS, sentences=TEXTS)


def test_tokenize_matches_sentence_transformers(ml_real, st_model):
    got, ref = ml_real.tokenize(TEXTS), st_model.tokenize(TEXTS)
    assert set(got) == set(ref)
    for k, v in ref.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(got[k], v), k
        else:
            assert got[k] == v, k


def test_encode_multi_process_matches_encode(ml_real):
    pool = ml_real.start_multi_process_pool(["cpu"])
    try:
        got = ml_real.encode_multi_process(TEXTS, pool, normalize_embeddings=True, chunk_size=2)
    finally:
        ml_real.stop_multi_process_pool(pool)
    np.testing.assert_array_equal(got, ml_real.encode(TEXTS, normalize_embeddings=True))
    with pytest.raises(TypeError, match="needs a pool"):
        ml_real.encode_multi_process(TEXTS, None)


@pytest.mark.parametrize("method", ["save", "save_pretrained"])
def test_saved_folder_loads_in_both_with_the_settings(real_model_path, st_model, tmp_path, method):
    from sentence_transformers import SentenceTransformer

    m = minilm.SentenceTransformer(str(real_model_path), device="cpu", prompts={"query": "query: "},
                                   default_prompt_name="query", truncate_dim=96, similarity_fn_name="dot")
    m.max_seq_length = 48
    getattr(m, method)(str(tmp_path / "saved"))
    st2 = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    ml2 = minilm.SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    for loaded in (st2, ml2):
        assert loaded.prompts["query"] == "query: "
        assert loaded.default_prompt_name == "query"
        assert loaded.truncate_dim == 96
        assert loaded.max_seq_length == 48
        assert loaded.similarity_fn_name == "dot"
    long_text = " ".join(["word"] * 200)  # truncated at 48 tokens only if max_seq_length was saved
    a, b = st2.encode(TEXTS + [long_text]), ml2.encode(TEXTS + [long_text])
    assert a.shape == b.shape == (len(TEXTS) + 1, 96)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999
    # And the original model's embeddings with the same settings: the saved weights are the same.
    np.testing.assert_array_equal(b, m.encode(TEXTS + [long_text]))
    pooling = json.loads((tmp_path / "saved" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True and pooling["word_embedding_dimension"] == 384
