"""Write ``golden_cpu_fp32.npz``: CPU float32 embeddings that later code must reproduce bit for bit.

Generated on the code of main at commit 75d485c4d295ec5b2c9c90bbd4af82f7b17c03f5 (before the
engine refactor), torch 2.13.0 CPU, with

    .venv/bin/python tests/data/make_golden.py

and regenerated once since, for one deliberate numerical change: the encoder's float32 linear
layers moved from MKL's sgemm to oneDNN on packed weights (``minilm/linear.py``, 2026-11-27).
Before regenerating, the old code still reproduced the old file bit for bit; the new code
differed from it by at most 1.6e-6 of an array's largest value (real model; the random-weight
architectures did not change), and its distance to sentence-transformers on STS-dev moved
from 2.1e-7 to 2.6e-7 (max abs), min cosine 0.99999988 both.

``tests/test_golden.py`` (the real all-MiniLM-L6-v2) and ``tests/test_architectures.py`` (one
random-weight model per architecture) compare today's ``encode`` with it using
``np.array_equal``. Do not regenerate it to make those tests pass: a difference means that the
CPU numerics changed, which a refactor must not do. Regenerate only for a deliberate numerical
change, and say so in the commit.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_cpu_fp32.npz"
# The real model's Pooling config replaced by each mode in turn (mean is the model's own).
POOLING_MODES = ("cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
PROMPT = "query: "


def golden_texts() -> list[str]:
    """23 texts: short and medium sentences, questions, accents and emoji, two paragraphs under
    the 256-token cap and two over it, an empty string and a single letter."""
    sentences = (HERE / "sentences.txt").read_text(encoding="utf-8").splitlines()
    paragraphs = (HERE / "paragraphs.txt").read_text(encoding="utf-8").splitlines()
    picked = [sentences[i] for i in (0, 11, 37, 88, 150, 178, 200, 214, 222, 229, 240, 255, 280, 300)]
    return picked + ["", "a", "Wow!", "MAKE SURE THE DOOR IS LOCKED."] + paragraphs[:2] + paragraphs[-2:] + [
        " ".join(paragraphs[5:8])]


def real_model_variant(real: Path, folder: Path, pooling_mode: str, include_prompt: bool = True) -> Path:
    """The real model folder with another Pooling config; the weights are linked, not copied."""
    shutil.copytree(real, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    os.symlink(real / "model.safetensors", folder / "model.safetensors")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode": pooling_mode, "include_prompt": include_prompt}))
    return folder


def real_model_embeddings(real: Path, tmp: Path) -> dict[str, np.ndarray]:
    import minilm

    texts = golden_texts()
    base = minilm.SentenceTransformer(str(real), device="cpu")
    out = {
        "real/mean": base.encode(texts),
        "real/mean_prompt": base.encode(texts, prompt=PROMPT),
        "real/mean_truncate64_normalize": base.encode(texts, truncate_dim=64, normalize_embeddings=True),
        # Rows of every token of the first four texts, concatenated.
        "real/token_embeddings": np.concatenate(
            [t.numpy() for t in base.encode(texts[:4], output_value="token_embeddings")]),
    }
    for mode in POOLING_MODES:
        m = minilm.SentenceTransformer(str(real_model_variant(real, tmp / mode, mode)), device="cpu")
        out[f"real/{mode}"] = m.encode(texts)
    m = minilm.SentenceTransformer(str(real_model_variant(real, tmp / "noprompt", "mean", False)), device="cpu")
    out["real/mean_prompt_excluded"] = m.encode(texts, prompt=PROMPT)
    return out


def architecture_embeddings(real: Path, tmp: Path) -> dict[str, np.ndarray]:
    import minilm
    from test_architectures import ARCHS, arch_texts, build_hf

    texts = arch_texts()
    return {f"arch/{a}": minilm.SentenceTransformer(str(build_hf(a, tmp / a, real)), device="cpu").encode(texts)
            for a in ARCHS}


def main() -> int:
    sys.path.insert(0, str(HERE.parent))  # tests/: conftest and test_architectures
    from conftest import find_real_model

    real = find_real_model()
    with tempfile.TemporaryDirectory() as d:
        arrays = {**real_model_embeddings(real, Path(d)), **architecture_embeddings(real, Path(d))}
    assert all(a.dtype == np.float32 for a in arrays.values())
    np.savez_compressed(sys.argv[1] if len(sys.argv) > 1 else GOLDEN, **arrays)
    for k, a in arrays.items():
        print(k, a.shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
