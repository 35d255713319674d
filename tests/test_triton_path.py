"""The encoder's CUDA route (Triton attention, add+LayerNorm and mean pooling), run on CPU
tensors through the Triton interpreter and compared with the plain-PyTorch route."""

from __future__ import annotations

import numpy as np
import pytest

import minilm
from conftest import interpreter_ready, save_random_bert, save_st_model


pytestmark = pytest.mark.skipif(not interpreter_ready(), reason="needs triton with TRITON_INTERPRET=1 set before import")


@pytest.mark.parametrize("include_prompt", [True, False])
def test_triton_route_matches_torch_route(tmp_path, monkeypatch, real_model_path, sentences, paragraphs,
                                         include_prompt):
    import minilm.kernels.attention as ka
    import minilm.kernels.layernorm as kl
    import minilm.kernels.pooling as kp

    calls = {"attention": 0, "layernorm": 0, "pool": 0}

    def spy(mod, name, key):
        fn = getattr(mod, name)

        def wrapped(*a, **k):
            assert k.get("backend") == "triton"
            calls[key] += 1
            return fn(*a, **k)

        monkeypatch.setattr(mod, name, wrapped)

    spy(ka, "varlen_attention", "attention")
    spy(kl, "add_layer_norm", "layernorm")
    spy(kp, "varlen_mean_pool", "pool")

    hf = save_random_bert(tmp_path / "hf", real_model_path, hidden_size=64, num_attention_heads=2,
                          num_hidden_layers=2, intermediate_size=96, max_position_embeddings=80)
    folder = save_st_model(tmp_path / "st", hf, include_prompt=include_prompt, prompts={"q": "query: "})
    m = minilm.SentenceTransformer(str(folder), device="cpu")
    texts = sentences[:9] + paragraphs[:2] + ["x"]
    ref = m.encode(texts, batch_size=4, prompt_name="q")
    m.engine.backend = "triton"  # what moving to CUDA chooses
    try:
        got = m.encode(texts, batch_size=4, prompt_name="q")
    finally:
        m.engine.backend = None
    assert calls["attention"] > 0 and calls["layernorm"] > 0 and calls["pool"] > 0, calls
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
