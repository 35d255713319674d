"""Bad input gets a clear error, never a silent wrong answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import minilm
from conftest import save_random_bert, save_st_model


@pytest.mark.parametrize(
    "bad, match",
    [
        (None, "got None"),
        (3, "got int"),
        (3.5, "got float"),
        (b"bytes", "got bytes"),
        (["ok", None], "item 1 is NoneType"),
        (["ok", 7], "item 1 is int"),
        ([["nested", "list"]], "item 0 is list"),
        ({"a": "b"}, "got dict"),
        (np.zeros((2, 2)), "1-D array"),
    ],
)
def test_encode_rejects_bad_inputs(tiny, bad, match):
    with pytest.raises(TypeError, match=match):
        tiny.encode(bad)


def test_encode_argument_errors(tiny):
    with pytest.raises(ValueError, match="Prompt name 'nope' not found"):
        tiny.encode(["x"], prompt_name="nope")
    with pytest.raises(ValueError, match="batch_size"):
        tiny.encode(["x"], batch_size=0)
    with pytest.raises(ValueError, match="output_value"):
        tiny.encode(["x"], output_value="logits")
    with pytest.raises(ValueError, match="truncate_dim=64 is larger"):
        tiny.encode(["x"], truncate_dim=64)
    with pytest.raises(ValueError, match="max_seq_length"):
        tiny.max_seq_length = 0
    with pytest.raises(ValueError, match="exceeds"):
        tiny.max_seq_length = 10_000
    with pytest.raises(ValueError, match="similarity_fn_name"):
        tiny.similarity_fn_name = "jaccard"


def test_missing_and_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        minilm.SentenceTransformer(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        minilm.SentenceTransformer(str(tmp_path / "empty"), device="cpu")
    f = tmp_path / "file.txt"
    f.write_text("hi")
    with pytest.raises(ValueError, match="is a file"):
        minilm.SentenceTransformer(str(f), device="cpu")
    with pytest.raises(TypeError):
        minilm.SentenceTransformer(123, device="cpu")


def test_corrupt_and_truncated_weights(tmp_path, tiny_folder):
    d = shutil.copytree(tiny_folder, tmp_path / "trunc")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        minilm.SentenceTransformer(str(d), device="cpu")
    d2 = shutil.copytree(tiny_folder, tmp_path / "garbage")
    (d2 / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="safetensors"):
        minilm.SentenceTransformer(str(d2), device="cpu")
    d3 = shutil.copytree(tiny_folder, tmp_path / "noweights")
    (d3 / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No weights"):
        minilm.SentenceTransformer(str(d3), device="cpu")


def _edit_json(path: Path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(hidden_size=64, num_attention_heads=4), "shape mismatch"),
        (dict(intermediate_size=65), "shape mismatch"),
        (dict(num_hidden_layers=2), "missing tensors"),
        (dict(num_hidden_layers=0), "positive integer"),
        (dict(vocab_size=100), "shape mismatch"),
        (dict(model_type="gpt2"), "Unsupported model_type='gpt2'"),
        (dict(hidden_act="mish"), "hidden_act"),
        (dict(position_embedding_type="relative_key"), "position_embedding_type"),
        (dict(auto_map={"AutoModel": "x.Y"}), "custom code"),
        (dict(num_attention_heads=5), "not divisible"),
    ],
)
def test_config_weight_mismatches(tmp_path, tiny_folder, change, match):
    d = shutil.copytree(tiny_folder, tmp_path / "m")
    _edit_json(d / "config.json", **change)
    with pytest.raises(ValueError, match=match):
        minilm.SentenceTransformer(str(d), device="cpu")


def test_unexpected_tensor(tmp_path, tiny_folder):
    from safetensors.torch import load_file, save_file

    d = shutil.copytree(tiny_folder, tmp_path / "m")
    t = load_file(str(d / "model.safetensors"))
    t["encoder.layer.0.attention.self.rotary.weight"] = t["embeddings.LayerNorm.weight"].clone()
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected tensors.*rotary"):
        minilm.SentenceTransformer(str(d), device="cpu")


def test_bad_modules_json(tmp_path, tiny_folder):
    d = shutil.copytree(tiny_folder, tmp_path / "m")
    mods = json.loads((d / "modules.json").read_text())
    mods.insert(2, {"idx": 9, "name": "x", "path": "x", "type": "my_package.Evil"})
    (d / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ValueError, match="never imports custom module code"):
        minilm.SentenceTransformer(str(d), device="cpu")
    mods[2] = {"idx": 2, "name": "x", "path": "x", "type": "sentence_transformers.models.LSTM"}
    (d / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ValueError, match="not supported"):
        minilm.SentenceTransformer(str(d), device="cpu")
    mods[2] = {"idx": 2, "name": "x", "path": "../../etc", "type": "sentence_transformers.models.Dense"}
    (d / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(ValueError, match="outside the model folder"):
        minilm.SentenceTransformer(str(d), device="cpu")
    (d / "modules.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        minilm.SentenceTransformer(str(d), device="cpu")


def test_bad_pooling_and_dense_configs(tmp_path, real_model_path):
    hf = save_random_bert(tmp_path / "hf", real_model_path, hidden_size=32, num_attention_heads=2,
                          num_hidden_layers=1, intermediate_size=64)
    st = save_st_model(tmp_path / "st", hf, dense=[(16, "Tanh")])
    pool_cfg = st / "1_Pooling" / "config.json"
    _edit_json(pool_cfg, pooling_mode="median")
    with pytest.raises(ValueError, match="Unknown pooling mode 'median'"):
        minilm.SentenceTransformer(str(st), device="cpu")
    _edit_json(pool_cfg, pooling_mode="mean")
    dense_cfg = st / "2_Dense" / "config.json"
    _edit_json(dense_cfg, activation_function="os.system")
    with pytest.raises(ValueError, match="refusing to import"):
        minilm.SentenceTransformer(str(st), device="cpu")
    _edit_json(dense_cfg, activation_function="torch.nn.modules.activation.Tanh", out_features=17)
    with pytest.raises(ValueError, match="Dense weights"):
        minilm.SentenceTransformer(str(st), device="cpu")


def test_bad_constructor_arguments(tiny_folder):
    with pytest.raises(ValueError, match="dtype"):
        minilm.SentenceTransformer(str(tiny_folder), device="cpu", dtype="int8")
    with pytest.raises(ValueError, match="Default prompt name"):
        minilm.SentenceTransformer(str(tiny_folder), device="cpu", default_prompt_name="nope")
    with pytest.raises(ValueError, match="trust_remote_code"):
        minilm.SentenceTransformer(str(tiny_folder), device="cpu", trust_remote_code=True)
    with pytest.raises(TypeError, match="prompts"):
        minilm.SentenceTransformer(str(tiny_folder), device="cpu", prompts={"q": 1})


