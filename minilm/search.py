"""Exhaustive top-k retrieval with sentence-transformers' ``util.semantic_search`` interface.

The corpus is scored one chunk at a time and only each query's running top-k survives a chunk,
so peak memory is ``query_chunk_size x corpus_chunk_size`` scores. A numpy corpus (a
``np.memmap`` included) is converted chunk by chunk, so it never has to fit in memory as one
tensor.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .inputs import check_int
from .similarity import cos_sim, dot_score


def _as_2d(x: Any, what: str):
    """A tensor or numpy array of shape (n, d); lists are stacked, 1-D inputs become one row."""
    if isinstance(x, (list, tuple)):
        if not x:
            return torch.empty(0, 0)
        x = torch.stack([torch.as_tensor(v) for v in x])
    elif not isinstance(x, (Tensor, np.ndarray)):
        raise TypeError(f"{what} must be a tensor, a numpy array or a list of them, got {type(x).__name__}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got shape {tuple(x.shape)}")
    return x


def _chunk(x, start: int, end: int, device: torch.device) -> Tensor:
    c = x[start:end]
    if isinstance(c, np.ndarray):
        if not (c.flags.writeable and c.flags.c_contiguous):
            c = np.array(c)  # a read-only memmap chunk: copy it in rather than alias the file
        c = torch.from_numpy(c)
    # Half-precision scores would round near-equal candidates into ties; int codes (quantized
    # embeddings) would overflow in a matmul.
    if not c.is_floating_point() or torch.finfo(c.dtype).bits < 32:
        c = c.float()
    return c.to(device)


def semantic_search(
    query_embeddings,
    corpus_embeddings,
    query_chunk_size: int = 100,
    corpus_chunk_size: int = 500000,
    top_k: int = 10,
    score_function: Callable[[Tensor, Tensor], Tensor] = cos_sim,
) -> list[list[dict[str, int | float]]]:
    """For every query, the ``top_k`` corpus entries with the highest ``score_function`` score.

    Returns one list per query of ``{"corpus_id": int, "score": float}`` dicts sorted by
    decreasing score (equal scores: lower ``corpus_id`` first). ``score_function(a, b)`` takes
    ``(n, d)`` and ``(m, d)`` and returns ``(n, m)`` scores; any of ``minilm``'s or
    sentence-transformers' similarity functions works. Scores are computed on the corpus's
    device (CPU for numpy input).
    """
    check_int("query_chunk_size", query_chunk_size)
    check_int("corpus_chunk_size", corpus_chunk_size)
    check_int("top_k", top_k, minimum=0)
    if not callable(score_function):
        raise TypeError(f"score_function must be callable, got {type(score_function).__name__}")
    queries = _as_2d(query_embeddings, "query_embeddings")
    corpus = _as_2d(corpus_embeddings, "corpus_embeddings")
    n_q, n_c = queries.shape[0], corpus.shape[0]
    if n_q and n_c and queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"query embeddings have dimension {queries.shape[1]} but corpus embeddings have "
                         f"{corpus.shape[1]}")
    device = corpus.device if isinstance(corpus, Tensor) else torch.device("cpu")
    k = min(top_k, n_c)
    if n_q == 0:
        return []
    if k == 0:
        return [[] for _ in range(n_q)]

    # Cosine is a dot product of unit vectors: normalize each corpus chunk once rather than once
    # per query chunk.
    fast_cos = score_function is cos_sim
    best_scores = [None] * ((n_q + query_chunk_size - 1) // query_chunk_size)
    best_ids = [None] * len(best_scores)
    with torch.inference_mode():
        for c0 in range(0, n_c, corpus_chunk_size):
            c = _chunk(corpus, c0, min(c0 + corpus_chunk_size, n_c), device)
            if fast_cos:
                c = torch.nn.functional.normalize(c, p=2, dim=1)
            for qi, q0 in enumerate(range(0, n_q, query_chunk_size)):
                q = _chunk(queries, q0, min(q0 + query_chunk_size, n_q), device)
                if fast_cos:
                    scores = dot_score(torch.nn.functional.normalize(q, p=2, dim=1), c)
                else:
                    scores = torch.as_tensor(score_function(q, c))
                if scores.shape != (q.shape[0], c.shape[0]):
                    raise ValueError(f"score_function returned shape {tuple(scores.shape)}, expected "
                                     f"{(q.shape[0], c.shape[0])}")
                ids = torch.arange(c0, c0 + c.shape[0], device=scores.device).expand_as(scores)
                if best_scores[qi] is not None:
                    scores = torch.cat([best_scores[qi], scores.to(best_scores[qi].dtype)], dim=1)
                    ids = torch.cat([best_ids[qi], ids], dim=1)
                kk = min(k, scores.shape[1])
                top, pos = torch.topk(scores, kk, dim=1)
                best_scores[qi], best_ids[qi] = top, torch.gather(ids, 1, pos)

    results: list[list[dict[str, int | float]]] = []
    for s, i in zip(best_scores, best_ids):
        for row_s, row_i in zip(s.cpu().tolist(), i.cpu().tolist()):
            # topk's order among equal scores is unspecified; make it deterministic.
            ranked = sorted(zip(row_s, row_i), key=lambda p: (-p[0], p[1]))
            results.append([{"corpus_id": int(cid), "score": float(sc)} for sc, cid in ranked])
    return results
