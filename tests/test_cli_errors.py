"""CLI errors come before any work, as one clear line with exit code 2: no queries, a device
the machine lacks, a binary input, a model not found offline, an unwritable output. And
``--help`` or a bad argument never pays for importing torch."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

import minilm.sentence_transformer
from minilm.cli import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "minilm.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kw)


@pytest.fixture
def no_model_load(monkeypatch):
    """Makes loading a model fail loudly: these errors must come before it."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(minilm.sentence_transformer.SentenceTransformer, "__init__", refuse)


def _one_error_line(err: str, command: str = "encode") -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"minilm {command}: error: ") and "Traceback" not in err, err
    return lines[0]


def test_search_without_queries_refuses_before_embedding(tmp_path, tiny_folder, no_model_load, capsys,
                                                         monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat\na dog\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # an empty pipe, /dev/null, cron
    rc = main(["search", str(corpus), "--model", str(tiny_folder)])
    line = _one_error_line(capsys.readouterr().err, "search")
    assert rc == 2 and "no queries" in line


def test_search_without_queries_subprocess_devnull(tmp_path, tiny_folder):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat\na dog\n", encoding="utf-8")
    with open(os.devnull) as devnull:
        r = _run(["search", str(corpus), "--model", str(tiny_folder)], stdin=devnull)
    assert r.returncode == 2 and "no queries" in _one_error_line(r.stderr, "search")
    assert "dimension" not in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_device_cuda_without_cuda_is_one_line(tiny_folder, device):
    r = _run(["encode", "--model", str(tiny_folder), "--device", device, "hello"])
    line = _one_error_line(r.stderr)
    assert r.returncode == 2
    assert device in line and "CUDA is not available" in line and "available: cpu" in line
    r = _run(["search", "-", "x", "--model", str(tiny_folder), "--device", device], input="a\nb\n")
    assert r.returncode == 2 and "CUDA is not available" in _one_error_line(r.stderr, "search")


def test_device_that_is_no_device(tiny_folder, capsys):
    assert main(["encode", "--model", str(tiny_folder), "--device", "gpu0", "hello"]) == 2
    assert "'gpu0': it is not a device name" in _one_error_line(capsys.readouterr().err)


def test_library_load_errors_become_one_line(tiny_folder, capsys, monkeypatch):
    """Whatever the library raises while loading (RuntimeError from torch, say) is one line."""
    def boom(*a, **k):
        raise RuntimeError("first line of a long story\nsecond line\nthird line")

    monkeypatch.setattr(minilm.sentence_transformer.SentenceTransformer, "__init__", boom)
    assert main(["encode", "--model", str(tiny_folder), "hello"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot load model" in line and "first line of a long story" in line


@pytest.mark.parametrize("mode", ["stream", "preview", "jsonl", "search"])
def test_binary_input_names_the_file(tmp_path, tiny_folder, no_model_load, capsys, mode):
    src = tmp_path / "data.bin"
    src.write_bytes("first line is fine\nsecond line \u00e9 too\n".encode("utf-8") + b"then \x89PNG\r\n\x1a\n\x00\xff")
    args = {"stream": ["encode", "--input", str(src), "--output", str(tmp_path / "e.npy")],
            "preview": ["encode", "--input", str(src)],
            "jsonl": ["encode", "--input", str(src), "--format", "jsonl"],
            "search": ["search", str(src), "query"]}[mode]
    rc = main([*args, "--model", str(tiny_folder)])
    line = _one_error_line(capsys.readouterr().err, args[0])
    assert rc == 2
    assert f"{src} is not UTF-8 text" in line
    assert "byte 0x89" in line and "line 3" in line  # where it is: the first bad byte
    assert "codec can't decode" not in line
    assert not (tmp_path / "e.npy").exists() and not (tmp_path / "e.npy.progress").exists()


def test_binary_stdin(tiny_folder):
    r = subprocess.run([sys.executable, "-m", "minilm.cli", "encode", "--model", str(tiny_folder)],
                       input=b"ok\n\xff\xfe\n", capture_output=True, env=ENV, timeout=300)
    err = r.stderr.decode()
    assert r.returncode == 2 and "stdin is not UTF-8 text" in _one_error_line(err)


def test_offline_model_not_found_says_what_to_do(capsys):
    rc = main(["encode", "--model", "no-such-org/no-such-model-xyz", "--offline", "hello"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "local_files_only=False' as input" not in err  # huggingface_hub's advice, wrong here
    assert "no snapshot of no-such-org/no-such-model-xyz" in err
    assert "hub: not contacted" in err
    assert "To use it offline" in err and "local model folder" in err


@pytest.mark.parametrize("where", ["missing_folder", "proc", "folder"])
def test_unwritable_output_refused_before_any_work(tmp_path, tiny_folder, no_model_load, capsys, where):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n", encoding="utf-8")
    out = {"missing_folder": tmp_path / "no" / "such" / "emb.npy", "proc": "/proc/minilm-test-emb.npy",
           "folder": tmp_path}[where]
    rc = main(["encode", "--input", str(src), "--output", str(out), "--model", str(tiny_folder)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and str(out) in line
    assert ".progress" not in line and "--resume" not in line  # no such file exists to speak of


def test_missing_input_file(tmp_path, no_model_load, capsys):
    rc = main(["encode", "--input", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "e.npy")])
    assert rc == 2 and "nope.txt does not exist" in _one_error_line(capsys.readouterr().err)


_NO_TORCH = """
import sys
from minilm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("TORCH_IMPORTED" if "torch" in sys.modules else "NO_TORCH")
"""


@pytest.mark.parametrize("args", [["--help"], ["encode", "--help"], ["search", "--help"], ["--version"],
                                  ["encode", "--batch-size", "0", "x"], ["encode", "--no-such-option"],
                                  ["encode", "--format", "jsonl", "--output", "x.npy", "x"]])
def test_help_and_argument_errors_do_not_import_torch(args):
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "NO_TORCH", (r.stdout, r.stderr)
