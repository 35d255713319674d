"""CPU feature detection: the flags come from a cpuinfo file, oneDNN's ISA cap can only take
instructions away."""

from __future__ import annotations

import pytest

from minilm import cpu_features


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    def make(flags: str):
        f = tmp_path / "cpuinfo"
        f.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\nbugs\t\t: none\n")
        monkeypatch.setattr(cpu_features, "cpu_flags",
                            lambda path=str(f), read=cpu_features.cpu_flags: read(path))
        return f
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    return make


def test_flags_are_read_from_the_flags_line(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("model name\t: X avx512_bf16 in the name\nflags\t\t: fpu avx2 avx512f\n")
    assert cpu_features.cpu_flags(str(f)) == {"fpu", "avx2", "avx512f"}
    assert cpu_features.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("flags, int8_dot, bf16_dot", [
    ("fpu avx2 fma", False, False),                                   # Haswell-class
    ("avx2 avx512f avx512bw avx512vl", False, False),                 # Skylake-X: no VNNI, no BF16
    ("avx2 avx512f avx512_vnni", True, False),                        # Cascade Lake
    ("avx2 avx512f avx512_vnni avx512_bf16", True, True),             # Zen 4, Cooper Lake
    ("avx2 avx_vnni", True, False),                                   # Alder Lake
    ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", True, True),  # Sapphire Rapids
])
def test_dot_product_families(fake_cpu, flags, int8_dot, bf16_dot):
    fake_cpu(flags)
    assert cpu_features.has_int8_dot() is int8_dot
    assert cpu_features.has_bf16_dot() is bf16_dot


@pytest.mark.parametrize("cap, int8_dot, bf16_dot", [
    ("AVX2", False, False), ("avx512_core", False, False), ("AVX512_CORE_VNNI", True, False),
    ("AVX512_CORE_BF16", True, True), ("AVX512_CORE_AMX", True, True), ("ALL", True, True),
])
def test_onednn_cap_takes_instructions_away(fake_cpu, monkeypatch, cap, int8_dot, bf16_dot):
    fake_cpu("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_features.has_int8_dot() is int8_dot
    assert cpu_features.has_bf16_dot() is bf16_dot


def test_isa_caps_lists_only_the_cap_variables_that_are_set(monkeypatch):
    for v in cpu_features.ISA_CAP_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert cpu_features.isa_caps() == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "")  # set but empty: no cap
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # not an instruction-set cap
    assert cpu_features.isa_caps() == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
