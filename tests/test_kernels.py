"""Tests for minilm.kernels: each Triton kernel against its ``_ref`` and an independent formula.

On CPU the kernels run through Triton's interpreter, which must be switched on before
anything imports triton, hence the first lines. Sizes stay small: the interpreter runs
every program in Python.
"""

import os
import sys

import torch  # importing torch does not import triton

if not torch.cuda.is_available():
    # Must happen before anything imports triton; on a GPU the kernels run for real.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

import minilm.kernels as K  # noqa: E402  (importing minilm registers its kernels package)

triton = pytest.importorskip("triton")
from minilm.kernels import _utils  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
# False too when triton was imported before TRITON_INTERPRET was set (see _utils).
INTERPRET = _utils.interpreter_active()
# On CPU the kernels can only run through the interpreter.
needs_kernel_runtime = pytest.mark.skipif(
    not (HAS_CUDA or INTERPRET),
    reason="needs CUDA, or TRITON_INTERPRET=1 set before triton is first imported "
    "(set it in the environment or in conftest.py)",
)
DEVICE = "cuda" if HAS_CUDA else "cpu"

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (atol, rtol) of a kernel vs a float64 formula; the output rounding dominates.
TOL = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
# Attention additionally rounds P to the input dtype before P @ V (as flash-attention).
ATTN_TOL = {
    torch.float32: (3e-5, 3e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}

# Sequence-length mixes in flash-attention's varlen layout.
LENGTH_CASES = {
    "single_token": [1],
    "primes": [7, 13, 97],
    "batch_of_one_1023": [1023],
    "many_tiny": [1, 2, 3, 1, 5, 4, 1, 2, 6, 3, 1, 1, 2, 4, 5, 1],
    "max_512": [512, 3, 130],
    "with_empty": [5, 0, 9, 0, 17],
    "empty_first_last": [0, 4, 0],
}


def cu_from_lengths(lengths, device=DEVICE):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def assert_close(actual, expected, dtype, tol=TOL):
    atol, rtol = tol[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol)


def pad(packed, lengths):
    """(total, ...) -> (B, max_len, ...) zero padded, plus a (B, max_len) bool mask."""
    max_len = max(lengths, default=0)
    out = packed.new_zeros((len(lengths), max_len) + tuple(packed.shape[1:]))
    mask = torch.zeros(len(lengths), max_len, dtype=torch.bool, device=packed.device)
    start = 0
    for b, n in enumerate(lengths):
        out[b, :n] = packed[start : start + n]
        mask[b, :n] = True
        start += n
    return out, mask


# ---------------------------------------------------------------------------- import


def test_package_import_is_lazy():
    code = (
        "import sys, importlib\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import minilm\n"
        "assert 'triton' not in sys.modules, 'importing minilm imported triton'\n"
        "k = importlib.import_module('minilm.kernels')\n"
        "assert 'triton' not in sys.modules, 'importing minilm.kernels imported triton'\n"
        "assert set(k.__all__) >= {'varlen_mean_pool', 'masked_mean_pool', 'varlen_attention',"
        " 'add_layer_norm', 'bias_gelu'}\n"
        "assert callable(k.varlen_attention) and callable(k.add_layer_norm_ref)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(REPO))


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        K.not_a_kernel  # noqa: B018


# ---------------------------------------------------------------------------- pooling


def pooled_formula(hidden, lengths, skip_first=0, normalize=False):
    """sentence-transformers' padded masked mean, in float64."""
    padded, mask = pad(hidden.double(), lengths)
    mask = mask.double()
    mask[:, :skip_first] = 0
    summed = (padded * mask[..., None]).sum(1)
    mean = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
    if normalize:
        mean = F.normalize(mean, dim=-1, eps=1e-12)
    return mean


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", [384, 100])
@pytest.mark.parametrize("case", list(LENGTH_CASES))
def test_varlen_mean_pool(case, width, dtype):
    lengths = LENGTH_CASES[case]
    torch.manual_seed(0)
    hidden = torch.randn(sum(lengths), width, dtype=dtype, device=DEVICE)
    cu = cu_from_lengths(lengths)
    out = K.varlen_mean_pool(hidden, cu, backend="triton")
    assert out.shape == (len(lengths), width) and out.dtype == dtype
    assert_close(out, pooled_formula(hidden, lengths), dtype)
    assert_close(out, K.varlen_mean_pool_ref(hidden, cu), dtype)
    empty = [b for b, n in enumerate(lengths) if n == 0]
    assert torch.all(out[empty] == 0)


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("skip_first, normalize", [(0, True), (1, False), (3, True), (2000, False)])
def test_varlen_mean_pool_skip_and_normalize(skip_first, normalize, dtype):
    lengths = [1, 3, 4, 0, 97, 2]
    torch.manual_seed(1)
    hidden = torch.randn(sum(lengths), 100, dtype=dtype, device=DEVICE)
    cu = cu_from_lengths(lengths)
    kw = dict(skip_first=skip_first, normalize=normalize)
    out = K.varlen_mean_pool(hidden, cu, backend="triton", **kw)
    assert_close(out, pooled_formula(hidden, lengths, **kw), dtype)
    assert_close(out, K.varlen_mean_pool_ref(hidden, cu, **kw), dtype)
    if normalize:
        norms = out.double().norm(dim=-1)
        live = torch.tensor([n > skip_first for n in lengths], device=DEVICE)
        assert_close(norms[live], torch.ones_like(norms[live]), dtype)
        assert torch.all(norms[~live] == 0)  # nothing to pool: zeros, not NaN


@needs_kernel_runtime
def test_varlen_mean_pool_empty_batch_and_strided_rows():
    hidden = torch.randn(0, 384, device=DEVICE)
    out = K.varlen_mean_pool(hidden, torch.zeros(1, dtype=torch.int32, device=DEVICE), backend="triton")
    assert out.shape == (0, 384)
    # Rows of a wider buffer (stride(0) != H) need no copy.
    lengths = [3, 5]
    base = torch.randn(8, 130, device=DEVICE)
    view = base[:, 10:110]
    cu = cu_from_lengths(lengths)
    assert_close(K.varlen_mean_pool(view, cu, backend="triton"), pooled_formula(view, lengths), torch.float32)


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mask_dtype", [torch.int64, torch.bool, torch.float32, torch.int32])
@pytest.mark.parametrize("case", ["primes", "with_empty", "many_tiny"])
def test_masked_mean_pool(case, mask_dtype, dtype):
    lengths = LENGTH_CASES[case]
    torch.manual_seed(2)
    packed = torch.randn(sum(lengths), 100, dtype=dtype, device=DEVICE)
    hidden, mask = pad(packed, lengths)
    # Padding positions hold garbage, as in a real model output.
    hidden = torch.where(mask[..., None], hidden, torch.randn_like(hidden))
    mask = mask.to(mask_dtype)
    out = K.masked_mean_pool(hidden, mask, backend="triton")
    assert out.shape == (len(lengths), 100) and out.dtype == dtype
    assert_close(out, pooled_formula(packed, lengths), dtype)
    assert_close(out, K.masked_mean_pool_ref(hidden, mask), dtype)


@needs_kernel_runtime
def test_masked_mean_pool_fractional_weights():
    torch.manual_seed(3)
    hidden = torch.randn(3, 11, 384, device=DEVICE)
    weights = torch.rand(3, 11, device=DEVICE)
    weights[1] = 0  # all-padding row: zeros, like sentence-transformers' 1e-9 clamp
    expected = (hidden.double() * weights.double()[..., None]).sum(1) / weights.double().sum(1, keepdim=True).clamp(
        min=1e-9
    )
    out = K.masked_mean_pool(hidden, weights, backend="triton")
    assert_close(out, expected, torch.float32)
    assert torch.all(out[1] == 0)


# ---------------------------------------------------------------------------- attention


def attention_formula(q, k, v, lengths, scale=None, bias=None):
    """SDPA on a padded (B, heads, L, d) float64 batch with a key-padding mask."""
    qp, mask = pad(q.double(), lengths)
    kp, _ = pad(k.double(), lengths)
    vp, _ = pad(v.double(), lengths)
    qp, kp, vp = (t.transpose(1, 2) for t in (qp, kp, vp))  # (B, heads, L, d)
    max_len = qp.shape[2]
    attn_mask = torch.zeros(len(lengths), 1, 1, max_len, dtype=torch.float64, device=q.device)
    attn_mask.masked_fill_(~mask[:, None, None, :], float("-inf"))
    if bias is not None:
        b = bias if bias.dim() == 4 else bias[None]
        attn_mask = attn_mask + b[..., :max_len, :max_len].double()
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=attn_mask, scale=scale)
    out = out.transpose(1, 2)  # (B, L, heads, d)
    return torch.cat([out[b, :n] for b, n in enumerate(lengths)], dim=0) if lengths else out.reshape(q.shape)


def qkv(lengths, heads, head_dim, dtype, seed=0):
    torch.manual_seed(seed)
    total = sum(lengths)
    return torch.randn(3, total, heads, head_dim, dtype=dtype, device=DEVICE).unbind(0)


def _attention_cases():
    for case in LENGTH_CASES:
        for dtype in DTYPES:
            yield pytest.param(case, dtype, id=f"{case}-{str(dtype).split('.')[-1]}")


@needs_kernel_runtime
@pytest.mark.parametrize("case, dtype", list(_attention_cases()))
def test_varlen_attention(case, dtype):
    lengths = LENGTH_CASES[case]
    heads = 1 if case == "batch_of_one_1023" else 2
    q, k, v = qkv(lengths, heads, 32, dtype)
    cu = cu_from_lengths(lengths)
    out = K.varlen_attention(q, k, v, cu, max(lengths), backend="triton")
    assert out.shape == q.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert_close(out, attention_formula(q, k, v, lengths), dtype, ATTN_TOL)
    assert_close(out, K.varlen_attention_ref(q, k, v, cu, max(lengths)), dtype, ATTN_TOL)


@needs_kernel_runtime
@pytest.mark.parametrize(
    "head_dim, dtype",
    [(64, torch.float16), (128, torch.float32), (128, torch.bfloat16), (48, torch.float16), (100, torch.float32), (8, torch.float32)],
    ids=str,
)
def test_varlen_attention_head_dims(head_dim, dtype):
    lengths = [7, 0, 70]
    q, k, v = qkv(lengths, 2, head_dim, dtype, seed=head_dim)
    cu = cu_from_lengths(lengths)
    out = K.varlen_attention(q, k, v, cu, 70, backend="triton")
    assert_close(out, attention_formula(q, k, v, lengths), dtype, ATTN_TOL)


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("bias_kind", ["shared", "per_sequence", "shared_oversized"])
def test_varlen_attention_bias(bias_kind, dtype):
    lengths = [5, 0, 66, 1]
    heads, max_len = 3, 66
    q, k, v = qkv(lengths, heads, 32, dtype, seed=4)
    cu = cu_from_lengths(lengths)
    torch.manual_seed(5)
    if bias_kind == "shared":
        bias = torch.randn(heads, max_len, max_len, device=DEVICE)
    elif bias_kind == "per_sequence":
        bias = torch.randn(len(lengths), heads, max_len, max_len, dtype=dtype, device=DEVICE)
    else:  # a bias table built for 128 positions, used for shorter batches
        bias = torch.randn(heads, 128, 128, device=DEVICE)
    out = K.varlen_attention(q, k, v, cu, max_len, bias=bias, backend="triton")
    assert_close(out, attention_formula(q, k, v, lengths, bias=bias), dtype, ATTN_TOL)
    assert_close(out, K.varlen_attention_ref(q, k, v, cu, max_len, bias=bias), dtype, ATTN_TOL)


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_varlen_attention_fused_qkv_views_and_scale(dtype):
    lengths = [13, 2, 40]
    heads, head_dim = 2, 32
    torch.manual_seed(6)
    fused = torch.randn(sum(lengths), 3, heads, head_dim, dtype=dtype, device=DEVICE)
    q, k, v = fused.unbind(1)  # strided views, no copies
    assert not q.is_contiguous()
    cu = cu_from_lengths(lengths)
    out = K.varlen_attention(q, k, v, cu, 40, scale=0.3, backend="triton")
    assert out.is_contiguous()
    assert_close(out, attention_formula(q, k, v, lengths, scale=0.3), dtype, ATTN_TOL)
    # max_seqlen is an upper bound: a larger one is only slower.
    out_loose = K.varlen_attention(q, k, v, cu, 64, scale=0.3, backend="triton")
    torch.testing.assert_close(out_loose, out)


@needs_kernel_runtime
def test_varlen_attention_empty():
    q = k = v = torch.randn(0, 2, 32, device=DEVICE)
    out = K.varlen_attention(q, k, v, torch.zeros(1, dtype=torch.int32, device=DEVICE), 0, backend="triton")
    assert out.shape == (0, 2, 32)
    cu = torch.zeros(3, dtype=torch.int32, device=DEVICE)  # two empty sequences
    assert K.varlen_attention(q, k, v, cu, 0, backend="triton").shape == (0, 2, 32)


# ---------------------------------------------------------------------------- layer norm / gelu


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 384), (37, 384), (5, 3, 100), (2, 1024), (3, 17)], ids=str)
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_layer_norm(shape, dtype, with_residual):
    torch.manual_seed(7)
    width = shape[-1]
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    residual = torch.randn(shape, dtype=dtype, device=DEVICE) if with_residual else None
    weight = torch.randn(width, device=DEVICE).to(dtype)
    bias = torch.randn(width, device=DEVICE).to(dtype)
    out = K.add_layer_norm(x, residual, weight, bias, 1e-12, backend="triton")
    assert out.shape == x.shape and out.dtype == dtype
    ln = torch.nn.LayerNorm(width, eps=1e-12, dtype=torch.float64, device=DEVICE)
    with torch.no_grad():
        ln.weight.copy_(weight.double())
        ln.bias.copy_(bias.double())
        expected = ln(x.double() + (residual.double() if with_residual else 0))
    # Outputs reach |y| ~ 10 here: relative tolerance carries the check.
    assert_close(out, expected, dtype)
    assert_close(out, K.add_layer_norm_ref(x, residual, weight, bias, 1e-12), dtype)


@needs_kernel_runtime
def test_add_layer_norm_strided_rows_and_mixed_dtypes():
    torch.manual_seed(8)
    base = torch.randn(9, 500, dtype=torch.float16, device=DEVICE)
    x = base[:, :384]  # row stride 500: a view, not copied
    residual = torch.randn(9, 384, dtype=torch.float32, device=DEVICE)
    weight = torch.randn(384, device=DEVICE)  # fp32 params with fp16 activations
    bias = torch.randn(384, device=DEVICE)
    out = K.add_layer_norm(x, residual, weight, bias, 1e-5, backend="triton")
    expected = F.layer_norm(x.double() + residual.double(), (384,), weight.double(), bias.double(), 1e-5)
    assert out.dtype == torch.float16
    assert_close(out, expected, torch.float16)


@needs_kernel_runtime
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 1536), (2, 3, 100), (1, 1)], ids=str)
def test_bias_gelu(shape, dtype):
    torch.manual_seed(9)
    x = (3 * torch.randn(shape, device=DEVICE)).to(dtype)
    bias = torch.randn(shape[-1], device=DEVICE).to(dtype)
    out = K.bias_gelu(x, bias, backend="triton")
    h = x.double() + bias.double()
    expected = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    assert out.shape == x.shape and out.dtype == dtype
    assert_close(out, expected, dtype)
    assert_close(out, K.bias_gelu_ref(x, bias), dtype)


# ---------------------------------------------------------------------------- backends


class _KernelLaunched(Exception):
    pass


class _ForbiddenKernel:
    """Stands in for a @triton.jit kernel: launching it (kernel[grid](...)) raises."""

    def __getitem__(self, grid):
        raise _KernelLaunched(grid)


def test_auto_backend_on_cpu_uses_reference(monkeypatch):
    lengths = [3, 4]
    torch.manual_seed(0)
    hidden = torch.randn(7, 16)
    cu = cu_from_lengths(lengths, device="cpu")
    pooling = importlib.import_module("minilm.kernels.pooling")
    ref_calls = []
    ref = pooling.varlen_mean_pool_ref
    monkeypatch.setattr(pooling, "varlen_mean_pool_ref", lambda *a, **k: ref_calls.append(1) or ref(*a, **k))
    monkeypatch.setattr(pooling, "_varlen_mean_pool_kernel", _ForbiddenKernel())  # exists: triton is imported
    out = K.varlen_mean_pool(hidden, cu)
    assert ref_calls == [1]
    torch.testing.assert_close(out.double(), pooled_formula(hidden, lengths), atol=1e-6, rtol=1e-6)
    if INTERPRET:  # the same tensors with backend="triton" do reach the kernel: the stand-in is live
        with pytest.raises(_KernelLaunched):
            K.varlen_mean_pool(hidden, cu, backend="triton")


def test_auto_backend_picks_triton_for_cuda_tensors_only():
    class CudaLike:  # resolve_backend only asks where a tensor lives
        is_cuda = True

    cpu = torch.zeros(1)
    assert _utils.resolve_backend("auto", CudaLike(), CudaLike(), None) == "triton"
    assert _utils.resolve_backend("auto", cpu) == "torch"
    assert _utils.resolve_backend("auto", CudaLike(), cpu) == "torch"  # mixed devices: the launcher reports it
    assert _utils.resolve_backend("torch", CudaLike()) == "torch"


def test_torch_backend_matches_formulas_on_cpu():
    lengths = [3, 0, 6]
    q, k, v = (t.cpu() for t in qkv(lengths, 2, 16, torch.float32))
    cu = cu_from_lengths(lengths, device="cpu")
    out = K.varlen_attention(q, k, v, cu, 6, backend="torch")
    torch.testing.assert_close(out.double(), attention_formula(q, k, v, lengths), atol=1e-5, rtol=1e-5)
    x = torch.randn(4, 10)
    torch.testing.assert_close(
        K.add_layer_norm(x, None, torch.ones(10), torch.zeros(10), 1e-12, backend="torch"),
        F.layer_norm(x, (10,), eps=1e-12),
    )


def test_triton_backend_without_cuda_or_interpreter_raises(monkeypatch):
    monkeypatch.setattr(_utils, "interpreter_active", lambda: False)
    x = torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        K.add_layer_norm(x, None, torch.ones(8), torch.zeros(8), 1e-12, backend="triton")


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        K.bias_gelu(torch.randn(2, 4), torch.randn(4), backend="cuda")


# ---------------------------------------------------------------------------- validation

BACKENDS = [
    pytest.param("torch"),
    pytest.param("triton", marks=needs_kernel_runtime),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cu_seqlens_validation(backend):
    hidden = torch.randn(16, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"cu_seqlens must be int32, got torch.int64"):
        K.varlen_mean_pool(hidden, torch.tensor([0, 16], device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match=r"cu_seqlens\[-1\]=17 != total_tokens=16"):
        K.varlen_mean_pool(hidden, cu_from_lengths([9, 8]), backend=backend)
    with pytest.raises(ValueError, match=r"cu_seqlens\[0\]=1 != 0"):
        K.varlen_mean_pool(hidden, torch.tensor([1, 16], dtype=torch.int32, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match="non-decreasing"):
        K.varlen_mean_pool(hidden, torch.tensor([0, 10, 5, 16], dtype=torch.int32, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match=r"shape \(B\+1,\)"):
        K.varlen_mean_pool(hidden, torch.zeros(2, 2, dtype=torch.int32, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match="skip_first"):
        K.varlen_mean_pool(hidden, cu_from_lengths([16]), skip_first=-1, backend=backend)
    with pytest.raises(ValueError, match=r"hidden must be \(total_tokens, H\)"):
        K.varlen_mean_pool(hidden[None], cu_from_lengths([16]), backend=backend)
    with pytest.raises(ValueError, match="hidden must be one of"):
        K.varlen_mean_pool(hidden.long(), cu_from_lengths([16]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_validation(backend):
    lengths = [5, 11]
    q, k, v = qkv(lengths, 2, 32, torch.float32)
    cu = cu_from_lengths(lengths)
    with pytest.raises(ValueError, match=r"max_seqlen=10 < longest sequence length 11"):
        K.varlen_attention(q, k, v, cu, 10, backend=backend)
    with pytest.raises(ValueError, match=r"cu_seqlens\[-1\]=17 != total_tokens=16"):
        K.varlen_attention(q, k, v, cu_from_lengths([6, 11]), 11, backend=backend)
    big = torch.randn(16, 2, 300, device=DEVICE)
    with pytest.raises(ValueError, match=r"head_dim=300 not supported"):
        K.varlen_attention(big, big, big, cu, 11, backend=backend)
    with pytest.raises(ValueError, match="shapes must match"):
        K.varlen_attention(q, k[:, :1], v, cu, 11, backend=backend)
    with pytest.raises(ValueError, match="dtypes must match"):
        K.varlen_attention(q, k.half(), v, cu, 11, backend=backend)
    with pytest.raises(ValueError, match=r"bias must be \(heads"):
        K.varlen_attention(q, k, v, cu, 11, bias=torch.zeros(3, 11, 11, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match=r"bias must be \(heads"):
        K.varlen_attention(q, k, v, cu, 11, bias=torch.zeros(2, 8, 8, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match="total_tokens, heads, head_dim"):
        K.varlen_attention(q[0], k[0], v[0], cu, 11, backend=backend)


@needs_kernel_runtime
def test_unit_stride_required_by_kernels():
    lengths = [5, 11]
    q, k, v = qkv(lengths, 2, 32, torch.float32)
    cu = cu_from_lengths(lengths)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, head_dim stride 2
    assert q_t.stride(-1) != 1
    with pytest.raises(ValueError, match=r"q must have unit stride in head_dim"):
        K.varlen_attention(q_t, k, v, cu, 11, backend="triton")
    # The reference does not care about layout.
    assert_close(K.varlen_attention(q_t, k, v, cu, 11, backend="torch"), attention_formula(q, k, v, lengths), torch.float32)
    hidden_t = torch.randn(8, 16, device=DEVICE).t()
    with pytest.raises(ValueError, match="hidden must have unit stride"):
        K.varlen_mean_pool(hidden_t, cu_from_lengths([16]), backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_mismatch(backend):
    # "meta" stands in for a second device on machines with only a CPU.
    other = "meta" if DEVICE == "cpu" else "cpu"
    hidden = torch.randn(16, 8, device=DEVICE)
    with pytest.raises(ValueError, match="same device"):
        K.varlen_mean_pool(hidden, cu_from_lengths([16], device=other), backend=backend, validate=False)
    q = torch.randn(16, 2, 32, device=DEVICE)
    with pytest.raises(ValueError, match="same device"):
        K.varlen_attention(q, q, q.to(other), cu_from_lengths([16]), 16, backend=backend)
    with pytest.raises(ValueError, match="same device"):
        K.add_layer_norm(hidden, None, torch.ones(8, device=other), torch.zeros(8, device=DEVICE), 1e-12, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_validation(backend):
    x = torch.randn(4, 8, device=DEVICE)
    w, b = torch.ones(8, device=DEVICE), torch.zeros(8, device=DEVICE)
    with pytest.raises(ValueError, match=r"residual shape \(4, 7\) != x shape \(4, 8\)"):
        K.add_layer_norm(x, torch.randn(4, 7, device=DEVICE), w, b, 1e-12, backend=backend)
    with pytest.raises(ValueError, match=r"weight must have shape \(H,\)=\(8,\)"):
        K.add_layer_norm(x, None, torch.ones(9, device=DEVICE), b, 1e-12, backend=backend)
    with pytest.raises(ValueError, match="bias must have shape"):
        K.bias_gelu(x, torch.ones(7, device=DEVICE), backend=backend)
    with pytest.raises(ValueError, match=r"attention_mask shape \(4, 3\) != hidden"):
        K.masked_mean_pool(x[:, None].expand(4, 5, 8), torch.ones(4, 3, device=DEVICE), backend=backend)


# ---------------------------------------------------------------------------- CUDA (realistic sizes)


def realistic_lengths(total_tokens, max_len, seed):
    """A SciFact-like mix: mostly long abstracts clipped at max_len, some short ones."""
    g = torch.Generator().manual_seed(seed)
    lengths = []
    while sum(lengths) < total_tokens:
        n = int(torch.randint(1, 2 * max_len, (1,), generator=g))
        lengths.append(min(n, max_len))
    lengths[-1] -= sum(lengths) - total_tokens
    lengths += [0, 1]
    return lengths


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("max_len", [256, 512])
def test_cuda_realistic(dtype, max_len):
    lengths = realistic_lengths(50_000, max_len, seed=max_len)
    cu = cu_from_lengths(lengths, device="cuda")
    heads, head_dim, width = 12, 32, 384
    torch.manual_seed(10)
    fused = torch.randn(sum(lengths), 3, heads, head_dim, dtype=dtype, device="cuda")
    q, k, v = fused.unbind(1)
    out = K.varlen_attention(q, k, v, cu, max(lengths))
    assert out.is_cuda
    assert_close(out, K.varlen_attention_ref(q, k, v, cu, max(lengths)), dtype, ATTN_TOL)
    sub = lengths[:40]  # the float64 padded SDPA is heavy; a prefix is enough
    n_sub = sum(sub)
    assert_close(out[:n_sub], attention_formula(q[:n_sub], k[:n_sub], v[:n_sub], sub), dtype, ATTN_TOL)
    bias = torch.randn(heads, max_len, max_len, device="cuda", dtype=dtype)
    out_b = K.varlen_attention(q, k, v, cu, max(lengths), bias=bias)
    assert_close(out_b, K.varlen_attention_ref(q, k, v, cu, max(lengths), bias=bias), dtype, ATTN_TOL)

    hidden = torch.randn(sum(lengths), width, dtype=dtype, device="cuda")
    for kw in (dict(), dict(skip_first=2, normalize=True)):
        pooled = K.varlen_mean_pool(hidden, cu, **kw)
        assert_close(pooled, K.varlen_mean_pool_ref(hidden, cu, **kw), dtype)
    padded, mask = pad(hidden[: sum(lengths[:64])], lengths[:64])
    masked = K.masked_mean_pool(padded, mask)
    assert masked.shape == (64, width)
    assert_close(masked, pooled_formula(hidden, lengths[:64]), dtype)

    residual = torch.randn_like(hidden)
    w = torch.randn(width, device="cuda", dtype=dtype)
    b = torch.randn(width, device="cuda", dtype=dtype)
    assert_close(K.add_layer_norm(hidden, residual, w, b, 1e-12), K.add_layer_norm_ref(hidden, residual, w, b, 1e-12), dtype)
    assert_close(K.add_layer_norm(hidden, None, w, b, 1e-12), K.add_layer_norm_ref(hidden, None, w, b, 1e-12), dtype)
    inter = torch.randn(sum(lengths), 1536, dtype=dtype, device="cuda")
    gb = torch.randn(1536, dtype=dtype, device="cuda")
    assert_close(K.bias_gelu(inter, gb), K.bias_gelu_ref(inter, gb), dtype)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_cuda_attention_head_dims_fp32(head_dim):
    lengths = realistic_lengths(4_000, 384, seed=head_dim)
    q, k, v = qkv(lengths, 4, head_dim, torch.float32)
    cu = cu_from_lengths(lengths, device="cuda")
    out = K.varlen_attention(q, k, v, cu, max(lengths))
    assert_close(out, K.varlen_attention_ref(q, k, v, cu, max(lengths)), torch.float32, ATTN_TOL)
