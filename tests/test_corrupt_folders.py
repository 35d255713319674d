"""Corrupt model folders (issue 14): every class of damage gives a clear error naming it,
never a hang, a raw traceback from deep inside a library, or a model that loads and is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import minilm
from conftest import save_random_bert, save_st_model

TEXTS = ["A man is playing a guitar.", "Zwei Hunde spielen im Schnee.", "x"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, real_model_path) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("hf"), real_model_path, hidden_size=32, num_attention_heads=2,
                            num_hidden_layers=2, intermediate_size=64)


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory, hf_folder) -> Path:
    """Every module kind: Transformer, CLS Pooling (so a fallback to mean would show), Dense, Normalize."""
    return save_st_model(tmp_path_factory.mktemp("st"), hf_folder, pooling_mode=("cls",), dense=[(16, "Tanh")],
                         normalize=True)


def _modules(d: Path) -> list:
    return json.loads((d / "modules.json").read_text())


def _set_modules(d: Path, mods) -> None:
    (d / "modules.json").write_text(json.dumps(mods))


def _edit_entry(i: int, **changes) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        mods = _modules(d)
        mods[i].update(changes)
        for k, v in changes.items():
            if v is None:
                del mods[i][k]
        _set_modules(d, mods)
    return edit


def _edit_json(rel: str, **changes) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / rel).read_text())
        cfg.update(changes)
        (d / rel).write_text(json.dumps(cfg))
    return edit


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / rel).write_bytes(data)


def _remove(rel: str) -> Callable[[Path], None]:
    def rm(d: Path) -> None:
        p = d / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return rm


def _truncate(rel: str) -> Callable[[Path], None]:
    def cut(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: len(data) // 2])
    return cut


def _tensors(rel: str, change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        save_file(change(load_file(str(d / rel))), str(d / rel))
    return edit


def _int32(t: dict) -> dict:
    import torch

    return {k: v.to(torch.int32) if k.endswith("word_embeddings.weight") else v for k, v in t.items()}


def _drop_layer(t: dict) -> dict:
    return {k: v for k, v in t.items() if not k.startswith("encoder.layer.1.")}


def _both(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        for f in fns:
            f(d)
    return run


CASES = {
    # modules.json itself
    "modules-not-json": (_write("modules.json", b"[{not json"), ValueError, "modules.json .* is not valid JSON"),
    "modules-not-a-list": (_write("modules.json", b'{"idx": 0}'), ValueError, "non-empty JSON list"),
    "modules-empty": (_write("modules.json", b"[]"), ValueError, "non-empty JSON list"),
    "entry-not-an-object": (lambda d: _set_modules(d, _modules(d) + ["2_Dense"]), ValueError, "malformed module entry"),
    "entry-without-type": (_edit_entry(2, type=None), ValueError, "malformed module entry"),
    "entry-idx-not-int": (_edit_entry(3, idx="three"), ValueError, "integer 'idx'"),
    "custom-module-code": (_edit_entry(2, type="my_package.Evil"), ValueError, "never imports custom module code"),
    "unsupported-module": (_edit_entry(2, type="sentence_transformers.models.LSTM"), ValueError, "not supported"),
    "path-escapes-folder": (_edit_entry(2, path="../../etc"), ValueError, "outside the model folder"),
    "absolute-path": (_edit_entry(1, path="/etc"), ValueError, "outside the model folder"),
    "path-not-a-string": (_edit_entry(1, path=7), ValueError, "module path must be a string"),
    "no-transformer-first": (lambda d: _set_modules(d, _modules(d)[1:]), ValueError, "first module must be a Transformer"),
    "no-pooling": (lambda d: _set_modules(d, [m for i, m in enumerate(_modules(d)) if i != 1]), ValueError,
                   "must be followed by Pooling"),
    # the modules it names: present in modules.json, absent on disk (never a default)
    "pooling-folder-missing": (_remove("1_Pooling"), FileNotFoundError,
                               "names a Pooling module in .*1_Pooling, but that folder does not exist"),
    "pooling-config-missing": (_remove("1_Pooling/config.json"), FileNotFoundError,
                               r"names a Pooling module, but .*1_Pooling/config.json is missing"),
    "pooling-path-points-nowhere": (_edit_entry(1, path="9_Pooling"), FileNotFoundError,
                                    "9_Pooling, but that folder does not exist"),
    "pooling-entry-without-path": (_edit_entry(1, path=None), ValueError, "Pooling entry .* has no 'path'"),
    "pooling-config-not-json": (_write("1_Pooling/config.json", b"{"), ValueError, "Pooling config .* not valid JSON"),
    "pooling-config-not-object": (_write("1_Pooling/config.json", b'["cls"]'), ValueError,
                                  "Pooling config .* must hold a JSON object"),
    "pooling-mode-unknown": (_edit_json("1_Pooling/config.json", pooling_mode="median"), ValueError,
                             "Unknown pooling mode 'median'"),
    "dense-folder-missing": (_remove("2_Dense"), FileNotFoundError, "names a Dense module in .*2_Dense, but"),
    "dense-config-missing": (_remove("2_Dense/config.json"), FileNotFoundError, "2_Dense has no config.json"),
    "dense-config-garbled": (_write("2_Dense/config.json", b'{"in_features": "x"}'), ValueError,
                             "not a valid Dense config"),
    "dense-weights-missing": (_remove("2_Dense/model.safetensors"), FileNotFoundError, "No weights in .*2_Dense"),
    "dense-weights-truncated": (_truncate("2_Dense/model.safetensors"), ValueError, "truncated or corrupt"),
    "dense-shape-mismatch": (_edit_json("2_Dense/config.json", out_features=17), ValueError, "Dense weights"),
    "dense-activation-import": (_edit_json("2_Dense/config.json", activation_function="os.system"), ValueError,
                                "refusing to import"),
    # the transformer
    "transformer-config-missing": (_remove("config.json"), FileNotFoundError, "No config.json at"),
    "config-not-json": (_write("config.json", b"{'single': 'quotes'}"), ValueError, "config.json is not valid JSON"),
    "config-not-object": (_write("config.json", b"[1, 2]"), ValueError, "config.json must hold a JSON object"),
    "model-type-gpt2": (_edit_json("config.json", model_type="gpt2"), ValueError, "Unsupported model_type='gpt2'"),
    "model-type-missing": (_edit_json("config.json", model_type=None), ValueError, "Unsupported model_type=None"),
    "weights-missing": (_remove("model.safetensors"), FileNotFoundError, "No weights"),
    "weights-truncated": (_truncate("model.safetensors"), ValueError, "truncated or corrupt"),
    "weights-garbage": (_write("model.safetensors", b"\x00" * 64), ValueError, "safetensors"),
    "weights-int32": (_tensors("model.safetensors", _int32), ValueError, "int32"),
    "weights-layer-missing": (_tensors("model.safetensors", _drop_layer), ValueError, "missing tensors"),
    "sbert-config-not-json": (_write("sentence_bert_config.json", b"max_seq_length=8"), ValueError,
                              "sentence_bert_config.json .* is not valid JSON"),
    "tokenizer-missing": (_both(_remove("tokenizer.json"), _remove("tokenizer_config.json")), FileNotFoundError,
                          "No tokenizer"),
    "tokenizer-garbled": (_write("tokenizer.json", b'{"model": 1}'), ValueError, "tokenizers library"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_corrupt_folder_raises_a_clear_error(tmp_path, good_folder, name):
    corrupt, exc, match = CASES[name]
    d = tmp_path / "m"
    shutil.copytree(good_folder, d)
    corrupt(d)
    with pytest.raises(exc, match=match):
        minilm.SentenceTransformer(str(d), device="cpu")


def _st_reference(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS)


def _assert_close(a: np.ndarray, b: np.ndarray) -> None:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99999, cos


def test_intact_folder_matches_sentence_transformers(good_folder):
    """The base of every corruption above loads and is right, so each error is the damage's."""
    m = minilm.SentenceTransformer(str(good_folder), device="cpu")
    assert m.pooling_modes == ("cls",)
    _assert_close(m.encode(TEXTS), _st_reference(good_folder))


def test_absent_normalize_folder_is_not_damage(tmp_path, good_folder):
    # git keeps no empty folder, so hub models (all-MiniLM-L6-v2 among them) name a 2_Normalize
    # module that has no folder; sentence-transformers loads them, and so must we.
    d = tmp_path / "m"
    shutil.copytree(good_folder, d)
    shutil.rmtree(d / "3_Normalize")
    _assert_close(minilm.SentenceTransformer(str(d), device="cpu").encode(TEXTS), _st_reference(good_folder))


def test_plain_hf_folder_without_modules_json_is_mean_pooled(hf_folder):
    # Only a folder with no modules.json at all is a plain encoder; sentence-transformers then
    # adds mean pooling, and so do we.
    m = minilm.SentenceTransformer(str(hf_folder), device="cpu")
    assert m.pooling_modes == ("mean",)
    _assert_close(m.encode(TEXTS), _st_reference(hf_folder))
