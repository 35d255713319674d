"""minilm: fast, faithful sentence embeddings for sentence-transformers models.

    from minilm import SentenceTransformer
    model = SentenceTransformer("all-MiniLM-L6-v2")
    embeddings = model.encode(["A sentence.", "Another one."])
"""

from __future__ import annotations

import logging

from ._kernels_path import ensure_kernels_importable

ensure_kernels_importable(__name__, __file__)

from .quantization import quantize_embeddings  # noqa: E402
from .search import semantic_search  # noqa: E402
from .sentence_transformer import DEFAULT_MODEL, SentenceTransformer  # noqa: E402
from .similarity import (  # noqa: E402
    cos_sim,
    dot_score,
    euclidean_sim,
    manhattan_sim,
    pairwise_cos_sim,
    pairwise_dot_score,
    pairwise_euclidean_sim,
    pairwise_manhattan_sim,
)

__version__ = "0.1.0"
__all__ = [
    "SentenceTransformer",
    "DEFAULT_MODEL",
    "cos_sim",
    "dot_score",
    "euclidean_sim",
    "manhattan_sim",
    "pairwise_cos_sim",
    "pairwise_dot_score",
    "pairwise_euclidean_sim",
    "pairwise_manhattan_sim",
    "quantize_embeddings",
    "semantic_search",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
