"""Which dot-product instructions this CPU offers to oneDNN, for the two choices that depend on
them: the width of int8 weights (:func:`minilm.int8.weight_max`) and the dtype of the int8
layers' attention (:class:`minilm.int8.Int8Layer`).

Reads the ``flags`` line of /proc/cpuinfo and honours oneDNN's ISA cap
(``ONEDNN_MAX_CPU_ISA``), which is also how the benchmarks emulate an older CPU on a newer one.
Where neither tells (no /proc, another OS), both answers are the safe ``False``. Torch-free.
"""

from __future__ import annotations

import os

# Environment variables that make oneDNN, MKL and ATen's own kernels use an older instruction
# set (``MKL_CBWR`` pins MKL's code path), so that an AVX-512 machine can emulate, e.g., an
# AVX2-only CPU when they are set before Python starts:
#   ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "MKL_CBWR")


def isa_caps() -> dict[str, str]:
    """Those of :data:`ISA_CAP_VARIABLES` that are set, with their values."""
    return {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)}


_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_BF16_DOT_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Substrings of the ONEDNN_MAX_CPU_ISA values that admit each instruction family
# (AVX512_CORE_VNNI, AVX2_VNNI, AVX512_CORE_BF16, AVX512_CORE_AMX, AVX10_1_512, ...).
_INT8_DOT_CAPS = ("VNNI", "AMX", "BF16", "FP16", "AVX10")
_BF16_DOT_CAPS = ("BF16", "AMX", "FP16", "AVX10")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them; empty where they cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def _onednn_allows(markers: tuple[str, ...]) -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cap in ("ALL", "DEFAULT") or any(m in cap for m in markers)


def has_int8_dot() -> bool:
    """u8 x s8 dot products summed in 32 bits (VNNI, AMX-INT8), not capped away."""
    return _onednn_allows(_INT8_DOT_CAPS) and bool(_INT8_DOT_FLAGS & cpu_flags())


def has_bf16_dot() -> bool:
    """Native bf16 dot products (AVX512-BF16, AMX-BF16), not capped away: without them oneDNN
    emulates bf16 matmuls, slower than float32."""
    return _onednn_allows(_BF16_DOT_CAPS) and bool(_BF16_DOT_FLAGS & cpu_flags())
