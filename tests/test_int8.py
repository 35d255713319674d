"""int8 CPU mode (``SentenceTransformer(quantize="int8")``): the int8 GEMM against a plain
float64 reference, fidelity against sentence-transformers float32, batch invariance, and the
errors for bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minilm
from minilm import int8

from conftest import data_dir, spearman_x100


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def heldout_texts() -> list[str]:
    """Generated text, disjoint from minilm/data/calibration.txt: short sentences from
    templates, a few questions, and long paragraphs built from them (up to ~300 tokens)."""
    subjects = ["The engineer", "A young violinist", "My neighbour's parrot", "The city council",
                "An exhausted marathon runner", "The research team", "A stray kitten", "Our landlord"]
    actions = ["repaired the broken heater", "announced a surprising new budget",
               "stared at the glowing monitor", "climbed the narrow staircase", "wrote a long complaint",
               "measured the salinity of the lake", "refused to sign the lease", "painted the fence green"]
    places = ["before dawn", "in the crowded market", "during the thunderstorm", "at the edge of the glacier",
              "beside the abandoned railway", "after the quarterly review"]
    short = [f"{s} {a} {p}." for i, s in enumerate(subjects) for j, a in enumerate(actions)
             for k, p in enumerate(places) if (i + 2 * j + 3 * k) % 7 == 0]
    questions = ["Which vitamins dissolve in fat?", "How far can a pigeon fly in one day?", "refund?",
                 "Why did the ferry timetable change in October?", "Is granite harder than marble?",
                 "What does a quantum of action measure?", "Error: segmentation fault (core dumped)"]
    long = [" ".join(short[i::5]) for i in range(5)]
    return short + questions + long


@pytest.fixture(scope="module")
def ml_int8(real_model_path):
    return minilm.SentenceTransformer(str(real_model_path), device="cpu", quantize="int8")


# ------------------------------------------------------------------------- the GEMM
@pytest.mark.parametrize("wmax", [127, 63])
@pytest.mark.parametrize("backend", ["onednn", "int_mm"])
@pytest.mark.parametrize("rows", [1, 17, 700])
def test_int8_linear_matches_float64_reference(backend, rows, wmax):
    """Int8Linear == dequantize(quantize(x)) @ dequantize(quantize(W))^T + b, computed in float64
    from the definitions: per-token and per-output-channel symmetric scales, round to nearest."""
    if backend == "onednn" and int8.gemm_backend() != "onednn":
        pytest.skip("this torch build has no oneDNN int8 linear")
    if wmax > int8.weight_max():
        pytest.skip("without VNNI the int8 GEMM adds u8 x s8 pairs in saturating 16 bits, so 8-bit "
                    "weights are not exact here (why weight_max() picks 63; tested below)")
    g = torch.Generator().manual_seed(rows)
    lin = torch.nn.Linear(96, 40).requires_grad_(False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(40, 96, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(40, generator=g))
    x = torch.randn(rows, 96, generator=g) * torch.rand(rows, 1, generator=g) * 5
    smooth = torch.rand(96, generator=g) + 0.5

    xs = x.double() / smooth.double()
    w = lin.weight.double() * smooth.double()
    w_scale = w.abs().amax(1) / wmax
    wq = torch.round(w / w_scale[:, None])
    x_scale = xs.abs().amax(1, keepdim=True) / 127
    xq = torch.floor(xs / x_scale + 0.5)  # round half up, as the kernel does
    ref = (xq * x_scale) @ (wq * w_scale[:, None]).T + lin.bias.double()

    got = int8.Int8Linear(lin, smooth, backend=backend, wmax=wmax)(x)
    assert got.dtype == torch.float32 and got.shape == (rows, 40)
    # The kernel rounds in float32, so a value within float32 error of a rounding boundary may
    # land one step away from the float64 reference: allow a few such steps per row.
    step = x_scale * w.abs().max()  # (rows, 1): what one int8 step of x or W can move an output
    err = (got.double() - ref).abs()
    assert bool((err <= 3 * step).all()), f"max error {float((err / step).max()):.2f} steps"
    assert float((err / step).median()) < 0.01  # almost every output is exact
    # and the quantization error itself is small against the float layer
    torch.testing.assert_close(got, lin(x), rtol=0.05, atol=0.05 * float(lin(x).abs().max()))


def _linear(g: torch.Generator, n_in: int, n_out: int) -> torch.nn.Linear:
    lin = torch.nn.Linear(n_in, n_out).requires_grad_(False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(n_out, generator=g))
    return lin


@pytest.mark.parametrize("rows", [1, 17, 700])
def test_static_quant_codes_match_their_definition(rows):
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 40, generator=g) * 3
    smooth = torch.rand(40, generator=g) + 0.5
    quant = int8.StaticQuant(-2.0, 5.0, smooth)  # narrower than x: some values must clamp
    assert quant.zero_point == round(2.0 / quant.scale) and quant.scale == pytest.approx(7.0 / 255)
    ref = torch.floor(x.double() / smooth.double() / quant.scale + quant.zero_point + 0.5).clamp(0, 255)
    got = quant(x)
    assert got.dtype == torch.uint8
    # float32 rounding may move a value sitting on a code boundary by one code, never more
    diff = (got.double() - ref).abs()
    assert float(diff.max()) <= 1 and float(diff.mean()) < 0.01
    assert int((ref == 0).sum()) > 0 and int((ref == 255).sum()) > 0  # the clamps were exercised


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothed", [False, True])
def test_per_token_codes_match_their_definition_and_leave_the_input(dtype, smoothed):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(333, 200, generator=g) * torch.rand(333, 1, generator=g) * 9).to(dtype)
    x[5] = 0.0  # an all-zero row: its scale is clamped, its codes are the offset
    inv = torch.rand(200, generator=g) + 0.5 if smoothed else None
    before = x.clone()
    q, scale = int8.quantize_rows(x, inv)
    assert torch.equal(x, before)  # the codes may be written over a temporary, never the input
    xs = x.double() * (inv.double() if smoothed else 1.0)
    amax = xs.abs().amax(1, keepdim=True).clamp_min(1e-8)
    ref = torch.floor(xs * 127 / amax + 128.5)
    assert q.dtype == torch.uint8 and scale.shape == (333, 1)
    torch.testing.assert_close(scale.double(), amax / 127, rtol=1e-6, atol=0)
    diff = (q.double() - ref).abs()
    assert float(diff.max()) <= 1 and float(diff.mean()) < 0.01
    assert int(q.min()) >= 1 and bool((q[5] == 128).all())


def test_to_codes_truncates_like_a_direct_cast():
    t = torch.cat([torch.linspace(0, 255.99, 100_003), torch.tensor([0.0, 0.5, 1.0, 127.5, 254.999, 255.0, 255.9])])
    assert torch.equal(int8.to_codes(t), t.to(torch.uint8))
    assert torch.equal(int8.to_codes(t), torch.floor(t.double()).to(torch.int64).to(torch.uint8))


@pytest.mark.skipif(int8.gemm_backend() != "onednn", reason="this torch build has no oneDNN int8 linear")
@pytest.mark.parametrize("epilogue", ["float", "residual", "gelu_uint8"])
@pytest.mark.parametrize("rows", [1, 17, 700])
def test_static_int8_linear_matches_float64_reference(epilogue, rows):
    """StaticInt8Linear == dequantize(codes(x)) @ dequantize(quantize(W s))^T + b in float64,
    then the fused epilogue: nothing, + residual, or gelu and requantization to uint8."""
    g = torch.Generator().manual_seed(100 + rows)
    lin = _linear(g, 96, 40)
    x = torch.randn(rows, 96, generator=g) * 2
    smooth = torch.rand(96, generator=g) + 0.5
    xs = x.double() / smooth.double()
    in_quant = int8.StaticQuant(float(xs.min()), float(xs.max()), smooth)
    out_quant = int8.StaticQuant(-0.2, 4.0) if epilogue == "gelu_uint8" else None
    wmax = int8.weight_max()  # 8-bit weights only where the GEMM sums them exactly (VNNI, AMX)
    layer = int8.StaticInt8Linear(lin, in_quant, smooth, activation="gelu" if out_quant else None, out_quant=out_quant,
                                  wmax=wmax)

    xq = torch.floor(xs / in_quant.scale + in_quant.zero_point + 0.5).clamp(0, 255)
    w = lin.weight.double() * smooth.double()
    w_scale = w.abs().amax(1) / wmax
    ref = ((xq - in_quant.zero_point) * in_quant.scale) @ (torch.round(w / w_scale[:, None]) * w_scale[:, None]).T
    ref = ref + lin.bias.double()
    step = in_quant.scale * w.abs().max()  # what one code of x can move an output
    if epilogue == "float":
        got = layer(x).double()
    elif epilogue == "residual":
        residual = torch.randn(rows, 40, generator=g)
        ref = ref + residual.double()
        out = layer(x, residual=residual)
        assert out.data_ptr() == residual.data_ptr()  # written in place
        got = out.double()
    else:
        out = layer(x)
        assert out.dtype == torch.uint8
        ref = torch.floor(torch.nn.functional.gelu(ref) / out_quant.scale + out_quant.zero_point + 0.5).clamp(0, 255)
        got = out.double()
        step = 1.0 + step / out_quant.scale  # in codes: one for rounding, plus the input's
    err = (got - ref).abs()
    assert bool((err <= 3 * step).all()), f"max error {float((err / step).max()):.2f} steps"
    assert float((err / step).median()) < 0.5
    if epilogue == "float":  # and the quantization error is small against the float layer
        torch.testing.assert_close(layer(x), lin(x), rtol=0.05, atol=0.05 * float(lin(x).abs().max()))


@pytest.mark.parametrize("n", [1, 9, 15, 16, 40])  # both softmax paths (below 16 and from 16)
def test_math_attention_matches_sdpa(n):
    from minilm.model import math_attention

    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(3, 4, n, 32, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    mask = torch.randn(4, n, n, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(math_attention(q, k, v, attn_mask=mask), ref)
    torch.testing.assert_close(math_attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("block_bytes", [1, 3 * 4 * 40 * 40 * 8, 1 << 30])  # blocks of 1, 3 and all 7
def test_blocked_math_attention_matches_sdpa(monkeypatch, block_bytes):
    from minilm import model

    monkeypatch.setattr(model, "SCORE_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(7, 4, 40, 32, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(4, 40, 40, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(model.math_attention(q, k, v, attn_mask=mask, scale=0.3), ref)


@pytest.mark.parametrize("n", [9, 20, 64])  # softmax: three ops in float32, torch's in float32, torch's in bf16
def test_bf16_math_attention_is_within_bf16_rounding(n):
    from minilm.model import math_attention

    g = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(5, 12, n, 32, generator=g, dtype=torch.float64) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = math_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: inputs, scores, probabilities and output each round once.
    torch.testing.assert_close(got.double(), ref, atol=3e-2, rtol=3e-2)


def test_fastest_cpu_attention_choice():
    from minilm.model import CPU_MATH_ATTENTION_UPTO, fastest_cpu_attention, math_attention

    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert fastest_cpu_attention(CPU_MATH_ATTENTION_UPTO, torch.float32) is math_attention
    assert fastest_cpu_attention(CPU_MATH_ATTENTION_UPTO + 1, torch.float32) is sdpa
    assert fastest_cpu_attention(256, torch.bfloat16) is math_attention


def test_int8_attention_dtype_follows_the_cpu(real_model_path, monkeypatch):
    """bf16 attention only where the CPU has bf16 dot products; the QKV GEMM emits it."""
    for native, want in [(False, torch.float32), (True, torch.bfloat16)]:
        monkeypatch.setattr(int8, "has_bf16_dot", lambda native=native: native)
        m = minilm.SentenceTransformer(str(real_model_path), device="cpu", quantize="int8",
                                       calibration_texts=heldout_texts()[:8])
        layer = m.encoder.layers[0]
        assert layer.attn_dtype == want
        x = torch.randn(5, 384)
        assert layer.qkv(x, out_dtype=layer.attn_dtype).dtype == want
        assert np.isfinite(m.encode(["a short text", "another one here"])).all()


@torch.inference_mode()
def test_dynamic_scheme_still_quantizes_a_whole_encoder(real_model_path):
    """The per-token fallback (builds without oneDNN's int8 linear) on the real model."""
    from minilm.varlen import make_varlen_batch

    m = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    ids = m.engine.tokenizer.encode(heldout_texts()[:12])
    batch = make_varlen_batch(ids, m.encoder.config.position_offset, with_token_types=False)
    ref = m.encoder(batch)
    cal = int8.calibration_batches(m.engine.tokenizer, int8.default_calibration_texts()[:64],
                                   m.encoder.config.position_offset)
    int8.quantize_encoder(m.encoder, cal, scheme="dynamic")
    assert isinstance(m.encoder.layers[0].attn.qkv, int8.Int8Linear)
    got = m.encoder(batch)
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    assert float(cos.min()) > 0.95 and float(cos.min()) < 0.99999, float(cos.min())


# ------------------------------------------------------------------------- fidelity
def test_int8_fidelity_on_heldout_text(ml_int8, st_real, sentences, paragraphs):
    texts = heldout_texts() + sentences + paragraphs
    ref = st_real.encode(texts, batch_size=16)
    got = ml_int8.encode(texts, batch_size=16)
    cos = _cos(got, ref)
    assert cos.min() >= 0.97, f"min cosine to sentence-transformers fp32 {cos.min():.4f} on {texts[cos.argmin()]!r}"
    assert cos.mean() >= 0.99
    # int8 is an approximation, not the float path under another name
    assert cos.min() < 0.99999


def test_int8_with_bfloat16_compute(real_model_path, st_real):
    ml = minilm.SentenceTransformer(str(real_model_path), device="cpu", dtype="bfloat16", quantize="int8")
    texts = heldout_texts()[:40]
    assert ml.dtype == torch.bfloat16
    assert _cos(ml.encode(texts), st_real.encode(texts)).min() >= 0.97


@pytest.mark.skipif(not (data_dir() / "sts-dev.tsv").is_file(), reason="needs ../shared/data/sts-dev.tsv")
def test_int8_sts_spearman_within_0_3_of_fp32(ml_int8, st_real, sts_rows, sts_sentences):
    gold = np.array([s for s, _, _ in sts_rows])
    ref = spearman_x100(st_real.encode(sts_sentences, batch_size=64), gold)
    got = spearman_x100(ml_int8.encode(sts_sentences, batch_size=64), gold)
    assert abs(got - ref) <= 0.3, f"int8 STS Spearman {got:.3f} vs fp32 {ref:.3f}"


_AVX2_SCRIPT = """
import sys, numpy as np, minilm
from minilm import int8
sys.path.insert(0, {tests!r})
from conftest import read_lines
from test_int8 import _cos
texts = read_lines("sentences.txt") + read_lines("paragraphs.txt")
ref = minilm.SentenceTransformer({path!r}, device="cpu").encode(texts)
m = minilm.SentenceTransformer({path!r}, device="cpu", quantize="int8")
print(int8.weight_max(), _cos(m.encode(texts), ref).min())
"""


@pytest.mark.skipif(int8.gemm_backend() != "onednn", reason="this torch build has no oneDNN int8 linear")
def test_int8_stays_faithful_on_a_cpu_without_vnni(real_model_path):
    """oneDNN's AVX2 int8 kernels add u8 x s8 products in pairs into saturating 16-bit sums,
    which 8-bit weights overflow. On a CPU without VNNI -- emulated here by capping oneDNN at
    AVX2 -- weights take 7 bits."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = _AVX2_SCRIPT.format(tests=str(Path(__file__).parent), path=str(real_model_path))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    wmax, min_cos = r.stdout.split()
    assert float(min_cos) >= 0.97, f"min cosine to fp32 {min_cos} with oneDNN capped at AVX2"
    assert wmax == "63"


def test_weight_range_follows_the_cpu_and_onednns_cap(monkeypatch):
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert int8.weight_max() == (127 if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else 63)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert int8.weight_max() == 63
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # AVX-512 without VNNI
    assert int8.weight_max() == 63


@pytest.mark.skipif(int8.gemm_backend() != "onednn", reason="this torch build has no oneDNN int8 linear")
def test_per_token_mlp_scales_go_where_they_pay(real_model_path, ml_int8, sentences):
    """Calibration picks the layers whose MLP activation one static range serves badly; on our
    hardest texts (a few words each) that must beat quantizing every layer statically."""
    chosen = [i for i, layer in enumerate(ml_int8.encoder.layers) if layer.down_per_token]
    assert 0 < len(chosen) < len(ml_int8.encoder.layers), chosen
    assert isinstance(ml_int8.encoder.layers[chosen[0]].down, int8.Int8Linear)

    all_static = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    ref = all_static.encode(sentences)
    cal = int8.calibration_batches(all_static.engine.tokenizer, int8.default_calibration_texts(),
                                   all_static.encoder.config.position_offset)
    int8.quantize_encoder(all_static.encoder, cal, scheme="static", down_per_token=())
    assert not any(layer.down_per_token for layer in all_static.encoder.layers)
    chosen_min = _cos(ml_int8.encode(sentences), ref).min()
    static_min = _cos(all_static.encode(sentences), ref).min()
    assert chosen_min > static_min + 0.005, (chosen_min, static_min)


def test_per_token_layers_are_the_worst_half_above_the_floor():
    assert int8.needs_per_token_down([4.9, 4.9, 5.8, 2.6, 1.7, 1.5]) == [0, 1, 2]
    assert int8.needs_per_token_down([1.0, 9.0, 1.2, 3.0, 2.0, 1.6]) == [1, 3, 4]
    assert int8.needs_per_token_down([1.2] * 6) == []  # static is good enough everywhere
    assert int8.needs_per_token_down([2.0, 1.0, 8.0]) == [2]  # at most half


def test_calibration_stops_at_its_token_budget(real_model_path, monkeypatch):
    m = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    monkeypatch.setattr(int8, "_MAX_CALIBRATION_TOKENS", 500)
    texts = [" ".join(["word"] * 60)] * 40  # 62 tokens each
    batches = list(int8.calibration_batches(m.engine.tokenizer, texts, m.encoder.config.position_offset))
    assert sum(b.total_tokens for b in batches) == 8 * 62
    one_long = list(int8.calibration_batches(m.engine.tokenizer, [" ".join(["word"] * 600)], 2))
    assert sum(b.total_tokens for b in one_long) == 256  # the first text is always kept


# ------------------------------------------------------------------------- invariance
def test_int8_embedding_is_independent_of_its_batch(ml_int8):
    texts = heldout_texts()
    probe = [texts[3], texts[-1], "refund?"]
    alone = np.stack([ml_int8.encode(t) for t in probe])
    crowd = ml_int8.encode(texts[::-1] + probe, batch_size=64)[-3:]
    small = ml_int8.encode(probe + texts, batch_size=2)[:3]
    assert np.array_equal(alone, crowd)
    assert np.array_equal(alone, small)


def test_int8_invariance_holds_where_attention_is_blocked(ml_int8):
    """A run of equal-length sequences goes through attention a few sequences at a time
    (model.SCORE_BLOCK_BYTES); where a sequence falls among the blocks must not change its
    embedding."""
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on in red blue big small house tree car road sun day".split()
    texts = [" ".join(rng.choice(words, 100)) for _ in range(20)]
    n = {len(ids) for ids in ml_int8.tokenizer.encode(texts)}
    assert n == {102}  # one run of 20 sequences: blocks of 8, 8 and 4 in bf16, 5 x 4 in float32
    alone = np.stack([ml_int8.encode(t) for t in texts[:3]])
    crowd = ml_int8.encode(texts[::-1], batch_size=20)[::-1][:3]
    assert np.array_equal(alone, crowd)


# ------------------------------------------------------------------------- settings
def test_calibration_texts_change_the_smoothing(real_model_path, ml_int8):
    other = minilm.SentenceTransformer(str(real_model_path), device="cpu", quantize="int8",
                                       calibration_texts=heldout_texts())
    a, b = ml_int8.encoder.layers[0].qkv.in_quant, other.encoder.layers[0].qkv.in_quant
    assert isinstance(ml_int8.encoder.layers[0], int8.Int8Layer) and a.multiplier is not None
    assert not torch.equal(a.multiplier, b.multiplier) and a.scale != b.scale
    assert other.calibration_texts == [t for t in heldout_texts() if t.strip()]


@pytest.mark.parametrize("texts, error, match", [
    ("one long string", TypeError, "list of str"),
    ([], ValueError, "no non-empty text"),
    (["   ", ""], ValueError, "no non-empty text"),
    (["fine", 3], TypeError, "item 1 is int"),
    (None, None, None),
])
def test_calibration_texts_validation(real_model_path, texts, error, match):
    if error is None:  # calibration_texts without quantize is a mistake too
        with pytest.raises(ValueError, match="only used with quantize"):
            minilm.SentenceTransformer(str(real_model_path), device="cpu", calibration_texts=["a text"])
        return
    with pytest.raises(error, match=match):
        minilm.SentenceTransformer(str(real_model_path), device="cpu", quantize="int8", calibration_texts=texts)


@pytest.mark.parametrize("mode", ["int4", "INT8", True, "bfloat16"])
def test_unknown_quantize_mode(real_model_path, mode):
    with pytest.raises(ValueError, match="quantize must be None or one of"):
        minilm.SentenceTransformer(str(real_model_path), device="cpu", quantize=mode)


def test_int8_refuses_cuda(real_model_path):
    # Refused whether or not a GPU is present: the check comes before any weight moves.
    with pytest.raises(ValueError, match="CPU only"):
        minilm.SentenceTransformer(str(real_model_path), device="cuda", quantize="int8")


def test_engine_spec_carries_int8_to_workers(ml_int8, real_model_path):
    """Pool workers rebuild the engine from its spec: it must come back quantized with the same
    calibration, or a pool would silently run float32."""
    import pickle

    spec = pickle.loads(pickle.dumps(ml_int8.engine.spec(ml_int8.model_path)))
    assert spec.quantize == "int8"
    texts = heldout_texts()[:12]
    np.testing.assert_array_equal(spec.build("cpu").encode(texts, minilm.engine.EncodeRequest()), ml_int8.encode(texts))
    fp32 = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    assert spec.differences(fp32.engine.spec(fp32.model_path))["quantize"] == ("int8", None)
    with pytest.raises(ValueError, match="CPU only"):
        ml_int8.engine.move_to(torch.device("cuda"))


def test_int8_defaults_to_the_cpu(real_model_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    m = minilm.SentenceTransformer(str(real_model_path), quantize="int8")
    assert m.device.type == "cpu" and m.quantize == "int8"
