"""The encoder's linear layer: ``nn.Linear`` whose CPU forward runs oneDNN on a packed weight.

``F.linear`` on the CPU goes to MKL's sgemm for float32 and to oneDNN for bfloat16, and both
repack the weight into the GEMM kernel's blocked layout on every call. Packing it once (the
reorder that Inductor's weight freezing does) and calling oneDNN's matmul on it measured, on
a 2-core Zen 4 (AVX-512, AVX512_BF16), per GEMM of all-MiniLM-L6-v2: float32 14-30% faster
than MKL, bfloat16 5-20% (more for small batches). With the MLP's GELU fused into the
up-projection's epilogue (one pass and one (tokens, 1536) buffer fewer per layer: float32 x1.13
on long text; bfloat16 x0.99-1.04, in the noise), end to end against ``F.linear`` in one process
(``enabled`` flipped between interleaved runs, ``benchmarks/bench_cpu_linear.py``): float32
x1.22-1.27 on 256-token text and x1.12-1.17 on sentences, bfloat16 x1.10-1.12 and x1.08-1.16.
Under an AVX2 cap, float32 was even with MKL.

bfloat16 products are bit-identical to ``F.linear`` (the fused GELU rounds once instead of
twice, so the MLP's bf16 output is not). float32 ones differ at rounding level
(the summation order of another GEMM kernel: max 1.5e-7 on normalized sentence embeddings), so
the float32 golden embeddings were regenerated with this change. Rows are independent of the
batch from 2 rows on (the CPU strategy pads every batch to 16 rows).

The packed weight is a cache beside the parameter (so the linear weights take twice their
memory on the CPU: 40.5 MiB more for all-MiniLM-L6-v2 in float32), keyed on its storage,
version and dtype, so ``.to()``, ``.half()`` or loading a state dict simply repack it on the
next CPU call. Anything
the packed path does not cover (CUDA, autograd, inputs that are not 2-D, a dtype the CPU's
oneDNN cannot pack, such as bfloat16 without AVX-512 or float16 without AVX512_FP16/AMX) runs
``F.linear``.
"""

from __future__ import annotations

import logging
import platform
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# Flip to False to run every CPU linear through F.linear (benchmarks A/B the two this way).
enabled = True

# The MLP activations, by ``config.hidden_act`` name.
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}
# The oneDNN post-op (name, algorithm) of those that can run inside a GEMM's epilogue; the
# int8 layers fuse them too.
ONEDNN_POST_OPS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"),
                   "gelu_pytorch_tanh": ("gelu", "tanh"), "relu": ("relu", "")}


def _ops_available() -> bool:
    # oneDNN's x86 kernels are the ones measured; elsewhere (Arm, builds without mkldnn) the
    # op may be missing or slower.
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise
        torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return False
    return True


_AVAILABLE = _ops_available()


class Linear(nn.Linear):
    """``nn.Linear`` with a packed-weight oneDNN forward on the CPU (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._packed: Optional[tuple[tuple, Optional[Tensor]]] = None  # (key, packed weight or None)

    def _packed_weight(self, x: Tensor) -> Optional[Tensor]:
        w = self.weight
        if (not (enabled and _AVAILABLE) or x.device.type != "cpu" or x.dim() != 2 or x.dtype != w.dtype
                or (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))
                or (self.bias is not None and self.bias.dtype != w.dtype)):
            return None
        try:
            version = w._version
        except RuntimeError:  # an inference tensor keeps no version counter
            version = -1
        key = (w.data_ptr(), version, w.dtype, w.device)
        cached = self._packed
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)
        except RuntimeError as e:  # e.g. bfloat16 on a CPU without AVX-512: not packable here
            logger.debug("linear weight %s not packed for oneDNN (%s); using F.linear", tuple(w.shape), e)
            packed = None
        self._packed = (key, packed)  # a race only packs twice: both results are equal
        return packed

    def forward(self, x: Tensor, activation: Optional[str] = None) -> Tensor:
        """``x @ W^T + b``, then ``activation`` (an :data:`ACTIVATIONS` name) if given: inside
        the GEMM's epilogue when the packed path runs (GELU and ReLU). Taking the
        activation here rather than in a separate method keeps the call going through
        ``__call__``, so forward hooks (int8 calibration) still see this layer."""
        packed = self._packed_weight(x)
        if packed is None:
            y = F.linear(x, self.weight, self.bias)
        elif activation in ONEDNN_POST_OPS:
            op, algorithm = ONEDNN_POST_OPS[activation]
            return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, op, [], algorithm)
        else:
            y = torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")
        return y if activation is None else ACTIVATIONS[activation](y)

    def __getstate__(self):
        # A packed oneDNN tensor cannot be pickled or deep-copied; it is rebuilt on demand.
        return {**self.__dict__, "_packed": None}
