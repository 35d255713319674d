"""``minilm encode --input --output`` keeps its memory flat: resident memory must not creep up
with the rows streamed. It did, by ~1.5 KB a row with the real model, from freed memory that
glibc kept in fragmented heaps, and in bfloat16 also from oneDNN's caches of one kernel per
GEMM shape (``minilm.memory``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_random_bert, save_st_model

ROWS = 200_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, real_model_path) -> Path:
    """Cheap, but with the real model's 1536-wide MLP: its per-batch activations (up to 12 MB)
    are what fragmented the heap; a model with small tensors does not show the problem."""
    d = tmp_path_factory.mktemp("tiny_rss")
    hf = save_random_bert(d / "hf", real_model_path, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=1536)
    return save_st_model(d / "st", hf)


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def _rows_done(sidecar: Path) -> int | None:
    try:
        return json.loads(sidecar.read_text())["rows_done"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc behaviour")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streaming_rss_slope_is_flat(tmp_path, tiny_model, dtype):
    rng = random.Random(0)
    words = "alpha beta gamma delta kappa lambda sigma omega river stone cloud light".split()
    src = tmp_path / "in.txt"
    # A unique number per line: varied token counts and vocabulary, as in a real corpus.
    src.write_text("".join(f"{' '.join(rng.choices(words, k=rng.randint(1, 6)))} {i}\n" for i in range(ROWS)),
                   encoding="utf-8")
    out = tmp_path / "emb.npy"
    sidecar = tmp_path / "emb.npy.progress"
    # The CLI bounds oneDNN's caches itself; a value inherited from the caller would hide that.
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "minilm.cli", "encode", "--input", str(src), "--output", str(out),
                          "--model", str(tiny_model), "--chunk-size", "4096", "--batch-size", "128",
                          "--dtype", dtype, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[int, int]] = []  # (rows done, RSS KB), once per chunk
    deadline = time.monotonic() + 600  # ~40 s on an idle 2-core machine
    try:
        while p.poll() is None and time.monotonic() < deadline:
            rows, rss = _rows_done(sidecar), _rss_kb(p.pid)
            if rows is not None and rss is not None and (not samples or rows > samples[-1][0]):
                samples.append((rows, rss))
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert np.load(out, mmap_mode="r").shape == (ROWS, 32)

    # Past the first chunks (model, tokenizer and allocator warm-up): least-squares slope.
    print(f"\nsamples (rows, MB): {[(r, kb // 1024) for r, kb in samples]}")
    tail = [(r, kb) for r, kb in samples if r >= 40_000]
    assert len(tail) >= 10, f"too few samples to judge: {samples}"
    x = np.array([r for r, _ in tail], dtype=np.float64)
    y = np.array([kb for _, kb in tail], dtype=np.float64)
    slope = np.polyfit(x, y, 1)[0]  # KB per row
    growth_mb = slope * ROWS / 1024
    excursion_mb = (y.max() - y[0]) / 1024
    shown = [(r, kb // 1024) for r, kb in samples]
    print(f"\nRSS {y[0] / 1024:.0f} MB at {tail[0][0]} rows, max {y.max() / 1024:.0f} MB, "
          f"{y[-1] / 1024:.0f} MB at {tail[-1][0]}; slope {slope * 1024:.1f} B/row")
    # 10 MB per 200k rows is 50 bytes a row: a 1M-row run would stay within ~50 MB.
    assert growth_mb < 10, f"RSS grows {slope * 1024:.0f} bytes per row ({growth_mb:.0f} MB per {ROWS} rows): {shown}"
    # Flat means flat: no chunk may leave the process much bigger than after warm-up.
    assert excursion_mb < 25, f"RSS rose {excursion_mb:.0f} MB above its level at {tail[0][0]} rows: {shown}"


def test_native_caches_are_bounded_unless_the_user_chose(monkeypatch):
    from minilm.memory import bound_native_caches

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "300")
    got = bound_native_caches(16)
    assert got == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16", "LRU_CACHE_CAPACITY": "300"}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
