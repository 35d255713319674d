"""int8 inference on CPU: every linear layer of the encoder as an int8 GEMM.

Two schemes, chosen by :func:`int8_scheme`:

- **static** (:class:`Int8Layer`, the default where oneDNN's int8 linear exists): each
  activation entering a GEMM is quantized to uint8 with one scale per tensor, calibrated on
  text, so the GEMM's epilogue can do the rest -- bias, the residual add, GELU and the
  requantization of the MLP activation for the next GEMM -- in the same pass. Scales do not
  depend on the batch, so neither does a text's embedding.
- **dynamic** (:class:`Int8Linear`): one scale per token, from the row's absolute maximum,
  applied after the GEMM. Used in the static scheme for the MLP activation of the layers
  where one range serves it worst (:func:`needs_per_token_down`), and for every layer on
  builds without oneDNN's int8 linear.

In both, weights are quantized once, symmetric, one scale per output channel (7 bits on
CPUs without VNNI: :func:`weight_max`), and SmoothQuant-style smoothing divides each input
channel by a calibrated factor ``s`` and multiplies the weight's column by it
(``x W^T = (x / s)(W s)^T``), moving the outlier channels of the LayerNorm outputs into the
weights, which quantize them per channel; the division is folded into the quantizer.
Attention runs in bf16 on CPUs with bf16 dot products and in float32 elsewhere; LayerNorm
and the embeddings stay in the float dtype.

The measurements behind each choice are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import copy
import logging
from importlib import resources
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from .cpu_features import has_bf16_dot, has_int8_dot
from .linear import ACTIVATIONS, ONEDNN_POST_OPS
from .model import attention_per_run, fastest_cpu_attention

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
# Migration strength: 0 keeps the activations as they are, 1 moves all their range into the
# weights. 0.5 is SmoothQuant's default and measured best here (benchmarks/RESULTS.md).
SMOOTH_ALPHA = 0.5
_CALIBRATION_BATCH = 32
# Row tiles of about this many bytes of float32 GEMM output (see Int8Linear.forward).
_TILE_BYTES = 1 << 20
_MIN_TILE_ROWS = 256
_MAX_CALIBRATION_TEXTS = 4096
# Calibration runs the float model twice over its text at load: 200 SciFact abstracts (51k
# tokens) took 29 s, 16k tokens of them 8.9 s (2 cores). The shipped text is 2,679 tokens.
_MAX_CALIBRATION_TOKENS = 8192


def default_calibration_texts() -> list[str]:
    """The calibration text that ships with minilm: varied English, written for the project."""
    text = resources.files("minilm").joinpath("data", "calibration.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def check_quantize(quantize, device: torch.device) -> None:
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")
    if device.type != "cpu":
        raise ValueError(f"quantize={quantize!r} runs on CPU only (it uses the CPU's int8 instructions); "
                         f"got device {device}. Use dtype='float16' or 'bfloat16' on {device.type}")


def check_calibration_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise TypeError("calibration_texts must be a list of str (one text per item), "
                        f"got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"calibration_texts must hold only str; item {i} is {type(t).__name__}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("calibration_texts holds no non-empty text; pass a few hundred representative "
                         "sentences or paragraphs, or None for the text that ships with minilm")
    if len(texts) > _MAX_CALIBRATION_TEXTS:
        logger.info("calibrating int8 on the first %d of %d calibration texts", _MAX_CALIBRATION_TEXTS, len(texts))
        texts = texts[:_MAX_CALIBRATION_TEXTS]
    return texts


# --------------------------------------------------------------------------- the GEMM
def gemm_backend() -> str:
    """``"onednn"``: oneDNN's u8s8 int8 matmul (VNNI / AMX-INT8 / AVX2 paths chosen by oneDNN);
    ``"int_mm"``: ``torch._int_mm``, for builds without oneDNN."""
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "onednn"
    return "int_mm"


def weight_max() -> int:
    """The largest int8 weight code the GEMM can take without error: 127 where it sums
    u8 x s8 products in 32 bits (VNNI, AMX), 63 where it first adds pairs of them in a
    saturating 16-bit sum (AVX2 and AVX-512 without VNNI: ``vpmaddubsw``).

    With 255 x 127 a pair can reach 64,770 and clips at 32,767: on this Zen 4 capped to AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``) the min cosine to fp32 fell to 0.956 on long text. 7-bit
    weights cannot overflow (2 x 255 x 63 = 32,130), and they cost less fidelity than 7-bit
    activations, whose outlier tokens need every bit (:func:`minilm.cpu_features.has_int8_dot`).
    """
    return 127 if has_int8_dot() else 63


def quantize_weight(w: Tensor, wmax: int = 127) -> tuple[Tensor, Tensor]:
    """(out, in) float -> ((out, in) int8 in [-wmax, wmax], (out,) float32 scale): symmetric,
    one scale per output channel."""
    w_scale = w.abs().amax(1).clamp_min(1e-8) / wmax  # (out,)
    return torch.round(w / w_scale[:, None]).clamp_(-wmax, wmax).to(torch.int8), w_scale


def pack_weight(wq: Tensor, backend: str) -> Tensor:
    """int8 ``(out, in)`` weight -> the layout ``int8_gemm`` wants."""
    if backend == "onednn":
        return torch.ops.onednn.qlinear_prepack(wq, None)
    return wq.t().contiguous()  # _int_mm: (in, out)


def int8_gemm(xq: Tensor, w: Tensor, w_scale: Tensor, backend: str, out_dtype: torch.dtype) -> Tensor:
    """``(xq - 128) @ wq^T * w_scale`` in ``out_dtype``: the integer product, scaled per output
    channel (the per-token activation scale is applied by the caller).

    xq: (T, in) uint8, the int8 activation offset by 128 -- oneDNN's fast kernels are u8s8;
    the offset is removed exactly through oneDNN's zero-point compensation.
    """
    if backend == "onednn":
        return torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, w, w_scale, _zero_points(w_scale), None,
                                                  1.0, 0, out_dtype, "none", [], "")
    acc = torch._int_mm((xq.to(torch.int16) - 128).to(torch.int8), w)
    return (acc.to(torch.float32) * w_scale).to(out_dtype)


_ZP_CACHE: dict[int, Tensor] = {}


def _zero_points(w_scale: Tensor) -> Tensor:
    n = w_scale.numel()
    if n not in _ZP_CACHE:
        _ZP_CACHE[n] = torch.zeros(n, dtype=torch.int64)
    return _ZP_CACHE[n]


def quantize_rows(x: Tensor, inv_smooth: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """(T, in) float -> ((T, in) uint8 = round(x / s / scale) + 128, (T, 1) float32 scale).

    Written for few passes over memory, which is what these elementwise steps cost: two
    read-only reductions, one fused multiply-add written in place, one truncating cast.
    """
    owned = inv_smooth is not None or x.dtype != torch.float32  # x is then a temporary of ours
    x = x.float()
    if inv_smooth is not None:
        x = x * inv_smooth
    # max(amax, -amin): two read-only passes, where abs().amax() wrote a (T, in) temporary
    # (x1.2-1.4 on 2048 x 1536; linalg.vector_norm(inf) was several times slower than both).
    amax = torch.maximum(x.amax(1, keepdim=True), x.amin(1, keepdim=True).neg_()).clamp_min_(1e-8)  # (T, 1)
    # x * 127 / amax lies in [-127, 127]; adding 128.5 and truncating rounds it (ties upward)
    # into [1, 255], so no clamp is needed. Written over our temporary: a fresh 12 MB buffer
    # per batch cost as much as the arithmetic (page faults), and the codes are the same.
    q = to_codes(torch.addcmul(_HALF_OFFSET, x, 127.0 / amax, out=x if owned else None))
    return q, amax.mul_(1.0 / 127.0)


def to_codes(t: Tensor) -> Tensor:
    """float values in [0, 256) -> uint8, truncating. Through int16: ATen converts float to
    uint8 element by element but float to int16 and int16 to uint8 vectorized, so the two casts
    take a quarter of the time of one (2048 x 384: 50 against 220 us on a Zen 4), and give the
    same codes."""
    return t.to(torch.int16).to(torch.uint8)


_HALF_OFFSET = torch.tensor(128.5)


def _linear_int8(linear: nn.Linear, smooth: Optional[Tensor], wmax: int) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """``linear``'s weight, its input columns scaled by ``smooth`` (the activation's are divided
    by it), quantized per output channel; and its bias in float32."""
    w = linear.weight.detach().float()
    if smooth is not None:
        w = w * smooth.float()
    wq, w_scale = quantize_weight(w, wmax)
    return wq, w_scale, (linear.bias.detach().float() if linear.bias is not None else None)


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` (CPU): int8 weights per output channel, int8 activations per
    token, the product scaled back to the input's float dtype."""

    def __init__(self, linear: nn.Linear, smooth: Optional[Tensor] = None, backend: Optional[str] = None,
                 wmax: int = 127):
        super().__init__()
        self.backend = backend or gemm_backend()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        wq, w_scale, bias = _linear_int8(linear, smooth, wmax)
        self.register_buffer("weight_int8", pack_weight(wq, self.backend), persistent=False)
        self.register_buffer("weight_scale", w_scale, persistent=False)
        self.register_buffer("inv_smooth", None if smooth is None else 1.0 / smooth.float(), persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor, activation: Optional[str] = None) -> Tensor:
        """``activation``: an ``ACTIVATIONS`` name applied to the output, as
        :class:`minilm.linear.Linear` takes it."""
        if x.device.type != "cpu":
            raise ValueError("int8 layers run on CPU only; load the model with quantize=None for "
                             f"{x.device.type}")
        out = x.new_empty(x.shape[0], self.out_features)
        # Row tiles keep the float32 product in cache between the GEMM and its rescaling: on
        # a memory-bound CPU a full-size product cost more than the int8 GEMM saved. Rows are
        # independent, so tiling changes no result.
        rows = max(_MIN_TILE_ROWS, _TILE_BYTES // (4 * self.out_features))
        for i in range(0, x.shape[0], rows):
            q, scale = quantize_rows(x[i:i + rows], self.inv_smooth)
            y = int8_gemm(q, self.weight_int8, self.weight_scale, self.backend, torch.float32)  # (rows, out)
            if self.bias is None:
                torch.mul(y, scale, out=out[i:i + rows])
            else:
                torch.addcmul(self.bias, y, scale, out=out[i:i + rows])
        return out if activation is None else ACTIVATIONS[activation](out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, backend={self.backend}, "
                f"smoothed={self.inv_smooth is not None}")


# ------------------------------------------------------------- static scales, fused layer
class StaticQuant:
    """Static asymmetric uint8 quantization of a (T, in) activation, per tensor, with an
    optional per-channel smoothing divisor folded into the multiplier:
    ``q = clamp(round(x / s / scale) + zero_point, 0, 255)``.

    The scale comes from calibration (the range of ``x / s`` over the calibration text), so it
    is the same for every batch: a token's code depends on nothing but the token.
    """

    def __init__(self, lo: float, hi: float, smooth: Optional[Tensor] = None):
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        self.scale = max(hi - lo, 1e-8) / 255.0
        self.zero_point = int(min(255, max(0, round(-lo / self.scale))))
        self.multiplier = None if smooth is None else (1.0 / (smooth.float() * self.scale))  # (in,)
        # + 0.5 then truncation rounds; values are clamped first, so truncation is a floor.
        self._offset = torch.tensor(self.zero_point + 0.5)

    def __call__(self, x: Tensor) -> Tensor:
        if self.multiplier is None:
            t = torch.add(self._offset, x.float(), alpha=1.0 / self.scale)
        else:  # the float32 multiplier promotes a bf16 x without a separate cast
            t = torch.addcmul(self._offset, x, self.multiplier)
        return to_codes(t.clamp_(0.0, 255.9))

    def dequantize(self, q: Tensor) -> Tensor:
        """The float value of each code, for references and tests."""
        return (q.float() - self.zero_point) * self.scale


class StaticInt8Linear(nn.Module):
    """A linear layer as one oneDNN int8 GEMM with its epilogue fused: statically quantized
    uint8 input, int8 weights per output channel, then bias, and either a residual add (in
    place, into the residual) or an activation followed by requantization to uint8 for the next
    GEMM, so neither the float product nor the activation makes its own pass over memory."""

    def __init__(self, linear: nn.Linear, in_quant: StaticQuant, smooth: Optional[Tensor] = None,
                 activation: Optional[str] = None, out_quant: Optional[StaticQuant] = None, wmax: int = 127):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.in_quant, self.out_quant = in_quant, out_quant
        self.post_op, self.post_op_algorithm = ONEDNN_POST_OPS[activation] if activation else ("none", "")
        wq, w_scale, bias = _linear_int8(linear, smooth, wmax)
        self.register_buffer("weight_int8", pack_weight(wq, "onednn"), persistent=False)
        self.register_buffer("weight_scale", w_scale, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None, out_dtype: torch.dtype = torch.float32) -> Tensor:
        """x: (T, in), float or already-quantized uint8 (the previous GEMM's output) ->
        (T, out) in ``out_dtype``, or uint8 codes of ``out_quant`` when it is set;
        ``residual`` (T, out) is added in place and returned."""
        q = x if x.dtype == torch.uint8 else self.in_quant(x)
        gemm = (q, self.in_quant.scale, self.in_quant.zero_point,
                self.weight_int8, self.weight_scale, _zero_points(self.weight_scale))
        if residual is not None:
            return torch.ops.onednn.qlinear_pointwise.binary(
                *gemm, residual, self.bias, 1.0, 0, residual.dtype, 1.0, 0, "sum", 1.0, "none", [], "")
        if self.out_quant is not None:
            oq = self.out_quant
            return torch.ops.onednn.qlinear_pointwise(
                *gemm, self.bias, oq.scale, oq.zero_point, torch.uint8, self.post_op, [], self.post_op_algorithm)
        return torch.ops.onednn.qlinear_pointwise(
            *gemm, self.bias, 1.0, 0, out_dtype, self.post_op, [], self.post_op_algorithm)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"in_scale={self.in_quant.scale:.3g}, post_op={self.post_op}, "
                f"uint8_out={self.out_quant is not None}")


def _scale_rows(linear: nn.Linear, rows: int, factor: float) -> nn.Linear:
    """A copy of ``linear`` whose first ``rows`` outputs are multiplied by ``factor``."""
    out = copy.deepcopy(linear)
    with torch.no_grad():
        out.weight[:rows] *= factor
        if out.bias is not None:
            out.bias[:rows] *= factor
    return out


class Int8Layer(nn.Module):
    """A post-LayerNorm encoder layer (``minilm.model.Layer``) on four fused int8 GEMMs.

    Per layer that leaves three quantizations of a 384-wide activation, attention and the two
    LayerNorms as separate ops; the biases, both residual adds, the activation and the
    quantization of the 1536-wide MLP activation run inside the GEMMs.

    ``down_per_token``: the MLP's down projection instead takes per-token scales (an
    :class:`Int8Linear`), and the up GEMM emits the float activation: for the layers where one
    static range serves that activation worst (:func:`needs_per_token_down`).
    """

    def __init__(self, layer: nn.Module, stats: dict[str, tuple[Tensor, Tensor]], alpha: Optional[float],
                 activation: str, wmax: int = 127, down_per_token: bool = False,
                 attn_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.down_per_token = down_per_token
        self.num_heads, self.head_dim = layer.attn.num_heads, layer.attn.head_dim
        H = self.num_heads * self.head_dim
        self.attn_norm, self.mlp_norm = layer.attn_norm, layer.mlp_norm

        def smoothed(name: str, lin: nn.Linear) -> tuple[StaticQuant, Optional[Tensor]]:
            lo, hi = stats[name]  # (in,) per-channel min and max over the calibration text
            s = None if alpha is None else smoothing_factors((lo, hi), lin.weight, alpha)
            lo_s, hi_s = (lo, hi) if s is None else (lo / s, hi / s)
            return StaticQuant(lo_s.min(), hi_s.max(), s), s

        # The QKV GEMM emits the attention dtype itself, with 1/sqrt(head_dim) folded into the
        # query rows.
        self.attn_dtype = attn_dtype
        quant, s = smoothed("attn.qkv", layer.attn.qkv)  # smoothing sees the unscaled weight
        self.qkv = StaticInt8Linear(_scale_rows(layer.attn.qkv, H, self.head_dim ** -0.5), quant, s, wmax=wmax)
        quant, s = smoothed("attn.out", layer.attn.out)
        self.out = StaticInt8Linear(layer.attn.out, quant, s, wmax=wmax)
        # The MLP activation's codes are produced by the up GEMM itself, so they cannot be
        # smoothed per channel: one range for the whole tensor.
        quant, s = smoothed("mlp.up", layer.mlp.up)
        if down_per_token:
            self.up = StaticInt8Linear(layer.mlp.up, quant, s, activation=activation, wmax=wmax)
            s = None if alpha is None else smoothing_factors(stats["mlp.down"], layer.mlp.down.weight, alpha)
            self.down = Int8Linear(layer.mlp.down, s, "onednn", wmax)
        else:
            lo, hi = stats["mlp.down"]
            down_quant = StaticQuant(lo.min(), hi.max())
            self.up = StaticInt8Linear(layer.mlp.up, quant, s, activation=activation, out_quant=down_quant,
                                       wmax=wmax)
            self.down = StaticInt8Linear(layer.mlp.down, down_quant, wmax=wmax)

    def forward(self, x: Tensor, batch, backend: str) -> Tensor:
        T, H = x.shape
        qkv = self.qkv(x, out_dtype=self.attn_dtype).view(T, 3, self.num_heads, self.head_dim)
        o = attention_per_run(qkv, batch, bias=batch.attn_bias, pick=fastest_cpu_attention, scale=1.0)
        o = o.reshape(T, H)  # (total_tokens, hidden), attn_dtype
        # The residual adds write into their residual: the layer consumes its input, which
        # the encoder's loop rebinds and nothing else holds.
        x = self.attn_norm(self.out(o, residual=x))
        if self.down_per_token:
            return self.mlp_norm(self.down(self.up(x, out_dtype=x.dtype)).add_(x))
        g = self.up(x)  # (total_tokens, intermediate) uint8: activation and requantization fused
        return self.mlp_norm(self.down(g, residual=x))


# --------------------------------------------------------------------------- calibration
@torch.inference_mode()
def activation_ranges(encoder: nn.Module, batches: Iterable, names: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-input-channel (min, max) of the activation each named ``nn.Linear`` saw over ``batches``."""
    ranges: dict[str, tuple[Tensor, Tensor]] = {}
    modules = dict(encoder.named_modules())

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().float()
            lo, hi = x.amin(0), x.amax(0)
            if name in ranges:
                lo, hi = torch.minimum(ranges[name][0], lo), torch.maximum(ranges[name][1], hi)
            ranges[name] = (lo, hi)
        return fn

    _run_hooked(encoder, batches, [modules[n].register_forward_pre_hook(hook(n)) for n in names])
    return ranges


def _run_hooked(encoder: nn.Module, batches: Iterable, handles: list) -> None:
    """Run the float encoder over ``batches`` for its hooks' sake, then remove the hooks."""
    try:
        for batch in batches:
            encoder(batch)
    finally:
        for h in handles:
            h.remove()


def smoothing_factors(x_range: tuple[Tensor, Tensor], weight: Tensor, alpha: float = SMOOTH_ALPHA) -> Tensor:
    """SmoothQuant: s_j = max|x_j|^alpha / max|W_j|^(1 - alpha), per input channel j, from the
    activation's per-channel (min, max) as :func:`activation_ranges` measures it."""
    lo, hi = x_range
    x_max = torch.maximum(lo.abs(), hi.abs())
    w_max = weight.detach().float().abs().amax(0).clamp_min(1e-5)
    s = x_max.clamp_min(1e-5).pow(alpha) / w_max.pow(1.0 - alpha)
    return s.clamp_min(1e-5)


def int8_scheme(encoder: nn.Module) -> str:
    """``"static"``: :class:`Int8Layer`, every GEMM with static input scales and a fused
    epilogue -- needs oneDNN's int8 linear and an activation it can fuse;
    ``"dynamic"``: :class:`Int8Linear` in the float layers, per-token scales, any build."""
    if gemm_backend() == "onednn" and encoder.config.hidden_act in ONEDNN_POST_OPS:
        return "static"
    return "dynamic"


# Per-token scales for the MLP activation go to the half of the layers where one static range
# does worst against them (output error of the down projection, on the calibration text), if
# it does at least this much worse there. all-MiniLM-L6-v2, shipped text: layers 0-2 (ratios
# 4.9, 4.9, 5.8; layers 3-5: 2.6, 1.7, 1.5). That raised the min cosine to fp32 on
# tests/data/sentences.txt from 0.9716 to 0.9893 (layer 0 alone: 0.9818), for ~10% of the
# speed. A fixed threshold instead moved with the calibration text (STS-train sentences put
# layers 0-2 between 2 and 3), the ranking much less.
PER_TOKEN_MIN_RATIO = 1.5


@torch.inference_mode()
def down_error_ratios(encoder: nn.Module, batches: Sequence, ranges: dict[str, tuple[Tensor, Tensor]]) -> list[float]:
    """Per layer: the squared error that one static range for the MLP activation puts on the
    down projection's output over ``batches``, divided by the error per-token scales put
    there. (The static range is set by the largest activation anywhere, which leaves few
    codes for most tokens.)"""
    errors = [[0.0, 0.0] for _ in encoder.layers]
    handles = []
    for i, layer in enumerate(encoder.layers):
        lo, hi = ranges[f"layers.{i}.mlp.down"]
        quant = StaticQuant(lo.min(), hi.max())

        def hook(mod, args, e=errors[i], quant=quant):
            x = args[0].float()
            per_token_q, scale = quantize_rows(x, None)
            w = mod.weight.float()
            e[0] += float(((quant.dequantize(quant(x)) - x) @ w.T).square().sum())
            e[1] += float((((per_token_q.float() - 128) * scale - x) @ w.T).square().sum())
        handles.append(layer.mlp.down.register_forward_pre_hook(hook))
    _run_hooked(encoder, batches, handles)
    return [static / max(token, 1e-30) for static, token in errors]


def needs_per_token_down(ratios: Sequence[float], min_ratio: float = PER_TOKEN_MIN_RATIO) -> list[int]:
    """The layers (at most half of them) whose MLP activation takes per-token scales, from
    :func:`down_error_ratios`."""
    ranked = sorted(range(len(ratios)), key=lambda i: -ratios[i])[:len(ratios) // 2]
    return sorted(i for i in ranked if ratios[i] >= min_ratio)


def quantize_encoder(encoder: nn.Module, calibration_batches: Optional[Iterable] = None,
                     alpha: Optional[float] = SMOOTH_ALPHA, scheme: Optional[str] = None,
                     down_per_token: Optional[Iterable[int]] = None) -> nn.Module:
    """Quantize the encoder's layers in place: with ``scheme="static"`` each layer becomes an
    :class:`Int8Layer`, with ``"dynamic"`` each ``nn.Linear`` inside them an
    :class:`Int8Linear` (default: :func:`int8_scheme`).

    ``calibration_batches``: encoder inputs (``VarlenBatch``) over which activation ranges are
    measured, for the static scales and the smoothing. The static scheme needs them; the
    dynamic one quantizes without smoothing when they are None or ``alpha`` is None.
    ``down_per_token``: the indices of the layers whose MLP down projection takes per-token
    scales in the static scheme (default: :func:`needs_per_token_down` decides from the
    calibration text).
    """
    scheme = scheme or int8_scheme(encoder)
    if scheme not in ("static", "dynamic"):
        raise ValueError(f"scheme must be 'static' or 'dynamic', got {scheme!r}")
    names = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and n.startswith("layers.")]
    wmax = weight_max()
    if scheme == "static":
        # Attention in bf16 where the CPU has bf16 dot products: its matmuls then run at about
        # twice float32's rate (benchmarks/RESULTS.md, "CPU attention kernels").
        attn_dtype = torch.bfloat16 if has_bf16_dot() else torch.float32
        if calibration_batches is None:
            raise ValueError("static int8 scales need calibration batches")
        batches = list(calibration_batches)
        ranges = activation_ranges(encoder, batches, names)
        if down_per_token is None:
            down_per_token = needs_per_token_down(down_error_ratios(encoder, batches, ranges))
        per_token = set(down_per_token)
        for i, layer in enumerate(encoder.layers):
            stats = {n[len(f"layers.{i}."):]: r for n, r in ranges.items() if n.startswith(f"layers.{i}.")}
            encoder.layers[i] = Int8Layer(layer, stats, alpha, encoder.config.hidden_act, wmax,
                                          down_per_token=i in per_token, attn_dtype=attn_dtype)
        logger.info("int8: %d layers quantized with static scales (fused oneDNN GEMMs, weights in +-%d, smoothing "
                    "%s); per-token MLP activation in layers %s", len(encoder.layers), wmax,
                    f"alpha={alpha}" if alpha else "off", sorted(per_token))
        return encoder
    smooth_on = calibration_batches is not None and alpha is not None and alpha > 0
    ranges = activation_ranges(encoder, calibration_batches, names) if smooth_on else {}
    backend = gemm_backend()
    modules = dict(encoder.named_modules())
    for n in names:
        parent_name, _, child = n.rpartition(".")
        lin = modules[n]
        smooth = None
        if n in ranges:
            smooth = smoothing_factors(ranges[n], lin.weight, alpha)
        setattr(modules[parent_name], child, Int8Linear(lin, smooth, backend, wmax))
    logger.info("int8: %d linear layers quantized (%s GEMM, per-token scales, weights in +-%d, smoothing %s)",
                len(names), backend, wmax, f"alpha={alpha}" if smooth_on else "off")
    return encoder


def calibration_batches(tokenizer, texts: Sequence[str], position_offset: int) -> Iterable:
    """Tokenize ``texts`` as ``encode()`` would and yield encoder batches of them."""
    from .varlen import make_varlen_batch

    ids = tokenizer.encode(list(texts))
    total = 0
    for n, seq in enumerate(ids):
        total += len(seq)
        if total > _MAX_CALIBRATION_TOKENS and n > 0:
            logger.info("calibrating int8 on the first %d of %d texts (%d tokens)", n, len(ids), total - len(seq))
            ids = ids[:n]
            break
    for i in range(0, len(ids), _CALIBRATION_BATCH):
        yield make_varlen_batch(ids[i:i + _CALIBRATION_BATCH], position_offset, with_token_types=False)


def quantize_model(encoder: nn.Module, quantize: Optional[str], device: torch.device, tokenizer,
                   calibration_texts: Optional[Sequence[str]] = None) -> Optional[list[str]]:
    """``SentenceTransformer(quantize=..., calibration_texts=...)``: validate both, calibrate on
    ``calibration_texts`` (default: the text shipped with minilm) and quantize the encoder in
    place. Returns the validated calibration texts (None for the default)."""
    if quantize is None:
        raise ValueError("calibration_texts is only used with quantize='int8'")
    check_quantize(quantize, device)
    texts = None if calibration_texts is None else check_calibration_texts(calibration_texts)
    batches = calibration_batches(tokenizer, texts or default_calibration_texts(), encoder.config.position_offset)
    quantize_encoder(encoder, batches)
    return texts
