"""Similarity functions with sentence-transformers' names, inputs and output shapes.

Matrix forms take ``(N, D)`` and ``(M, D)`` (a 1-D input counts as one row) and return
``(N, M)``; pairwise forms take two ``(N, D)`` and return ``(N,)``. Inputs may be tensors,
numpy arrays or lists of either.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")


def _as_tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        if len(x) and isinstance(x[0], Tensor):
            t = torch.stack(list(x))
        elif len(x) and isinstance(x[0], np.ndarray):
            t = torch.from_numpy(np.stack(x))
        else:
            t = torch.tensor(x)
    else:
        raise TypeError(f"expected a tensor, numpy array or list of them, got {type(x).__name__}")
    # Integer codes would overflow in a matmul, and half-precision products round nearby scores
    # into ties (sentence-transformers upcasts sub-float32 floats for the same reason).
    if not t.is_floating_point() or torch.finfo(t.dtype).bits < 32:
        t = t.float()
    return t


def _as_batch(x) -> Tensor:
    t = _as_tensor(x)
    return t.unsqueeze(0) if t.dim() == 1 else t


def _normalize(t: Tensor) -> Tensor:
    return torch.nn.functional.normalize(t, p=2, dim=-1)


def cos_sim(a, b) -> Tensor:
    a, b = _as_batch(a), _as_batch(b)
    return _normalize(a) @ _normalize(b).T


def dot_score(a, b) -> Tensor:
    a, b = _as_batch(a), _as_batch(b)
    return a @ b.T


def euclidean_sim(a, b) -> Tensor:
    """Negative euclidean distance."""
    a, b = _as_batch(a), _as_batch(b)
    return -torch.cdist(a, b, p=2.0)


def manhattan_sim(a, b) -> Tensor:
    """Negative manhattan distance."""
    a, b = _as_batch(a), _as_batch(b)
    return -torch.cdist(a, b, p=1.0)


def pairwise_cos_sim(a, b) -> Tensor:
    return pairwise_dot_score(_normalize(_as_tensor(a)), _normalize(_as_tensor(b)))


def pairwise_dot_score(a, b) -> Tensor:
    return (_as_tensor(a) * _as_tensor(b)).sum(dim=-1)


def pairwise_euclidean_sim(a, b) -> Tensor:
    return -torch.sqrt(((_as_tensor(a) - _as_tensor(b)) ** 2).sum(dim=-1))


def pairwise_manhattan_sim(a, b) -> Tensor:
    return -(_as_tensor(a) - _as_tensor(b)).abs().sum(dim=-1)


_FNS: dict[str, tuple[Callable, Callable]] = {
    "cosine": (cos_sim, pairwise_cos_sim),
    "dot": (dot_score, pairwise_dot_score),
    "euclidean": (euclidean_sim, pairwise_euclidean_sim),
    "manhattan": (manhattan_sim, pairwise_manhattan_sim),
}


def get_similarity_fn(name: str, pairwise: bool = False) -> Callable:
    if name not in _FNS:
        raise ValueError(f"Unknown similarity function {name!r}; expected one of {SIMILARITY_FN_NAMES}")
    return _FNS[name][1 if pairwise else 0]
