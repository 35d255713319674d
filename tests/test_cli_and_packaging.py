"""The ``minilm encode`` command and how the package (with minilm.kernels) installs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

import minilm
from conftest import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


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


def test_kernels_import_from_a_plain_checkout():
    # No install involved: only the repository root on sys.path.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import minilm, minilm.kernels; "
            "print(minilm.__file__); print(minilm.kernels.__file__); print('triton' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=120,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    init, kinit, triton_loaded = r.stdout.split()
    assert Path(init) == REPO / "minilm" / "__init__.py"
    assert Path(kinit) == REPO / "kernels" / "__init__.py"
    assert triton_loaded == "False"  # importing minilm never imports Triton


def test_kernels_package_in_this_environment():
    import minilm.kernels

    assert minilm.kernels.__name__ == "minilm.kernels"
    assert Path(minilm.kernels.__file__).name == "__init__.py"


def test_wheel_installs_kernels_as_minilm_kernels(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("minilm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "minilm/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names)  # never a top-level `kernels` module
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import minilm.kernels, sys; print(minilm.kernels.__file__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                       env={**ENV, "PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == site / "minilm" / "kernels" / "__init__.py"
