"""End-to-end encode() on a CUDA GPU (skipped without one; run by benchmarks/gpu_all.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minilm

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def texts(sts_sentences, scifact_texts):
    return sts_sentences[:500] + scifact_texts


def test_cuda_float32_matches_cpu_and_sentence_transformers(real_model_path, ml_real, texts):
    from sentence_transformers import SentenceTransformer

    gpu = minilm.SentenceTransformer(str(real_model_path), device="cuda", dtype=torch.float32)
    assert gpu.engine.backend == "triton"
    got = gpu.encode(texts, batch_size=64)
    assert _cos(got, ml_real.encode(texts, batch_size=64)).min() >= 0.99999
    st = SentenceTransformer(str(real_model_path), device="cuda")
    assert _cos(got, st.encode(texts, batch_size=64)).min() >= 0.99999


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_close_to_float32(real_model_path, ml_real, texts, dtype):
    gpu = minilm.SentenceTransformer(str(real_model_path), device="cuda", dtype=dtype)
    got = gpu.encode(texts, batch_size=64)
    assert got.dtype == (np.float16 if dtype == torch.float16 else np.float32)
    cos = _cos(got, ml_real.encode(texts, batch_size=64))
    assert cos.min() >= (0.999 if dtype == torch.float16 else 0.995), cos.min()


def test_cuda_default_dtype_is_float16(real_model_path):
    assert minilm.SentenceTransformer(str(real_model_path), device="cuda").dtype == torch.float16


def test_cuda_batch_invariance_bound(real_model_path, texts):
    """Measured, not bitwise: GPU kernels may pick other tilings for other batch shapes."""
    gpu = minilm.SentenceTransformer(str(real_model_path), device="cuda", dtype=torch.float32)
    a = gpu.encode(texts, batch_size=64)
    b = gpu.encode(texts[::-1], batch_size=7)[::-1]
    assert np.abs(a - b).max() < 1e-5
