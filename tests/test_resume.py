"""``minilm encode --input --output --resume`` continues only from the input it started on: a
line edited in place (same size) since the interruption is refused, not left as a stale row."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minilm
import minilm.streaming
from minilm.cli import main

N = 600


@pytest.fixture
def interrupted_run(tmp_path, tiny_folder, monkeypatch, capsys):
    """A run stopped (as by Ctrl-C) after 2 chunks of 100 rows were written."""
    src = tmp_path / "in.txt"
    texts = [f"line {i:04d} says something about {'rain' if i % 2 else 'sun'}" for i in range(N)]
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    args = ["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_folder),
            "--chunk-size", "100", "--no-progress"]
    real_write = minilm.streaming.NpyRowWriter.write
    calls = []

    def write_then_interrupt(self, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_write(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(minilm.streaming.NpyRowWriter, "write", write_then_interrupt)
        assert main(args) == 130
    assert "wrote 200 of 600 rows" in capsys.readouterr().err
    assert json.loads((tmp_path / "emb.npy.progress").read_text())["rows_done"] == 200
    return src, out, texts, args


def _edit_line(src, i: int, old: str, new: str) -> None:
    assert len(old.encode()) == len(new.encode())
    lines = src.read_text(encoding="utf-8").split("\n")
    assert old in lines[i]
    lines[i] = lines[i].replace(old, new)
    data = "\n".join(lines)
    size = src.stat().st_size
    src.write_text(data, encoding="utf-8")
    assert src.stat().st_size == size  # an in-place edit: same byte count


def test_resume_refuses_an_input_edited_where_it_was_consumed(interrupted_run, tiny_folder, capsys):
    src, out, texts, args = interrupted_run
    _edit_line(src, 5, "rain", "snow")
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "the input was edited" in err and "without --resume" in err
    assert json.loads((out.parent / "emb.npy.progress").read_text())["rows_done"] == 200  # untouched

    # Starting over gives the right rows.
    assert main(args) == 0
    texts[5] = texts[5].replace("rain", "snow")
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    np.testing.assert_array_equal(np.load(out), model.encode(texts))


def test_resume_accepts_edits_beyond_what_was_consumed(interrupted_run, tiny_folder, capsys):
    src, out, texts, args = interrupted_run
    _edit_line(src, 450, "sun", "fog")  # not embedded yet: the resumed run reads the new text
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert "embedded 400 texts" in capsys.readouterr().err
    texts[450] = texts[450].replace("sun", "fog")
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    np.testing.assert_array_equal(np.load(out), model.encode(texts))
    assert not (out.parent / "emb.npy.progress").exists()


def test_resume_refuses_a_sidecar_without_fingerprint(interrupted_run, capsys):
    src, out, texts, args = interrupted_run
    side = out.parent / "emb.npy.progress"
    state = json.loads(side.read_text())
    del state["consumed_sha256"]  # as written by an older minilm
    side.write_text(json.dumps(state))
    assert main([*args, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
