"""CLI conventions: data on stdout, messages on stderr; machine-readable forms (``--format
jsonl``, ``--output -``); one row per line, blank lines included; help for every command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minilm
from minilm.cli import PROGRESS_MIN_TEXTS, main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TEXTS = ["The weather is lovely today.", "", "It's so sunny outside!", "   ", "He drove to the stadium."]


@pytest.fixture(scope="module")
def reference(tiny_folder):
    return minilm.SentenceTransformer(str(tiny_folder), device="cpu").encode(TEXTS)


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "minilm.cli", *args], capture_output=True, env=ENV, timeout=300,
                          **kw)


def test_jsonl_on_stdout_one_row_per_line(tmp_path, tiny_folder, reference):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for args, stdin in ((["--input", str(src)], None), ([], "\n".join(TEXTS).encode())):
        r = _run(["encode", "--model", str(tiny_folder), "--format", "jsonl", *args], input=stdin)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
        assert len(rows) == len(TEXTS)  # blank lines are rows too
        # float32 -> JSON -> float32 is exact.
        np.testing.assert_array_equal(np.array(rows, dtype=np.float32), reference)
        assert b"embedded 5 texts" in r.stderr


def test_npy_on_stdout(tmp_path, tiny_folder, reference):
    r = _run(["encode", "--model", str(tiny_folder), "--output", "-"], input="\n".join(TEXTS).encode())
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(io.BytesIO(r.stdout)), reference)


@pytest.mark.parametrize("stream", [True, False])
def test_output_rows_equal_lines_blank_lines_included(tmp_path, tiny_folder, reference, stream):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "e.npy"
    if stream:
        r = _run(["encode", "--model", str(tiny_folder), "--input", str(src), "--output", str(out)])
    else:
        r = _run(["encode", "--model", str(tiny_folder), "--output", str(out)], input=src.read_bytes())
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), reference)
    assert r.stdout == b""  # messages are not data


@pytest.mark.parametrize("stream", [True, False])
def test_output_is_float32_whatever_the_compute_dtype(tmp_path, tiny_folder, reference, stream):
    # float16 is the CUDA default; encode() then returns float16 rows, which the streamed
    # writer once refused ("expected float32 rows") and the in-memory path saved as float16.
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "e.npy"
    args = ["encode", "--model", str(tiny_folder), "--device", "cpu", "--dtype", "float16", "--output", str(out)]
    r = _run(args + ["--input", str(src)]) if stream else _run(args, input=src.read_bytes())
    assert r.returncode == 0, r.stderr
    emb = np.load(out)
    assert emb.dtype == np.float32 and emb.shape == reference.shape
    assert not np.array_equal(emb, reference)  # float16 compute really ran
    cos = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
    assert cos.min() > 0.999, cos


def test_preview_on_stdout_summary_on_stderr(tiny_folder, capsys):
    assert main(["encode", "--model", str(tiny_folder), "one", "two", "three", "--show", "2"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 2 and "'one'" in cap.out and "'two'" in cap.out
    assert "embedded 3 texts" in cap.err and "embedded" not in cap.out and "model" not in cap.out
    assert "1 more rows" in cap.err


def test_search_hits_on_stdout_never_a_blank_line(tmp_path, tiny_folder, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    cache = tmp_path / "c.npy"
    assert main(["search", str(corpus), "sunny weather", "--model", str(tiny_folder), "--json", "-k", "10",
                 "--save-corpus", str(cache)]) == 0
    cap = capsys.readouterr()
    (hit_line,) = cap.out.splitlines()
    hits = json.loads(hit_line)["hits"]
    assert sorted(h["line"] for h in hits) == [1, 3, 5]  # file line numbers, blank lines 2 and 4 left out
    assert all(h["text"] == TEXTS[h["line"] - 1] for h in hits)
    assert "model:" in cap.err
    # The cached corpus has one row per line, like `encode --output`.
    ref = minilm.SentenceTransformer(str(tiny_folder), device="cpu").encode_document(TEXTS)
    np.testing.assert_array_equal(np.load(cache), ref)


def test_help_for_every_command(capsys):
    for cmd in ("encode", "search"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and text.count(f"minilm {cmd} ") >= 3
        assert "(default: 32)" in text  # --batch-size
        assert f"at least {PROGRESS_MIN_TEXTS} texts" in text  # the progress rule
        assert "never show the progress bar" in text and "always show the progress bar" in text
        assert "Blank lines" in text
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    assert "(default: 5)" in capsys.readouterr().out  # --show
