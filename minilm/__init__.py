"""minilm: fast, faithful sentence embeddings for sentence-transformers models.

    from minilm import SentenceTransformer
    model = SentenceTransformer("all-MiniLM-L6-v2")
    embeddings = model.encode(["A sentence.", "Another one."])
"""

from __future__ import annotations

import importlib
import logging

from ._kernels_path import ensure_kernels_importable

ensure_kernels_importable(__name__, __file__)

__version__ = "0.1.0"

# Public name -> the module that defines it. Imported on first use rather than here, so that
# `minilm --help` (and anything else that needs only the package) does not import torch, which
# takes seconds.
_EXPORTS = {
    "SentenceTransformer": "sentence_transformer",
    "DEFAULT_MODEL": "hub",
    "cos_sim": "similarity",
    "dot_score": "similarity",
    "euclidean_sim": "similarity",
    "manhattan_sim": "similarity",
    "pairwise_cos_sim": "similarity",
    "pairwise_dot_score": "similarity",
    "pairwise_euclidean_sim": "similarity",
    "pairwise_manhattan_sim": "similarity",
    "quantize_embeddings": "quantization",
    "semantic_search": "search",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        # `minilm.multiprocess` and friends, as when __init__ imported them eagerly.
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


logging.getLogger(__name__).addHandler(logging.NullHandler())
