"""The modules after pooling (minilm/heads.py) against sentence-transformers' Dense and Normalize."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import widen_weights
from minilm.heads import Dense, Normalize, load_head


@pytest.mark.parametrize("activation, bias", [("Tanh", True), ("GELU", False), ("Identity", True), ("ReLU", True)])
def test_dense_matches_sentence_transformers(tmp_path, activation, bias):
    from sentence_transformers import models

    torch.manual_seed(0)
    ref = models.Dense(48, 24, bias=bias, activation_function=getattr(torch.nn, activation)())
    widen_weights(ref, seed=3)
    ref.save(str(tmp_path))
    ours = load_head("Dense", tmp_path)
    assert isinstance(ours, Dense)
    x = torch.randn(7, 48)
    with torch.inference_mode():
        want = ref({"sentence_embedding": x})["sentence_embedding"]
        got = ours(x)
    assert got.shape == (7, 24)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_normalize_matches_sentence_transformers():
    from sentence_transformers import models

    x = torch.randn(5, 16) * 3
    x[2] = 0  # a zero row stays zero (eps), it does not become NaN
    want = models.Normalize()({"sentence_embedding": x})["sentence_embedding"]
    torch.testing.assert_close(Normalize()(x), want, atol=1e-7, rtol=0)
    assert torch.isfinite(Normalize()(x)).all()


def test_dropout_is_identity_at_inference(tmp_path):
    x = torch.randn(3, 8)
    assert torch.equal(load_head("Dropout", tmp_path)(x), x)


def test_dense_activation_must_be_a_torch_nn_class(tmp_path):
    from sentence_transformers import models

    models.Dense(8, 4, activation_function=torch.nn.Tanh()).save(str(tmp_path))
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for bad, match in (("os.system", "refusing to import"), ("torch.nn.functional.relu", "not a torch.nn.Module"),
                       ("torch.nn.NoSuchThing", "not a torch.nn.Module")):
        cfg_path.write_text(json.dumps({**cfg, "activation_function": bad}))
        with pytest.raises(ValueError, match=match):
            Dense.load(tmp_path)
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k != "activation_function"}))
    assert isinstance(Dense.load(tmp_path).activation, torch.nn.Tanh)  # sentence-transformers' default


def test_dense_config_and_weight_errors(tmp_path):
    from sentence_transformers import models

    with pytest.raises(FileNotFoundError, match="no config.json"):
        Dense.load(tmp_path)
    models.Dense(8, 4).save(str(tmp_path))
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "out_features": 5}))
    with pytest.raises(ValueError, match=r"linear.weight has shape \(4, 8\), config implies \(5, 8\)"):
        Dense.load(tmp_path)
    cfg_path.write_text(json.dumps({**cfg, "module_input_name": "token_embeddings"}))
    with pytest.raises(ValueError, match="only over the sentence embedding"):
        Dense.load(tmp_path)
    cfg_path.write_text("{")
    with pytest.raises(ValueError, match="not a valid Dense config"):
        Dense.load(tmp_path)
