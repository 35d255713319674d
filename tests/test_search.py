"""minilm.semantic_search against sentence_transformers.util.semantic_search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minilm

def _check_hits(ours, ref, full_scores: np.ndarray, tol: float = 1e-5) -> int:
    """Same format, same scores and the same ranking up to float-noise ties. Returns how many
    queries have identical ranked id lists."""
    assert isinstance(ours, list) and len(ours) == len(ref)
    identical = 0
    for qi, (o, r) in enumerate(zip(ours, ref)):
        assert len(o) == len(r)
        assert all(set(h) == {"corpus_id", "score"} and isinstance(h["corpus_id"], int)
                   and isinstance(h["score"], float) for h in o)
        so, sr = [h["score"] for h in o], [h["score"] for h in r]
        assert so == sorted(so, reverse=True)
        np.testing.assert_allclose(so, sr, atol=tol)
        for h in o:  # every returned score is that corpus entry's true score
            assert abs(h["score"] - full_scores[qi, h["corpus_id"]]) < tol
        cut = sr[-1] + tol  # entries clearly above the k-th score must be the same entries
        assert {h["corpus_id"] for h in o if h["score"] > cut} == {h["corpus_id"] for h in r if h["score"] > cut}
        identical += [h["corpus_id"] for h in o] == [h["corpus_id"] for h in r]
    return identical


def test_semantic_search_matches_sentence_transformers(ml_real, st_float, texts):
    from sentence_transformers import util

    corpus = ml_real.encode(texts, convert_to_tensor=True)
    queries = corpus[::9]
    ref = util.semantic_search(torch.from_numpy(st_float[::9]), torch.from_numpy(st_float), top_k=10)
    full = minilm.cos_sim(queries, corpus).numpy()
    # Tiny chunks: every query's top-k is merged across many corpus chunks and query chunks.
    for qcs, ccs in ((100, 500000), (4, 13), (1, 1)):
        ours = minilm.semantic_search(queries, corpus, query_chunk_size=qcs, corpus_chunk_size=ccs, top_k=10)
        assert _check_hits(ours, ref, full) >= len(ref) - 1
    for name in ("dot_score", "euclidean_sim", "manhattan_sim"):
        fn = getattr(minilm, name)
        ours = minilm.semantic_search(queries, corpus, top_k=5, corpus_chunk_size=50, score_function=fn)
        ref = util.semantic_search(torch.from_numpy(st_float[::9]), torch.from_numpy(st_float), top_k=5,
                                   score_function=getattr(util, name))
        # cdist's matmul formulation leaves ~sqrt(eps) error on near-zero distances (a query
        # against itself), and it differs with the chunk shape, in sentence-transformers too.
        _check_hits(ours, ref, fn(queries, corpus).numpy(), tol=1e-4 if name == "dot_score" else 2e-3)


def test_semantic_search_paragraphs(ml_real, st_real, paragraphs, texts, tmp_path):
    from sentence_transformers import util

    docs, qs = paragraphs[:8], texts[:8]
    corpus, queries = ml_real.encode_document(docs), ml_real.encode_query(qs)
    ref = util.semantic_search(st_real.encode_query(qs, convert_to_tensor=True),
                               st_real.encode_document(docs, convert_to_tensor=True), top_k=5)
    # A memory-mapped numpy corpus is read one chunk at a time.
    mm = np.lib.format.open_memmap(tmp_path / "c.npy", mode="w+", dtype=np.float32, shape=corpus.shape)
    mm[:] = corpus
    mm.flush()
    ours = minilm.semantic_search(queries, np.load(tmp_path / "c.npy", mmap_mode="r"), top_k=5, corpus_chunk_size=7)
    assert _check_hits(ours, ref, minilm.cos_sim(queries, corpus).numpy()) == len(qs)


def test_semantic_search_edge_cases(st_float):
    c = st_float[:30]
    one = minilm.semantic_search(c[3], c, top_k=3)  # 1-D query
    assert len(one) == 1 and one[0][0]["corpus_id"] == 3 and abs(one[0][0]["score"] - 1.0) < 1e-5
    assert len(minilm.semantic_search(c[:2], c, top_k=100)[0]) == 30
    assert minilm.semantic_search(c[:2], np.zeros((0, 384), np.float32)) == [[], []]
    assert minilm.semantic_search(np.zeros((0, 384), np.float32), c) == []
    assert minilm.semantic_search(c[:2], c, top_k=0) == [[], []]
    # int8 codes are scored in float (no integer overflow).
    q8 = minilm.quantize_embeddings(st_float, "int8")
    assert minilm.semantic_search(q8[5], q8, top_k=1, score_function=minilm.dot_score)[0][0]["corpus_id"] == 5
    with pytest.raises(ValueError, match="dimension 100 but corpus embeddings have 384"):
        minilm.semantic_search(c[:2, :100], c)
    with pytest.raises(ValueError, match="corpus_chunk_size must be a positive integer, got 0"):
        minilm.semantic_search(c, c, corpus_chunk_size=0)
    with pytest.raises(ValueError, match="top_k must be a non-negative integer, got -1"):
        minilm.semantic_search(c, c, top_k=-1)

