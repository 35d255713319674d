"""Reading checkpoints (minilm/weights.py): pickle checkpoints only through weights_only=True."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import minilm

def test_pickle_checkpoint_loads_only_with_weights_only(tmp_path, tiny_folder, sentences):
    import pickle

    import torch
    from safetensors.torch import load_file

    d = shutil.copytree(tiny_folder, tmp_path / "bin")
    tensors = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(tensors, d / "pytorch_model.bin")
    ref = minilm.SentenceTransformer(str(tiny_folder), device="cpu").encode(sentences[:5])
    np.testing.assert_array_equal(minilm.SentenceTransformer(str(d), device="cpu").encode(sentences[:5]), ref)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ValueError, match="weights_only=True"):
        minilm.SentenceTransformer(str(d), device="cpu")

