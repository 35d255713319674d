"""Streaming: encode_iter / generators, and `minilm encode --input --output` writing the .npy a
chunk at a time with memory that does not grow with the corpus, and resuming after an interrupt."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import minilm
from conftest import save_random_bert, save_st_model

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# The tiny model's matrices are far too small to gain from a second thread, and on a busy machine
# OpenMP threads waiting on each other make every op ~100x slower.
ENV_1T = {**ENV, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# `python -m minilm.cli`, reporting its own peak RSS (VmHWM) at exit. Measuring from outside
# (wait4 / RUSAGE_CHILDREN) is wrong here: Linux carries the pre-exec peak of the forked (or
# vforked) pytest process into the child's ru_maxrss, so it would report pytest's memory.
_RUN_CLI = """
import atexit, runpy, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    print(f"PEAK_RSS_KB {kb}", file=sys.stderr)
atexit.register(_peak)
sys.argv[0] = "minilm"
runpy.run_module("minilm.cli", run_name="__main__", alter_sys=True)
"""


def _cli(args: list[str], timeout: float = 300, env=ENV) -> tuple[int, str, str, float, float]:
    """Run the CLI; returns (exit code, stdout, stderr, peak RSS in MB, seconds)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    elapsed = time.perf_counter() - t0
    peak = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    return r.returncode, r.stdout, r.stderr, (peak[-1] / 1024 if peak else float("nan")), elapsed


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, real_model_path) -> Path:
    """A small random-weight model with the real tokenizer: 200k texts in seconds, not minutes."""
    d = tmp_path_factory.mktemp("tiny")
    hf = save_random_bert(d / "hf", real_model_path, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64)
    return save_st_model(d / "st", hf)


def _corpus(path: Path, sentences: list[str], n: int) -> list[str]:
    reps = -(-n // len(sentences))
    texts = (sentences * reps)[:n]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts


def test_encode_iter_and_generators(ml_real, sts_sentences):
    texts = sts_sentences[:300]
    ref = ml_real.encode(texts)
    chunks = list(ml_real.encode_iter(iter(texts), chunk_size=128))
    assert [c.shape for c in chunks] == [(128, 384), (128, 384), (44, 384)]
    np.testing.assert_array_equal(np.concatenate(chunks), ref)
    np.testing.assert_array_equal(ml_real.encode(t for t in texts), ref)
    assert list(ml_real.encode_iter([])) == []
    with pytest.raises(TypeError, match="iterable of str"):
        ml_real.encode_iter("not a list")
    with pytest.raises(TypeError, match="item 2 is int"):
        list(ml_real.encode_iter(["a", "b", 3]))
    with pytest.raises(ValueError, match="chunk_size"):
        ml_real.encode_iter(texts, chunk_size=0)


def test_cli_streams_real_model_rows_equal_encode(tmp_path, ml_real, real_model_path, sts_sentences):
    texts = _corpus(tmp_path / "in.txt", sts_sentences[:250], 250)
    out = tmp_path / "emb.npy"
    rc, so, se, _, _ = _cli(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out),
                             "--model", str(real_model_path), "--chunk-size", "64", "--no-progress"])
    assert rc == 0, se
    assert not (tmp_path / "emb.npy.progress").exists()
    np.testing.assert_array_equal(np.load(out), ml_real.encode(texts))


def test_cli_streaming_memory_does_not_grow_with_corpus(tmp_path, tiny_model, sts_sentences):
    results = {}
    for n in (20_000, 200_000):
        d = tmp_path / str(n)
        d.mkdir()
        texts = _corpus(d / "in.txt", sts_sentences, n)
        out = d / "emb.npy"
        rc, so, se, rss, secs = _cli(["encode", "--input", str(d / "in.txt"), "--output", str(out),
                                      "--model", str(tiny_model), "--no-progress"], env=ENV_1T)
        assert rc == 0, se
        emb = np.load(out, mmap_mode="r")
        assert emb.shape == (n, 32) and emb.dtype == np.float32
        results[n] = (rss, secs, texts, emb)
        print(f"\nstreaming {n} texts: peak RSS {rss:.0f} MB, {secs:.1f} s")

    small, big = results[20_000][0], results[200_000][0]
    # 10x the texts: the ~300 MB of text and embeddings of the large run must not show up in memory.
    assert big - small < 100, f"peak RSS {small:.0f} MB at 20k texts but {big:.0f} MB at 200k"

    # Exactly one row per line, in order: a sample of rows equals in-memory encode.
    model = minilm.SentenceTransformer(str(tiny_model), device="cpu")
    texts, emb = results[200_000][2], results[200_000][3]
    idx = sorted(set(list(range(0, 200_000, 4999)) + [8191, 8192, 199_998, 199_999]))
    with _one_thread():
        np.testing.assert_array_equal(np.asarray(emb[idx]), model.encode([texts[i] for i in idx]))
    # Repeated sentences give repeated rows: line i and line i + len(sts_sentences) hold the same text.
    np.testing.assert_array_equal(np.asarray(emb[5]), np.asarray(emb[5 + len(sts_sentences)]))


def test_cli_interrupt_reports_progress_and_resume_completes(tmp_path, tiny_model, sts_sentences):
    n = 30_000
    src = tmp_path / "in.txt"
    texts = _corpus(src, sts_sentences, n)
    out = tmp_path / "emb.npy"
    side = tmp_path / "emb.npy.progress"
    args = ["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_model),
            "--chunk-size", "500", "--no-progress"]
    p = subprocess.Popen([sys.executable, "-m", "minilm.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV_1T)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if side.exists() and json.loads(side.read_text())["rows_done"] >= 2000:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    state = json.loads(side.read_text())
    done = state["rows_done"]
    assert 2000 <= done < n and state["rows_total"] == n
    assert f"wrote {done} of {n} rows" in err

    r = subprocess.run([sys.executable, "-m", "minilm.cli", *args, "--resume"], capture_output=True, text=True,
                       env=ENV_1T, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"embedded {n - done} texts" in r.stderr
    assert not side.exists()
    model = minilm.SentenceTransformer(str(tiny_model), device="cpu")
    with _one_thread():
        np.testing.assert_array_equal(np.load(out), model.encode(texts))

    # Nothing left to resume.
    r = subprocess.run([sys.executable, "-m", "minilm.cli", *args, "--resume"], capture_output=True, text=True,
                       env=ENV_1T, timeout=300)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_cli_streaming_with_workers(tmp_path, tiny_model, sts_sentences):
    texts = _corpus(tmp_path / "in.txt", sts_sentences, 700)
    out = tmp_path / "emb.npy"
    rc, so, se, _, _ = _cli(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out), "--model",
                             str(tiny_model), "--workers", "2", "--chunk-size", "100", "--no-progress"], env=ENV_1T)
    assert rc == 0, se
    model = minilm.SentenceTransformer(str(tiny_model), device="cpu")
    with _one_thread():
        np.testing.assert_array_equal(np.load(out), model.encode(texts))
