"""A lean install: triton is an extra (PyTorch's CUDA wheels bring their own), Python >= 3.10,
and minilm works where triton cannot be imported at all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def test_triton_is_an_extra_not_a_dependency():
    project = _project()
    assert not any(d.lower().startswith("triton") for d in project["dependencies"]), project["dependencies"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("triton") for d in extras["gpu"])
    assert any(d.startswith("triton") for d in extras["test"])  # the interpreter tests need it
    assert project["requires-python"] == ">=3.10"  # torch 2.13 needs it


_NO_TRITON = """
import sys
sys.modules["triton"] = None  # `import triton` now raises ImportError, as where it is not installed
import numpy as np, torch, minilm
m = minilm.SentenceTransformer(sys.argv[1], device="cpu")
e = m.encode(["a sentence", "another one"])
assert e.shape == (2, 32) and np.isfinite(e).all()
from minilm.kernels import varlen_mean_pool
out = varlen_mean_pool(torch.randn(5, 8), torch.tensor([0, 2, 5], dtype=torch.int32))
assert out.shape == (2, 8)
print("OK")
"""


def test_works_without_triton(tiny_folder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", _NO_TRITON, str(tiny_folder)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
