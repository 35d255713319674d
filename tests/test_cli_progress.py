"""Progress that tells the truth: the CLI's bar moves per batch on every path (the streaming
one included), counts texts and says so, follows one automatic rule for encode and search,
and never swallows the Ctrl-C message."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import tqdm
import tqdm.auto

from minilm.cli import PROGRESS_MIN_TEXTS, main


class FakeBar:
    """Stands in for tqdm: records what the bar was told, and draws like tqdm does on stderr."""

    made: list["FakeBar"] = []
    interrupt_after: int | None = None  # raise KeyboardInterrupt on this update, as Ctrl-C would

    def __init__(self, *args, **kwargs):
        self.kwargs = kwargs
        self.total = kwargs.get("total")
        self.n = kwargs.get("initial", 0)
        self.updates: list[int] = []
        self.closed = False
        FakeBar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)
        self.n += n
        sys.stderr.write(f"\r{self.kwargs.get('desc', '')} {self.n}/{self.total}")
        if FakeBar.interrupt_after is not None and len(self.updates) >= FakeBar.interrupt_after:
            raise KeyboardInterrupt

    def close(self):
        if not self.closed:
            sys.stderr.write("\n")  # tqdm ends a finished bar's line
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def bars(monkeypatch):
    FakeBar.made = []
    FakeBar.interrupt_after = None
    monkeypatch.setattr(tqdm, "tqdm", FakeBar)
    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    return FakeBar


@pytest.fixture
def passes(monkeypatch):
    """The number of texts in each forward pass the engine runs (in this process)."""
    from minilm.engine import Engine

    sizes: list[int] = []
    orig = Engine.forward_ids

    def spy(self, ids, device):
        sizes.append(len(ids))
        return orig(self, ids, device)

    monkeypatch.setattr(Engine, "forward_ids", spy)
    return sizes


def _corpus(path, n):
    path.write_text("".join(f"sentence number {i} about {'cats' if i % 3 else 'the weather'}\n" for i in range(n)),
                    encoding="utf-8")
    return path


def _texts_bars(bars):
    # Only bars that count texts: other code (e.g. a model load) may draw bars of its own.
    return [b for b in bars.made if b.total is not None]


def test_streaming_output_bar_moves_per_batch(tmp_path, tiny_folder, bars, passes, capsys):
    src = _corpus(tmp_path / "in.txt", 300)
    # On CPU the token budget cuts sentence-embedding passes; a small one makes many.
    rc = main(["encode", "--input", str(src), "--output", str(tmp_path / "e.npy"), "--model", str(tiny_folder),
               "--batch-size", "16", "--max-batch-tokens", "160", "--progress"])
    assert rc == 0, capsys.readouterr().err
    (bar,) = _texts_bars(bars)
    assert bar.total == 300 and bar.n == 300 and bar.closed
    # One chunk (8192 texts by default) holds all 300 texts: a per-chunk bar would move once.
    assert bar.updates == passes and len(passes) >= 10, (bar.updates, passes)
    assert "text" in bar.kwargs.get("unit", "") and "Batches" not in bar.kwargs.get("desc", "")


@pytest.mark.parametrize("how", [["--format", "jsonl"], []])
def test_other_encode_paths_bar_moves_per_batch(tmp_path, tiny_folder, bars, passes, capsys, how):
    src = _corpus(tmp_path / "in.txt", 200)
    rc = main(["encode", "--input", str(src), "--model", str(tiny_folder), "--batch-size", "20",
               "--max-batch-tokens", "200", "--progress", *how])
    assert rc == 0, capsys.readouterr().err
    (bar,) = _texts_bars(bars)
    assert bar.n == 200 and bar.updates == passes and len(passes) >= 5 and bar.closed
    assert "text" in bar.kwargs.get("unit", "")


def test_library_bar_counts_texts_and_says_so(tiny_folder, bars, passes):
    import minilm

    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu", max_batch_tokens=40)
    model.encode([f"text {i}" for i in range(50)], batch_size=10, show_progress_bar=True)
    first = list(passes)
    list(model.encode_iter((f"text {i}" for i in range(50)), chunk_size=25, batch_size=10, show_progress_bar=True))
    second = passes[len(first):]
    made = _texts_bars(bars) or bars.made
    for bar, sizes in zip(made, (first, second)):
        assert bar.n == 50 and bar.updates == sizes and len(sizes) >= 4
        assert "Batches" not in bar.kwargs.get("desc", "") and "text" in bar.kwargs.get("unit", "")
    assert len(bars.made) == 2


def test_search_uses_the_automatic_rule(tmp_path, tiny_folder, bars, capsys, monkeypatch):
    src = _corpus(tmp_path / "corpus.txt", PROGRESS_MIN_TEXTS)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    rc = main(["search", str(src), "the weather", "--model", str(tiny_folder), "--batch-size", "64"])
    assert rc == 0, capsys.readouterr().err
    (bar,) = _texts_bars(bars)
    assert bar.total == PROGRESS_MIN_TEXTS and bar.n == PROGRESS_MIN_TEXTS and len(bar.updates) > 1

    bars.made.clear()
    small = _corpus(tmp_path / "small.txt", PROGRESS_MIN_TEXTS - 1)
    assert main(["search", str(small), "the weather", "--model", str(tiny_folder)]) == 0
    assert _texts_bars(bars) == []  # below the threshold
    assert main(["search", str(small), "the weather", "--model", str(tiny_folder), "--progress"]) == 0
    assert len(_texts_bars(bars)) == 1


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, tiny_folder, bars, capsys, monkeypatch):
    src = _corpus(tmp_path / "in.txt", PROGRESS_MIN_TEXTS)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert main(["encode", "--input", str(src), "--output", str(tmp_path / "e.npy"),
                 "--model", str(tiny_folder)]) == 0
    assert _texts_bars(bars) == []
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["encode", "--input", str(src), "--output", str(tmp_path / "e.npy"),
                 "--model", str(tiny_folder)]) == 0
    assert len(_texts_bars(bars)) == 1


def test_interrupt_message_starts_its_own_line(tmp_path, tiny_folder, bars, capsys):
    src = _corpus(tmp_path / "in.txt", 300)
    out = tmp_path / "e.npy"
    bars.interrupt_after = 3
    rc = main(["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_folder),
               "--batch-size", "16", "--chunk-size", "32", "--progress"])
    err = capsys.readouterr().err
    assert rc == 130
    assert "\nminilm encode: interrupted: wrote " in err, repr(err)
    assert "records this, and the same command with --resume continues from it" in err


def test_summary_says_1_text(tiny_folder, capsys):
    assert main(["encode", "--model", str(tiny_folder), "just one"]) == 0
    err = capsys.readouterr().err
    # "1 texts" must not appear as a count; a rate such as "360.1 texts/s" is fine.
    assert "embedded 1 text ->" in err and not re.search(r"(?<![\d.])1 texts\b", err)
    assert main(["encode", "--model", str(tiny_folder), "one", "two"]) == 0
    assert "embedded 2 texts ->" in capsys.readouterr().err


def test_per_batch_rows_are_the_same_rows(tmp_path, tiny_folder, bars, capsys):
    """Passing the bar down must not change what is computed."""
    import minilm

    src = _corpus(tmp_path / "in.txt", 100)
    out = tmp_path / "e.npy"
    assert main(["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_folder),
                 "--progress"]) == 0
    model = minilm.SentenceTransformer(str(tiny_folder), device="cpu")
    texts = src.read_text(encoding="utf-8").splitlines()
    np.testing.assert_array_equal(np.load(out), model.encode(texts))
