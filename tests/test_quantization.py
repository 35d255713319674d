"""Quantized outputs: encode(precision=...) and quantize_embeddings against sentence-transformers
on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minilm
from conftest import max_abs_err

ATOL = 1e-6  # measured: 1.5e-7 on these unit vectors

def _assert_same_codes(ours: np.ndarray, ref: np.ndarray, precision: str, flip_share: float = 2e-3) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    if precision == "float32":
        assert max_abs_err(ours, ref) < ATOL
    elif precision.endswith("int8"):
        # Codes are floors of bucket positions: float noise ~1e-7 can cross a bucket edge.
        diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < flip_share
    else:
        bits = np.unpackbits(ours.view(np.uint8) ^ ref.view(np.uint8))
        assert bits.sum() <= 2  # a sign flip needs a value within float noise of 0


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_precision_matches_sentence_transformers(ml_real, st_real, texts, st_float, precision):
    from sentence_transformers.util import quantize_embeddings as st_quantize

    batch = texts[:48]
    ours = ml_real.encode(batch, precision=precision)
    # sentence-transformers' encode(precision=p) is exactly quantize_embeddings(encode(), p); its
    # float embeddings are computed once (fixture) and encode(precision=...) is called below.
    ref = st_quantize(st_float[:48], precision)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    _assert_same_codes(ours, ref, precision)

    t = ml_real.encode(batch[:4], precision=precision, convert_to_tensor=True)
    t_ref = st_real.encode(batch[:4], precision=precision, convert_to_tensor=True)
    # Four texts calibrate the buckets: each dimension's min and max sit on a bucket edge, so
    # many more codes are one float-noise step away from the next than with 48 texts.
    _assert_same_codes(t.numpy(), t_ref.numpy(), precision, flip_share=0.05)
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

