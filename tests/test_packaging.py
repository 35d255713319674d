"""How the package installs: kernels/ becomes minilm.kernels, never a top-level `kernels` module."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import minilm
from conftest import OFFLINE_ENV, REPO

ENV = OFFLINE_ENV


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


def test_minilm_kernels_maps_onto_kernels_and_transformers_sees_no_kernels_module():
    """However minilm is installed here (editable, wheel, or a checkout on PYTHONPATH), its
    kernels are the repository's kernels/ folder under the name minilm.kernels, and a process
    that imports minilm exposes no top-level `kernels`, which transformers would take for the
    PyPI package of that name."""
    if str(REPO) in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        pytest.skip("the repository root is on PYTHONPATH, so its kernels/ is importable as `kernels` by "
                    "construction; the installed layouts are what this checks")
    code = ("import importlib.util, sys, minilm, minilm.kernels\n"
            "from transformers.utils.import_utils import is_kernels_available\n"
            "spec = importlib.util.find_spec('kernels')\n"
            "print(minilm.kernels.__file__)\n"
            "print(spec.origin if spec else None)\n"
            "print('kernels' in sys.modules, is_kernels_available())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/", env=ENV)
    assert r.returncode == 0, r.stderr
    kfile, origin, flags = r.stdout.strip().splitlines()
    ours = (Path(minilm.__file__).parent / "kernels", REPO / "kernels")
    assert Path(kfile).resolve().parent in {p.resolve() for p in ours}, kfile
    # A PyPI `kernels` package may be installed; ours must never be what `import kernels` finds.
    assert origin == "None" or Path(origin).resolve().parent not in {p.resolve() for p in ours}, origin
    loaded, available = flags.split()
    assert loaded == "False"
    if origin == "None":
        assert available == "False"


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

