"""Make the repository's top-level ``kernels/`` folder importable as ``minilm.kernels``.

In a wheel or an editable install setuptools maps ``minilm.kernels`` onto ``kernels/``
(``package-dir`` in pyproject.toml). In a plain checkout (``PYTHONPATH=.``) nothing does,
so we register the package from its file location ourselves. We never add the repository
root to ``sys.path`` for this: a top-level ``kernels`` module would be mistaken by
``transformers`` for the PyPI package of the same name.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def ensure_kernels_importable(package_name: str, package_file: str) -> None:
    name = package_name + ".kernels"
    if name in sys.modules:
        return
    parent = sys.modules[package_name]
    for entry in getattr(parent, "__path__", []):
        if (Path(entry) / "kernels" / "__init__.py").is_file():
            return  # installed layout: the normal import system finds it
    try:
        if importlib.util.find_spec(name) is not None:
            return  # an editable-install finder maps it
    except (ImportError, ValueError):
        pass
    candidate = Path(package_file).resolve().parent.parent / "kernels"
    init = candidate / "__init__.py"
    if not init.is_file():
        return  # nothing to expose (should not happen in a checkout)
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(candidate)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    setattr(parent, "kernels", module)
