"""Similarity functions (minilm.cos_sim & co.) and model.similarity against sentence-transformers."""

from __future__ import annotations

import torch

import minilm
from conftest import max_abs_err

def test_similarity_functions_match_sentence_transformers(st_float):
    from sentence_transformers import util

    a, b = st_float[:7], st_float[7:12]
    names = ["cos_sim", "dot_score", "euclidean_sim", "manhattan_sim"]
    for name in names:
        ours, ref = getattr(minilm, name), getattr(util, name)
        for x, y in ((a, b), (torch.from_numpy(a), torch.from_numpy(b)), (a[0], b), (list(a), list(b)),
                     (torch.from_numpy(a).half(), torch.from_numpy(b).half())):
            o, r = ours(x, y), ref(x, y)
            assert o.shape == r.shape and o.dtype == r.dtype == torch.float32, name
            assert max_abs_err(o, r) < 1e-5, name
        po, pr = getattr(minilm, "pairwise_" + name)(a[:5], b), getattr(util, "pairwise_" + name)(a[:5], b)
        assert po.shape == pr.shape == (5,) and max_abs_err(po, pr) < 1e-5, name



def test_similarity_matches(ml_real, st_real, sentences):
    a = ml_real.encode(sentences[:6])
    b = ml_real.encode(sentences[6:10])
    saved = ml_real.similarity_fn_name, st_real.similarity_fn_name
    try:
        for name in ("cosine", "dot", "euclidean", "manhattan"):
            ml_real.similarity_fn_name = name
            st_real.similarity_fn_name = name
            torch.testing.assert_close(ml_real.similarity(a, b), st_real.similarity(a, b), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ml_real.similarity_pairwise(a[:4], b), st_real.similarity_pairwise(a[:4], b),
                                       atol=1e-5, rtol=1e-5)
    finally:  # session fixtures: later tests must see them unchanged even when this one fails
        ml_real.similarity_fn_name, st_real.similarity_fn_name = saved

