"""encode() options beyond the basics, quantization, similarity functions and semantic search,
each checked against sentence-transformers on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import minilm

ATOL = 1e-4
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _max_err(a, b) -> float:
    return float(np.abs(_np(a).astype(np.float64) - _np(b).astype(np.float64)).max())


@pytest.fixture(scope="module")
def texts(sts_sentences):
    # Unique sentences: duplicates would make exact score ties, whose order is arbitrary.
    return list(dict.fromkeys(sts_sentences))[:96]


@pytest.fixture(scope="module")
def st_float(st_real, texts):
    return st_real.encode(texts)


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


# --------------------------------------------------------------- encode_query / encode_document
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
            assert _max_err(ours, ref) < ATOL, i
        # The prompt really applies: encode_document with the empty "document" prompt is plain encode().
        np.testing.assert_allclose(ml_real.encode_document(docs), ml_real.encode(docs, prompt=""), atol=1e-6)
        assert _max_err(ml_real.encode_query(q), ml_real.encode(q, prompt="")) > 1e-2
    # Without "document", the next candidate ("passage") is used.
    with _prompts((ml_real, st_real), {"query": "", "passage": "passage: ", "corpus": "corpus: "}):
        ours, ref = ml_real.encode_document(docs), st_real.encode_document(docs)
        assert _max_err(ours, ref) < ATOL
        np.testing.assert_allclose(ours, ml_real.encode(docs, prompt="passage: "), atol=1e-6)


# ------------------------------------------------------------------- output_value variants
def test_token_embeddings_match_sentence_transformers(ml_real, st_real, texts):
    batch = texts[:10] + ["", "a"]
    ours = ml_real.encode(batch, output_value="token_embeddings", batch_size=5)
    ref = st_real.encode(batch, output_value="token_embeddings", batch_size=5)
    assert isinstance(ours, list) and len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert isinstance(o, torch.Tensor) and o.shape == r.shape  # special tokens kept, padding dropped
        assert _max_err(o, r) < ATOL
    one = ml_real.encode("A man plays a guitar.", output_value="token_embeddings", prompt="query: ")
    ref_one = st_real.encode("A man plays a guitar.", output_value="token_embeddings", prompt="query: ")
    assert one.shape == ref_one.shape and _max_err(one, ref_one) < ATOL


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
        assert _max_err(o["token_embeddings"], r["token_embeddings"][:n]) < ATOL
        # truncate_dim applies; normalize_embeddings does not (as in sentence-transformers).
        assert o["sentence_embedding"].shape == (100,)
        assert _max_err(o["sentence_embedding"], r["sentence_embedding"]) < ATOL
        assert float(o["sentence_embedding"].norm()) < 0.9

    single = ml_real.encode("Just one.", output_value=None, prompt="query: ")
    ref_single = st_real.encode("Just one.", output_value=None, prompt="query: ")
    assert isinstance(single, dict) and list(single) == list(ref_single)
    assert single["prompt_length"] == ref_single["prompt_length"]
    assert torch.equal(single["input_ids"], ref_single["input_ids"])
    assert ml_real.encode([], output_value=None) == []
    with pytest.raises(ValueError, match="precision='int8' needs output_value"):
        ml_real.encode(batch, output_value=None, precision="int8")


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_precision_matches_sentence_transformers(ml_real, st_real, texts, st_float, precision):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    batch = texts[:48]
    ours = ml_real.encode(batch, precision=precision)
    # sentence-transformers' encode(precision=p) is exactly quantize_embeddings(encode(), p); its
    # float embeddings are computed once (fixture) and encode(precision=...) is called below.
    ref = st_quantize(st_float[:48], precision)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    if precision == "float32":
        assert _max_err(ours, ref) < ATOL
    elif precision.endswith("int8"):
        # Codes are floors of bucket positions: float noise ~1e-7 can cross a bucket edge.
        diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 2e-3
    else:
        bits = np.unpackbits(ours.view(np.uint8) ^ ref.view(np.uint8))
        assert bits.sum() <= 2  # a sign flip needs a value within float noise of 0

    t = ml_real.encode(batch[:4], precision=precision, convert_to_tensor=True)
    t_ref = st_real.encode(batch[:4], precision=precision, convert_to_tensor=True)
    assert _max_err(t, t_ref) <= 1
    assert isinstance(t, torch.Tensor) and t.dtype == t_ref.dtype and t.shape == t_ref.shape
    assert t.device == t_ref.device  # like sentence-transformers: quantized codes are CPU tensors
    lst = ml_real.encode(batch[:4], precision=precision, convert_to_numpy=False)
    lst_ref = st_real.encode(batch[:4], precision=precision, convert_to_numpy=False)
    assert isinstance(lst, list) and len(lst) == 4 and type(lst[0]) is type(lst_ref[0])
    assert lst[0].dtype == lst_ref[0].dtype
    if precision in ("float32", "binary", "ubinary"):
        one, one_ref = ml_real.encode(batch[0], precision=precision), st_real.encode(batch[0], precision=precision)
        assert one.shape == one_ref.shape and one.dtype == one_ref.dtype
    else:
        with pytest.raises(ValueError, match="single embedding"):
            ml_real.encode(batch[0], precision=precision)
    empty = ml_real.encode([], precision=precision)
    assert isinstance(empty, np.ndarray) and empty.shape == (0,)


def test_precision_on_token_embeddings(ml_real, st_real, texts):
    ours = ml_real.encode(texts[:6], output_value="token_embeddings", precision="int8")
    ref = st_real.encode(texts[:6], output_value="token_embeddings", precision="int8")
    for o, r in zip(ours, ref):
        assert isinstance(o, np.ndarray) and o.dtype == r.dtype == np.int8 and o.shape == r.shape
        assert np.abs(o.astype(np.int16) - r.astype(np.int16)).max() <= 1


def test_quantize_embeddings_function_equals_sentence_transformers(st_float):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    emb = st_float
    calib, rest = emb[:60], emb[60:]
    ranges = np.vstack([calib.min(0), calib.max(0)])
    cases = [
        (emb, {}),
        (rest, {"calibration_embeddings": calib}),
        (rest, {"ranges": ranges}),
        (rest[0], {"ranges": ranges}),                       # a single embedding with ranges
        (emb[:, :100], {}),                                  # 100 dims: 13 packed bytes
        (emb.astype(np.float16), {}),
        (torch.from_numpy(emb), {}),
        (list(torch.from_numpy(emb[:20])), {}),              # list of 1-D tensors
        (np.zeros((0, 384), np.float32), {}),
    ]
    for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
        for i, (x, kw) in enumerate(cases):
            ours, ref = minilm.quantize_embeddings(x, precision, **kw), st_quantize(x, precision, **kw)
            assert isinstance(ours, np.ndarray) and ours.dtype == ref.dtype, (precision, i)
            np.testing.assert_array_equal(ours, ref, err_msg=f"{precision} case {i}")
        # Token-embedding matrices share one calibration.
        mats = [emb[:5], emb[5:7], emb[7:20]]
        ours, ref = minilm.quantize_embeddings(mats, precision), st_quantize(mats, precision)
        assert len(ours) == 3 and all(np.array_equal(o, r) for o, r in zip(ours, ref))


def test_quantize_embeddings_errors(st_float):
    emb = st_float[:10]
    with pytest.raises(ValueError, match="'int4'"):
        minilm.quantize_embeddings(emb, "int4")
    with pytest.raises(ValueError, match="'fp8'"):
        minilm.quantize_embeddings(emb, "fp8")
    with pytest.raises(ValueError, match="single embedding"):
        minilm.quantize_embeddings(emb[:1], "int8")
    with pytest.raises(ValueError, match="single embedding"):
        minilm.quantize_embeddings(emb[0], "uint8")
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 384\).*\(3, 384\)"):
        minilm.quantize_embeddings(emb, "int8", ranges=np.zeros((3, 384)))
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 384\).*\(2, 100\)"):
        minilm.quantize_embeddings(emb, "int8", ranges=np.zeros((2, 100)))
    with pytest.raises(ValueError, match=r"calibration_embeddings must have shape \(n, 384\)"):
        minilm.quantize_embeddings(emb, "int8", calibration_embeddings=emb[:, :10])
    with pytest.raises(ValueError, match="floating point, got dtype int8"):
        minilm.quantize_embeddings(minilm.quantize_embeddings(emb, "int8"), "int8")


def test_encode_precision_errors(ml_real):
    with pytest.raises(ValueError, match="Precision 'int4' is not supported"):
        ml_real.encode(["a", "b"], precision="int4")
    with pytest.raises(ValueError, match="Precision 'binary8'"):
        ml_real.encode_query(["a", "b"], precision="binary8")


# ---------------------------------------------------------------------------- truncate_dim
def test_truncate_dim_after_normalize_module_and_before_normalize_embeddings(ml_real, st_real, real_model_path,
                                                                             texts):
    batch = texts[:8]
    for kw in ({"truncate_dim": 64}, {"truncate_dim": 64, "normalize_embeddings": True}):
        ours, ref = ml_real.encode(batch, **kw), st_real.encode(batch, **kw)
        assert ours.shape == ref.shape == (8, kw["truncate_dim"]) and _max_err(ours, ref) < ATOL
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


# ------------------------------------------------------------------------ output conversion
def test_conversions_match_sentence_transformers(ml_real, st_real, texts):
    batch = texts[:3]
    for inp in (batch, batch[0]):
        for kw in ({}, {"convert_to_tensor": True, "normalize_embeddings": True}, {"convert_to_numpy": False},
                   {"convert_to_tensor": True, "convert_to_numpy": False}):
            ours, ref = ml_real.encode(inp, **kw), st_real.encode(inp, **kw)
            assert type(ours) is type(ref), kw
            if isinstance(ref, list):
                assert len(ours) == len(ref) and all(o.shape == r.shape for o, r in zip(ours, ref))
                assert _max_err(torch.stack(ours), torch.stack(ref)) < ATOL
            else:
                assert tuple(ours.shape) == tuple(ref.shape) and ours.dtype == ref.dtype, kw
                assert _max_err(ours, ref) < ATOL
            if isinstance(ours, torch.Tensor):
                assert ours.device == ml_real.device
    for kw in ({}, {"convert_to_tensor": True}, {"convert_to_numpy": False}):
        ours, ref = ml_real.encode([], **kw), st_real.encode([], **kw)
        assert type(ours) is type(ref) and len(ours) == len(ref) == 0, kw


# ---------------------------------------------------------------------------- similarity
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
            assert _max_err(o, r) < 1e-5, name
        po, pr = getattr(minilm, "pairwise_" + name)(a[:5], b), getattr(util, "pairwise_" + name)(a[:5], b)
        assert po.shape == pr.shape == (5,) and _max_err(po, pr) < 1e-5, name


# ------------------------------------------------------------------------- semantic_search
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


def test_semantic_search_scifact(ml_real, st_real, scifact_texts, texts, tmp_path):
    from sentence_transformers import util

    docs, qs = scifact_texts[:8], texts[:8]
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


# ---------------------------------------------------------------------------------- CLI
def test_cli_search(tmp_path, ml_real, texts, monkeypatch, capsys):
    from minilm import cli

    corpus_file = tmp_path / "corpus.txt"
    corpus = texts[:24]
    corpus_file.write_text("\n".join(corpus[:10]) + "\n\n" + "\n".join(corpus[10:]) + "\n", encoding="utf-8")
    qs = [texts[3], texts[15]]
    expect = minilm.semantic_search(ml_real.encode_query(qs), ml_real.encode_document(corpus), top_k=3)
    cache = tmp_path / "emb.npy"

    r = subprocess.run([sys.executable, "-m", "minilm.cli", "search", str(corpus_file), *qs, "--top-k", "3",
                        "--json", "--save-corpus", str(cache)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["query"] for row in rows] == qs
    for row, hits in zip(rows, expect):
        assert [h["text"] for h in row["hits"]] == [corpus[h["corpus_id"]] for h in hits]
        # Line numbers are the file's, counting the blank line that was skipped.
        assert [h["line"] for h in row["hits"]] == [i + 1 + (i >= 10) for i in (h["corpus_id"] for h in hits)]
        np.testing.assert_allclose([h["score"] for h in row["hits"]], [h["score"] for h in hits], atol=1e-5)
    # One cached row per line, the blank one included (as `encode --output` writes them).
    np.testing.assert_allclose(np.load(cache), ml_real.encode_document(corpus[:10] + [""] + corpus[10:]),
                               atol=1e-5)

    # Queries from stdin, the cached corpus reused, a readable table.
    monkeypatch.setattr(sys, "stdin", io.StringIO(qs[0] + "\n\n" + qs[1] + "\n"))
    assert cli.main(["search", str(corpus_file), "-k", "2", "--save-corpus", str(cache), "--offline"]) == 0
    out, err = capsys.readouterr()
    assert "loaded corpus embeddings" in err
    assert f"query: {qs[0]}" in out and f"query: {qs[1]}" in out and "rank" in out and "score" in out
    best = expect[0][0]
    assert f"{best['score']:.4f}" in out and corpus[best["corpus_id"]][:50] in out

    qfile = tmp_path / "q.txt"
    qfile.write_text(qs[1] + "\n", encoding="utf-8")
    assert cli.main(["search", str(corpus_file), "--queries", str(qfile), "--top-k", "0", "--offline"]) == 2
    assert "--top-k must be a positive integer, got 0" in capsys.readouterr().err
