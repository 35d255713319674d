"""The `minilm` command line: encode (arguments, files, stdin; streaming a corpus to .npy with flat
memory, interrupt and resume, workers) and search, with the errors it reports."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import minilm
from conftest import OFFLINE_ENV

ENV = OFFLINE_ENV

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


def _corpus(path: Path, sentences: list[str], n: int) -> list[str]:
    reps = -(-n // len(sentences))
    texts = (sentences * reps)[:n]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts



def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "minilm.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=300, **kw)


def test_cli_encode_arguments_file_and_stdin(tmp_path, ml_real):
    texts = ["A man is playing a guitar.", "A woman slices an onion."]
    r = _run(["encode", *texts])
    assert r.returncode == 0, r.stderr
    assert "embedded 2 texts -> (2, 384) float32" in r.stderr

    f = tmp_path / "in.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    r = _run(["encode", "--file", str(f), "--output", str(out)])
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(out), ml_real.encode(texts), atol=1e-6)

    out2 = tmp_path / "emb2.npy"
    r = _run(["encode", "-o", str(out2), "--normalize"], input="\n".join(texts))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(out2), ml_real.encode(texts, normalize_embeddings=True), atol=1e-6)


def test_cli_errors_are_clear(tmp_path):
    r = _run(["encode", "--model", str(tmp_path / "missing"), "hello"])
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _run(["encode", "--prompt-name", "nope", "hello"])
    assert r.returncode == 2 and "Prompt name 'nope' not found" in r.stderr



def test_cli_streams_real_model_rows_equal_encode(tmp_path, ml_real, real_model_path, sentences):
    texts = _corpus(tmp_path / "in.txt", sentences[:250], 250)
    out = tmp_path / "emb.npy"
    rc, so, se, _, _ = _cli(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out),
                             "--model", str(real_model_path), "--chunk-size", "64", "--no-progress"])
    assert rc == 0, se
    assert not (tmp_path / "emb.npy.progress").exists()
    np.testing.assert_array_equal(np.load(out), ml_real.encode(texts))


def test_cli_streaming_memory_does_not_grow_with_corpus(tmp_path, tiny_folder, sentences):
    results = {}
    for n in (20_000, 200_000):
        d = tmp_path / str(n)
        d.mkdir()
        texts = _corpus(d / "in.txt", sentences, n)
        out = d / "emb.npy"
        rc, so, se, rss, secs = _cli(["encode", "--input", str(d / "in.txt"), "--output", str(out),
                                      "--model", str(tiny_folder), "--no-progress"], env=ENV_1T)
        assert rc == 0, se
        emb = np.load(out, mmap_mode="r")
        assert emb.shape == (n, 32) and emb.dtype == np.float32
        results[n] = (rss, secs, texts, emb)
        print(f"\nstreaming {n} texts: peak RSS {rss:.0f} MB, {secs:.1f} s")

    small, big = results[20_000][0], results[200_000][0]
    # 10x the texts: the ~300 MB of text and embeddings of the large run must not show up in memory.
    assert big - small < 100, f"peak RSS {small:.0f} MB at 20k texts but {big:.0f} MB at 200k"

    # Exactly one row per line, in order: a sample of rows equals in-memory encode.
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    texts, emb = results[200_000][2], results[200_000][3]
    idx = sorted(set(list(range(0, 200_000, 4999)) + [8191, 8192, 199_998, 199_999]))
    with _one_thread():
        np.testing.assert_array_equal(np.asarray(emb[idx]), model.encode([texts[i] for i in idx]))
    # Repeated sentences give repeated rows: line i and line i + len(sentences) hold the same text.
    np.testing.assert_array_equal(np.asarray(emb[5]), np.asarray(emb[5 + len(sentences)]))


def test_cli_interrupt_reports_progress_and_resume_completes(tmp_path, tiny_folder, sentences):
    n = 30_000
    src = tmp_path / "in.txt"
    texts = _corpus(src, sentences, n)
    out = tmp_path / "emb.npy"
    side = tmp_path / "emb.npy.progress"
    args = ["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_folder),
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
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    with _one_thread():
        np.testing.assert_array_equal(np.load(out), model.encode(texts))

    # Nothing left to resume.
    r = subprocess.run([sys.executable, "-m", "minilm.cli", *args, "--resume"], capture_output=True, text=True,
                       env=ENV_1T, timeout=300)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_cli_streaming_with_workers(tmp_path, tiny_folder, sentences):
    texts = _corpus(tmp_path / "in.txt", sentences, 700)
    out = tmp_path / "emb.npy"
    rc, so, se, _, _ = _cli(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out), "--model",
                             str(tiny_folder), "--workers", "2", "--chunk-size", "100", "--no-progress"], env=ENV_1T)
    assert rc == 0, se
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    with _one_thread():
        np.testing.assert_array_equal(np.load(out), model.encode(texts))



def test_cli_search(tmp_path, ml_real, texts, monkeypatch, capsys):
    from minilm import cli

    corpus_file = tmp_path / "corpus.txt"
    corpus = texts[:24]
    corpus_file.write_text("\n".join(corpus[:10]) + "\n\n" + "\n".join(corpus[10:]) + "\n", encoding="utf-8")
    qs = [texts[3], texts[15]]
    expect = minilm.semantic_search(ml_real.encode_query(qs), ml_real.encode_document(corpus), top_k=3)
    cache = tmp_path / "emb.npy"

    r = subprocess.run([sys.executable, "-m", "minilm.cli", "search", str(corpus_file), *qs, "--top-k", "3",
                        "--json", "--save-corpus", str(cache)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["query"] for row in rows] == qs
    for row, hits in zip(rows, expect):
        assert [h["text"] for h in row["hits"]] == [corpus[h["corpus_id"]] for h in hits]
        # Line numbers are the file's, counting the blank line that was skipped.
        assert [h["line"] for h in row["hits"]] == [i + 1 + (i >= 10) for i in (h["corpus_id"] for h in hits)]
        np.testing.assert_allclose([h["score"] for h in row["hits"]], [h["score"] for h in hits], atol=1e-5)
    # One cached row per line, the blank one included (as `encode --output` writes them).
    np.testing.assert_allclose(np.load(cache), ml_real.encode_document(corpus[:10] + [""] + corpus[10:]),
                               atol=1e-5)

    # Queries from stdin, the cached corpus reused, a readable table.
    monkeypatch.setattr(sys, "stdin", io.StringIO(qs[0] + "\n\n" + qs[1] + "\n"))
    assert cli.main(["search", str(corpus_file), "-k", "2", "--save-corpus", str(cache), "--offline"]) == 0
    out, err = capsys.readouterr()
    assert "loaded corpus embeddings" in err
    assert f"query: {qs[0]}" in out and f"query: {qs[1]}" in out and "rank" in out and "score" in out
    best = expect[0][0]
    assert f"{best['score']:.4f}" in out and corpus[best["corpus_id"]][:50] in out

    qfile = tmp_path / "q.txt"
    qfile.write_text(qs[1] + "\n", encoding="utf-8")
    assert cli.main(["search", str(corpus_file), "--queries", str(qfile), "--top-k", "0", "--offline"]) == 2
    assert "--top-k must be a positive integer, got 0" in capsys.readouterr().err

