"""Reading a sentence-transformers model folder into one description, before any weights.

A folder holds ``modules.json`` (Transformer, Pooling, then Dense/Normalize/Dropout heads),
each module's own folder and config, ``sentence_bert_config.json`` (max_seq_length,
lower-casing), ``tokenizer_config.json`` and ``config_sentence_transformers.json`` (prompts,
default prompt, similarity function). This module parses and checks them; it builds no
module and reads no tensor. A folder without ``modules.json`` but with ``config.json`` is a
plain Hugging Face encoder, which sentence-transformers wraps with mean pooling.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .pooling import LEGACY_POOLING_KEYS as _LEGACY_POOLING_KEYS, modes_from_config

SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder describes.

    transformer_dir: the folder with config.json, the weights and the tokenizer files
    pooling_modes / include_prompt / pooling_dim: from the Pooling config
    heads: (kind, folder) of each module after Pooling, in order
    max_seq_length: sentence_bert_config's value, else tokenizer_config's model_max_length when
        plausible, else None (the encoder's position table decides)
    """

    root: Path
    transformer_dir: Path
    pooling_modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    pooling_dim: Optional[int] = None
    heads: tuple[tuple[str, Path], ...] = ()
    max_seq_length: Optional[int] = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: Optional[str] = None
    similarity_fn_name: Optional[str] = None
    truncate_dim: Optional[int] = None


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def _optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = read_json(path, path.name)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _module_kind(type_name: Any, where: Path) -> str:
    """``sentence_transformers.models.Pooling`` or
    ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` -> ``Pooling``."""
    if not isinstance(type_name, str) or not type_name.startswith("sentence_transformers."):
        raise ValueError(
            f"{where}: module type {type_name!r} is not a sentence-transformers module; minilm never "
            "imports custom module code"
        )
    kind = type_name.rsplit(".", 1)[-1]
    if kind not in SUPPORTED_MODULES:
        raise ValueError(f"{where}: module type {type_name!r} is not supported; minilm supports {SUPPORTED_MODULES}")
    return kind


def _subfolder(root: Path, rel: Any, where: Path) -> Path:
    if not isinstance(rel, str):
        raise ValueError(f"{where}: module path must be a string, got {rel!r}")
    p = (root / rel).resolve()
    if p != root.resolve() and root.resolve() not in p.parents:
        raise ValueError(f"{where}: module path {rel!r} points outside the model folder")
    return p


def _read_modules(root: Path) -> list[tuple[str, Path]]:
    """(kind, folder) per entry of modules.json, in order, with the required structure checked."""
    mj = root / "modules.json"
    entries = read_json(mj, "modules.json")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{mj} must hold a non-empty JSON list of modules")
    for e in entries:
        idx = e.get("idx", 0) if isinstance(e, dict) else None
        if not isinstance(e, dict) or "type" not in e or isinstance(idx, bool) or not isinstance(idx, int):
            raise ValueError(f"{mj}: malformed module entry {e!r} (needs a 'type' and an integer 'idx')")
    kinds: list[tuple[str, Path]] = []
    for e in sorted(entries, key=lambda e: e.get("idx", 0)):
        kind = _module_kind(e["type"], mj)
        if "path" not in e and kind != "Transformer":
            # No path would mean the model's root, whose config.json is the encoder's, not this module's.
            raise ValueError(f"{mj}: the {kind} entry {e!r} has no 'path'")
        kinds.append((kind, _subfolder(root, e.get("path", ""), mj)))
    if kinds[0][0] != "Transformer":
        raise ValueError(f"{mj}: the first module must be a Transformer, got {kinds[0][0]}")
    if len(kinds) < 2 or kinds[1][0] != "Pooling":
        raise ValueError(f"{mj}: the Transformer must be followed by Pooling, got {[k for k, _ in kinds]}")
    for k, _ in kinds[2:]:
        if k in ("Transformer", "Pooling"):
            raise ValueError(f"{mj}: only Dense/Normalize/Dropout may follow Pooling, got {k}")
    for k, p in kinds:
        # Normalize and Dropout hold no weights; sentence-transformers may save no folder for them.
        if k not in ("Normalize", "Dropout") and not p.is_dir():
            raise FileNotFoundError(f"{mj} names a {k} module in {p}, but that folder does not exist")
    return kinds


def read_model_folder(root: Path) -> ModelFolder:
    """Parse and check ``root``; raises ``FileNotFoundError``/``ValueError`` naming the file."""
    root = Path(root)
    if not (root / "modules.json").is_file():
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"{root} is not a model folder: it has neither modules.json nor config.json")
        modules = [("Transformer", root)]
        pooling_cfg: dict = {"pooling_mode": "mean"}
    else:
        modules = _read_modules(root)
        pcfg_path = modules[1][1] / "config.json"
        if not pcfg_path.is_file():
            # Guessing (mean) would silently give other embeddings than the model's own pooling.
            raise FileNotFoundError(f"{root / 'modules.json'} names a Pooling module, but {pcfg_path} is missing")
        pooling_cfg = read_json(pcfg_path, "Pooling config")
        if not isinstance(pooling_cfg, dict):
            raise ValueError(f"Pooling config {pcfg_path} must hold a JSON object")
    tdir = modules[0][1]
    sbert = _optional_json(tdir / "sentence_bert_config.json")
    max_len = sbert.get("max_seq_length")
    if max_len is None:
        mml = _optional_json(tdir / "tokenizer_config.json").get("model_max_length")
        max_len = mml if isinstance(mml, int) and 0 < mml < 1_000_000 else None
    modes, include_prompt = modes_from_config(pooling_cfg)
    st_cfg = _optional_json(root / "config_sentence_transformers.json")
    return ModelFolder(
        root=root,
        transformer_dir=tdir,
        pooling_modes=modes,
        include_prompt=include_prompt,
        pooling_dim=pooling_cfg.get("embedding_dimension", pooling_cfg.get("word_embedding_dimension")),
        heads=tuple(modules[2:]),
        max_seq_length=None if max_len is None else int(max_len),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        prompts=dict(st_cfg.get("prompts") or {}),
        default_prompt_name=st_cfg.get("default_prompt_name"),
        similarity_fn_name=st_cfg.get("similarity_fn_name"),
        truncate_dim=st_cfg.get("truncate_dim"),
    )


# Files a saved folder gets fresh; everything else in the transformer folder is copied.
_REWRITTEN = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "README.md")


def write_model_folder(dst: Path, src: ModelFolder, *, hidden_size: int, max_seq_length: int, prompts: dict[str, str],
                       default_prompt_name: Optional[str], similarity_fn_name: str,
                       truncate_dim: Optional[int], versions: dict[str, str]) -> None:
    """Save a folder that minilm and sentence-transformers both load: the source's checkpoint,
    tokenizer and head files, with modules.json and the configs rewritten for the settings
    given. The weights are copied as they are on disk (a dtype chosen at load is not saved)."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.transformer_dir.iterdir()):
        if f.is_file() and f.name not in _REWRITTEN and f.resolve() != (dst / f.name).resolve():
            shutil.copy2(f, dst / f.name)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool_dir = dst / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    pooling_cfg: dict[str, Any] = {"word_embedding_dimension": hidden_size}
    canonical = tuple(m for m in _LEGACY_POOLING_KEYS.values() if m in src.pooling_modes)
    if canonical == src.pooling_modes:
        # The legacy flags: every sentence-transformers release reads them.
        pooling_cfg.update({key: mode in src.pooling_modes for key, mode in _LEGACY_POOLING_KEYS.items()})
    else:
        pooling_cfg["pooling_mode"] = list(src.pooling_modes)  # 6.x: concatenated in this order
    pooling_cfg["include_prompt"] = src.include_prompt
    (pool_dir / "config.json").write_text(json.dumps(pooling_cfg, indent=2), encoding="utf-8")
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    for i, (kind, folder) in enumerate(src.heads, start=2):
        rel = f"{i}_{kind}"
        if folder.is_dir() and folder.resolve() != (dst / rel).resolve():
            shutil.copytree(folder, dst / rel, dirs_exist_ok=True)
        else:
            (dst / rel).mkdir(exist_ok=True)
        modules.append({"idx": i, "name": str(i), "path": rel, "type": f"sentence_transformers.models.{kind}"})
    (dst / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (dst / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": src.do_lower_case}, indent=2), encoding="utf-8")
    st_cfg: dict[str, Any] = {"__version__": versions, "model_type": "SentenceTransformer", "prompts": prompts,
                              "default_prompt_name": default_prompt_name, "similarity_fn_name": similarity_fn_name}
    if truncate_dim is not None:
        st_cfg["truncate_dim"] = truncate_dim
    (dst / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2), encoding="utf-8")
