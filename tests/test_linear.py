"""minilm.linear.Linear: the packed-weight oneDNN GEMM against float64 references, its weight
cache, its fallbacks, and the claims its docstring makes (bf16 bit-identical to F.linear,
rows independent of the batch)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from minilm import linear as L
from minilm.config import SUPPORTED_ACTIVATIONS

needs_onednn = pytest.mark.skipif(not L._AVAILABLE, reason="no oneDNN linear ops in this torch build / CPU")
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


def _packs(dtype) -> bool:
    # oneDNN packs bf16 weights where it runs bf16 at all (AVX512BW/VL/DQ or AVX-NE-CONVERT,
    # within any ONEDNN_MAX_CPU_ISA cap): torch's own probe says where.
    if not L._AVAILABLE:
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _layer(k, n, dtype, seed=0):
    torch.manual_seed(seed)
    lin = L.Linear(k, n)
    with torch.no_grad():
        lin.weight.normal_(0, k ** -0.5)
        lin.bias.normal_(0, 0.5)
    return lin.to(dtype)


def _ref(lin, x, activation):
    y = x.double() @ lin.weight.double().T + lin.bias.double()
    return y if activation is None else L.ACTIVATIONS[activation](y)


def test_activation_tables_cover_the_config():
    assert set(L.ACTIVATIONS) == set(SUPPORTED_ACTIVATIONS)
    assert set(L.ONEDNN_POST_OPS) <= set(L.ACTIVATIONS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 37, 91), (16, 384, 1152), (333, 96, 40), (70, 1536, 384)])
@pytest.mark.parametrize("activation", [None, "gelu", "gelu_new", "relu", "silu"])
def test_matches_float64(dtype, shape, activation):
    m, k, n = shape
    lin = _layer(k, n, dtype)
    x = torch.randn(m, k).to(dtype)
    with torch.inference_mode():
        got = lin(x, activation=activation)
    want = _ref(lin, x, activation)
    assert got.dtype == dtype and got.shape == (m, n)
    err = (got.double() - want).norm() / want.norm()
    assert err < TOL[dtype], float(err)
    assert (lin._packed is not None and lin._packed[1] is not None) == _packs(dtype)


@pytest.mark.skipif(not _packs(torch.bfloat16), reason="bf16 weights are not packable on this CPU")
@pytest.mark.parametrize("shape", [(5, 384, 1152), (333, 1536, 384)])
def test_bf16_is_bit_identical_to_f_linear(shape):
    m, k, n = shape
    lin = _layer(k, n, torch.bfloat16)
    x = torch.randn(m, k).bfloat16()
    with torch.inference_mode():
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kn", [(384, 1152), (1536, 384)])
def test_rows_do_not_depend_on_the_batch(dtype, kn):
    if not _packs(dtype):
        pytest.skip("not packable on this CPU")
    lin = _layer(*kn, dtype)
    x = torch.randn(500, kn[0]).to(dtype)
    with torch.inference_mode():
        full = lin(x, activation="gelu")
        for lo, hi in [(0, 2), (3, 19), (100, 333), (250, 500)]:
            assert torch.equal(lin(x[lo:hi].contiguous(), activation="gelu"), full[lo:hi]), (lo, hi)


@needs_onednn
def test_cache_follows_in_place_changes_and_dtype_moves():
    lin = _layer(64, 48, torch.float32)
    x = torch.randn(20, 64)
    with torch.inference_mode():
        lin(x)
    with torch.no_grad():
        lin.weight.mul_(-2.0)  # same storage, new version: the packed copy is stale
    with torch.inference_mode():
        got = lin(x)
    assert torch.allclose(got.double(), _ref(lin, x, None), rtol=1e-5, atol=1e-5)
    lin.load_state_dict({"weight": torch.randn(48, 64), "bias": torch.zeros(48)})
    with torch.inference_mode():
        assert torch.allclose(lin(x).double(), _ref(lin, x, None), rtol=1e-5, atol=1e-5)
    lin.to(torch.bfloat16)
    with torch.inference_mode():
        y = lin(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.double() - _ref(lin, x.bfloat16(), None)).norm() / y.double().norm() < 2e-2


def test_autograd_and_copies_fall_back_cleanly():
    lin = _layer(32, 8, torch.float32)
    x = torch.randn(4, 32, requires_grad=True)
    lin(x, activation="gelu").sum().backward()  # the packed op has no backward: F.linear runs
    assert x.grad is not None and lin.weight.grad is not None
    with torch.inference_mode():
        want = lin(x.detach())
    for clone in (copy.deepcopy(lin), pickle.loads(pickle.dumps(lin))):
        with torch.inference_mode():
            assert torch.equal(clone(x.detach()), want)


def test_disabled_is_exactly_f_linear(monkeypatch):
    monkeypatch.setattr(L, "enabled", False)
    lin = _layer(384, 96, torch.float32)
    x = torch.randn(40, 384)
    with torch.inference_mode():
        assert torch.equal(lin(x, activation="gelu"), F.gelu(F.linear(x, lin.weight, lin.bias)))
    assert lin._packed is None


@needs_onednn
def test_the_encoder_runs_its_linears_packed_with_gelu_fused(tiny_folder, monkeypatch):
    """The wiring: on CPU float32 every encoder linear packs its weight, and the MLP's
    up-projection asks oneDNN for the GELU post-op."""
    import minilm

    calls = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(x, w, b, attr, scalars, algorithm):
        calls.append(attr)
        return real(x, w, b, attr, scalars, algorithm)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", spy)
    m = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    m.encode(["one text", "and another"])
    layers = len(m.engine.encoder.layers)
    assert calls.count("gelu") == layers and calls.count("none") == 3 * layers
    linears = [mod for mod in m.engine.encoder.modules() if isinstance(mod, L.Linear)]
    assert len(linears) == 4 * layers and all(lin._packed[1] is not None for lin in linears)
