"""Execution: texts -> embeddings, owned by one :class:`Engine`.

The path is tokenize -> plan batches -> varlen batch -> encoder -> pooling -> heads ->
truncate -> normalize -> output. The engine owns all of it, plus the per-device policy, which
lives in two small strategy classes rather than in branches: :class:`CpuStrategy` and
:class:`CudaStrategy` say how big a chunk and a batch are, how a batch reaches the device and
whether the next chunk is tokenized ahead. The kernel backend is chosen once per (device,
dtype) by :func:`choose_backend` and passed down explicitly.

The public API (argument names, prompts, defaults) is the facade's job
(:mod:`minilm.sentence_transformer`); it hands the engine a resolved :class:`EncodeRequest`.
An :class:`EngineSpec` is the picklable recipe a worker process rebuilds an engine from.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import heads as heads_mod
from .cpu_features import has_bf16_dot
from .inputs import check_encodable, resolve_device
from .model import BACKENDS, Encoder
from .model_folder import ModelFolder, read_model_folder
from .outputs import format_output
from .pooling import pool
from .tokenizer import TextTokenizer, load_tokenizer
from .varlen import batch_to, make_varlen_batch
from .weights import load_encoder

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
# CUDA pipelines (one per set of output options) kept per engine; each holds its graphs.
_MAX_PIPELINES = 4


# ------------------------------------------------------------------------ device and backend
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


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU has dot-product instructions for ``dtype``. For bf16 that is
    AVX512_BF16 or AMX-BF16 (:func:`minilm.cpu_features.has_bf16_dot`); torch's own probe
    also says yes on AVX-512 CPUs without them (Skylake-X), where oneDNN converts to float32
    and bf16 runs no faster than float32."""
    if dtype == torch.bfloat16:
        return has_bf16_dot()
    try:
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # older torch builds without these probes
        pass
    return dtype == torch.float32


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(device: torch.device, dtype: torch.dtype) -> str:
    """The encoder's attention/LayerNorm path (one of ``minilm.model.BACKENDS``): per run of
    equal lengths on CPU (SDPA, which keeps float32 bit-equal to the golden embeddings; in bf16
    on CPUs with bf16 dot products, the faster of SDPA and plain matmuls by length), the Triton
    kernels on CUDA, padded SDPA on CUDA without Triton."""
    if device.type == "cpu":
        native = cpu_has_native(dtype)
        if not native:
            logger.warning("This CPU has no native %s matrix units (AVX512-BF16/AMX/AVX512-FP16); %s runs "
                           "emulated and is typically slower than float32 here", dtype, dtype)
        # Emulated bf16 matmuls made long-text attention 2x slower than SDPA's (AVX2 cap, 256 tokens).
        return "math_runs" if dtype == torch.bfloat16 and native else "sdpa_runs"
    if device.type == "cuda":
        if triton_available():
            return "triton"
        logger.warning("Triton is not installed; CUDA runs fall back to PyTorch attention")
    return "sdpa_padded"


# ---------------------------------------------------------------------------- device strategy
class CpuStrategy:
    """CPU: big chunks (tokenization is cheap next to the forward), batches of 2048 padded
    tokens so a layer's activations stay in cache (measured on a 2-core EPYC: ~1.4x on long
    text against 32 x 256-token batches, benchmarks/bench_encode.py --max-batch-tokens) and
    filled with short texts past ``batch_size`` (:meth:`Engine.plan_batches`), and every batch
    padded to a multiple of 64 rows (at least 16)."""

    chunk_size = 8192
    max_batch_tokens: Optional[int] = 2048
    prefetch = False
    # The CPU GEMMs round small products differently (oneDNN's packed GEMM a 1-row one, MKL,
    # where weights are not packed, anything under 12 rows); a filler sequence keeps every
    # batch on one path, so a text's embedding does not depend on its batch's size.
    min_gemm_rows = 16
    # oneDNN, which runs every CPU linear (minilm/linear.py), builds and caches one kernel per
    # GEMM shape, up to 1,024 of them per cache by default: with every pass a different token
    # count, a long in-process run grew by about 0.7 MB per distinct count (1 GB after 1,500).
    # Padding each pass to a multiple of this many rows keeps the counts, and the caches, to a
    # few dozen, for at most 63 filler rows a pass.
    gemm_rows_step = 64

    def to_device(self, ids: list[list[int]], position_offset: int, device: torch.device):
        n_real, t_real = len(ids), sum(len(s) for s in ids)
        if t_real > 0:
            rows = max(self.min_gemm_rows, -(-t_real // self.gemm_rows_step) * self.gemm_rows_step)
            if rows > t_real:
                ids = ids + [[ids[0][0]] * (rows - t_real)]
        return make_varlen_batch(ids, position_offset, with_token_types=False), n_real, t_real

    def sentence_embeddings(self, engine: "Engine", texts: Sequence[str], request: "EncodeRequest",
                            progress) -> Optional[Tensor]:
        return None  # the engine's generic chunk loop is the CPU path


class CudaStrategy:
    """CUDA: sentence embeddings go through :class:`minilm.cuda_pipeline.CudaPipeline`
    (batches cut by a token budget with ``batch_size`` as a lower bound, one packed pinned
    copy per batch, CUDA graphs per shape bucket, device-to-host copies overlapped with the
    next chunk, the next chunk tokenized on a worker thread). Token embeddings and feature
    dicts take the generic loop: no token cap, one pinned asynchronous copy per batch."""

    chunk_size = 8192
    max_batch_tokens: Optional[int] = None
    prefetch = True
    # The sentence-embedding path's chunk schedule (cuda_pipeline.chunk_sizes, prefetched),
    # measured on an H100 with 16 host cores as encode()'s share of the tokenize-only rate
    # (benchmarks/RESULTS.md, "chunk schedule"). Inputs of up to ``ramp_upto_chunks`` chunks
    # ramp up from and back down to ``first_chunk`` texts, which shortens the serial first
    # tokenization and last forward: 14,498 sentences 72-90% -> 83-97%, 2,101 abstracts
    # 76-77% -> 82-96%. Longer inputs keep fixed chunks, ``tokenize_ahead`` of them in
    # flight: on 115,984 sentences the ramp measured 74-84% against 91-99% without it (in
    # four runs; why, is not known), and two ahead 90-98%.
    first_chunk: Optional[int] = 512
    ramp_upto_chunks = 4
    tokenize_ahead = 2

    def to_device(self, ids: list[list[int]], position_offset: int, device: torch.device):
        batch = make_varlen_batch(ids, position_offset, with_token_types=False)
        return batch_to(batch, device, pin=torch.cuda.is_available()), len(ids), batch.total_tokens

    def sentence_embeddings(self, engine: "Engine", texts: Sequence[str], request: "EncodeRequest",
                            progress) -> Optional[Tensor]:
        """(N, D) host embeddings of ``texts``, or None when the request needs the generic
        path (token outputs, or a device tensor as the result)."""
        if request.output_value != "sentence_embedding" or not request.convert_to_numpy:
            return None
        from .cuda_pipeline import prefetched

        texts = _with_prompt(texts, request)

        pipe = engine.cuda_pipeline(request)
        size = engine.effective_chunk_size()
        parts = []
        ramp = len(texts) <= self.ramp_upto_chunks * size
        chunks = prefetched(engine.tokenizer.encode, texts, size, first=self.first_chunk if ramp else None,
                            depth=self.tokenize_ahead)
        try:
            for part in pipe.embed_chunks(chunks, request.batch_size):
                parts.append(part)
                if progress is not None:
                    progress.update(part.shape[0])
        except TypeError:
            check_encodable(texts)  # a lone surrogate: name its index rather than tokenizers' complaint
            raise
        return torch.cat(parts) if parts else None


class OtherDeviceStrategy(CudaStrategy):
    """Any other torch device (e.g. MPS): the CUDA policy with a plain copy."""

    prefetch = False

    def to_device(self, ids: list[list[int]], position_offset: int, device: torch.device):
        batch = make_varlen_batch(ids, position_offset, with_token_types=False)
        return batch_to(batch, device, pin=False), len(ids), batch.total_tokens

    def sentence_embeddings(self, engine: "Engine", texts: Sequence[str], request: "EncodeRequest",
                            progress) -> Optional[Tensor]:
        return None  # pinned memory, graphs and events are CUDA's: the generic loop here


def strategy_for(device: torch.device):
    if device.type == "cpu":
        return CpuStrategy()
    return CudaStrategy() if device.type == "cuda" else OtherDeviceStrategy()


# ------------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class EncodeRequest:
    """One ``encode`` call's resolved settings; picklable, so pool workers run the same call.

    prompt: text prepended to every input, or None
    pooling_skip: leading (prompt) tokens that pooling leaves out (``include_prompt=False``)
    prompt_length: the prompt's token count reported by ``output_value=None``, or None
    """

    batch_size: int = 32
    prompt: Optional[str] = None
    pooling_skip: int = 0
    prompt_length: Optional[int] = None
    output_value: Optional[str] = "sentence_embedding"
    normalize: bool = False
    truncate_dim: Optional[int] = None
    precision: Optional[str] = "float32"
    convert_to_numpy: bool = True
    convert_to_tensor: bool = False


def _with_prompt(texts: Sequence[str], request: EncodeRequest) -> Sequence[str]:
    return [request.prompt + t for t in texts] if request.prompt else texts


@dataclass
class EmbeddedChunk:
    """One chunk of work, in input order: its token ids, its sentence embeddings ``(n, D)`` on
    the compute device (or None), its per-text token embeddings (or None)."""

    start: int
    ids: list
    sentence_embeddings: Optional[Tensor]
    token_embeddings: Optional[list]


# -------------------------------------------------------------------------------- the engine
class Engine:
    """Runs encoder -> pooling -> heads over batches of texts on the encoder's device."""

    def __init__(self, encoder: Encoder, tokenizer: TextTokenizer, pooling_modes: tuple[str, ...],
                 include_prompt: bool, heads: nn.ModuleList, embedding_dim: int):
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling_modes = pooling_modes
        self.include_prompt = include_prompt
        self.heads = heads
        self.embedding_dim = embedding_dim
        # None: the device strategy's default.
        self.max_batch_tokens: Optional[int] = None
        self.chunk_size: Optional[int] = None
        self._backends: dict[tuple[torch.device, torch.dtype], str] = {}
        self._pinned_backend: Optional[str] = None
        self._pinned_strategy = None
        self.quantize: Optional[str] = None
        self.calibration_texts: Optional[list[str]] = None
        self._pipelines: dict[tuple, Any] = {}
        self._prompt_lengths: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: ModelFolder, dtype: torch.dtype, *, quantize: Optional[str] = None,
                    calibration_texts: Optional[Sequence[str]] = None,
                    device: torch.device = torch.device("cpu")) -> "Engine":
        """Build every piece a folder describes, on the CPU, in ``dtype``; with ``quantize``
        (``"int8"``, for ``device`` the CPU) the encoder's linear layers become int8 GEMMs,
        smoothed on ``calibration_texts`` (default: the text shipped with minilm)."""
        tdir = folder.transformer_dir
        encoder = load_encoder(tdir, dtype)
        cfg = encoder.config
        # Like sentence-transformers, never beyond what the position table can hold; unlike it,
        # the RoBERTa family's and MPNet's position offset counts, so a 514-row table gives 512.
        max_len = min(folder.max_seq_length or cfg.max_positions, cfg.max_positions)
        # A bare vocab.txt implies BERT's [CLS]/[SEP]; other families need their tokenizer.json.
        base_tok = load_tokenizer(tdir, folder.do_lower_case,
                                  vocab_txt_fallback=cfg.model_type in ("bert", "distilbert"))
        if folder.pooling_dim is not None and folder.pooling_dim != cfg.hidden_size:
            raise ValueError(f"Pooling config says embedding dimension {folder.pooling_dim}, but the encoder's "
                             f"hidden_size is {cfg.hidden_size}")
        heads = nn.ModuleList(heads_mod.load_head(k, p) for k, p in folder.heads)
        out_dim = len(folder.pooling_modes) * cfg.hidden_size
        for h in heads:
            if isinstance(h, heads_mod.Dense):
                if h.linear.in_features != out_dim:
                    raise ValueError(f"Dense expects {h.linear.in_features} inputs but the previous module "
                                     f"gives {out_dim}")
                out_dim = h.linear.out_features
        heads.to(dtype)
        engine = cls(encoder, TextTokenizer(base_tok, max_len), folder.pooling_modes, folder.include_prompt,
                     heads, out_dim)
        if quantize is not None or calibration_texts is not None:
            from .int8 import quantize_model

            # The validated texts are kept so that worker processes rebuild the same engine.
            engine.calibration_texts = quantize_model(encoder, quantize, device, engine.tokenizer, calibration_texts)
            engine.quantize = quantize
        return engine

    # ------------------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.encoder.embeddings.word.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.embeddings.word.weight.dtype

    @property
    def backend(self) -> str:
        """The encoder's kernel path for the current device and dtype (:func:`choose_backend`),
        unless pinned by assigning one of ``minilm.model.BACKENDS`` (None: automatic again);
        pinning ``"triton"`` on CPU tensors runs the kernels through the Triton interpreter."""
        if self._pinned_backend is not None:
            return self._pinned_backend
        key = (self.device, self.dtype)
        b = self._backends.get(key)
        if b is None:
            b = self._backends[key] = choose_backend(*key)
        return b

    @backend.setter
    def backend(self, value: Optional[str]) -> None:
        if value is not None and value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {value!r}")
        self._pinned_backend = value

    @property
    def strategy(self):
        """The per-device policy (:class:`CpuStrategy`, :class:`CudaStrategy`) for the current
        device, unless pinned by assigning a strategy object (None: automatic again)."""
        return self._pinned_strategy or strategy_for(self.device)

    @strategy.setter
    def strategy(self, value) -> None:
        self._pinned_strategy = value

    def effective_chunk_size(self, device: Optional[torch.device] = None) -> int:
        """``chunk_size``, or the device strategy's default (8192 texts)."""
        return self.chunk_size or (self.strategy if device is None else strategy_for(device)).chunk_size

    def effective_max_batch_tokens(self, device: Optional[torch.device] = None) -> Optional[int]:
        """``max_batch_tokens``, or the device's default (2048 on CPU, none on CUDA)."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return (self.strategy if device is None else strategy_for(device)).max_batch_tokens

    def cuda_pipeline(self, request: EncodeRequest):
        """The :class:`minilm.cuda_pipeline.CudaPipeline` for this device, backend and the
        request's output options, kept across calls so its CUDA graphs are captured once."""
        from .cuda_pipeline import CudaPipeline

        key = (self.device, self.dtype, self.backend, self.tokenizer.max_length, self.max_batch_tokens,
               request.pooling_skip, request.truncate_dim, request.normalize)
        pipe = self._pipelines.get(key)
        if pipe is None:
            if len(self._pipelines) >= _MAX_PIPELINES:  # each holds its graphs' memory
                self._pipelines.pop(next(iter(self._pipelines)))
            pipe = self._pipelines[key] = CudaPipeline(self, request, max_tokens=self.max_batch_tokens)
        return pipe

    def move_to(self, device: torch.device) -> None:
        """Move the encoder and heads; a no-op when already there. Safe under concurrent calls."""
        if device != self.device:
            if self.quantize is not None and device.type != "cpu":
                raise ValueError(f"quantize={self.quantize!r} runs on the CPU only; cannot move to {device}")
            with self._lock:
                self.encoder.to(device)
                self.heads.to(device)

    def prompt_length(self, prompt: str) -> int:
        key = (prompt, self.tokenizer.max_length)
        n = self._prompt_lengths.get(key)
        if n is None:
            n = self._prompt_lengths[key] = self.tokenizer.prompt_length(prompt)
        return n

    # ---------------------------------------------------------------------------- batches
    def plan_batches(self, lengths: Sequence[int], batch_size: int,
                     device: Optional[torch.device] = None, fill_budget: bool = False) -> list[list[int]]:
        """Indices sorted by decreasing token count, cut into batches of at most
        ``max_batch_tokens`` padded tokens (when set) and ``batch_size`` texts.

        ``fill_budget``: where a budget is set, it alone cuts the batches and ``batch_size`` is
        not a cap. Embeddings do not depend on the batch, so this changes speed only: on short
        text, 32-text batches are ~330-token GEMMs, and filling the 2,048-token budget measured
        1.13x (int8), 1.07x (bf16) and 1.15x (float32) on 600 STS-dev sentences (2-core Zen 4,
        benchmarks/RESULTS.md). The engine asks for it for sentence embeddings only; token
        embeddings keep ``batch_size`` as the most texts per pass, as on CUDA.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        budget = self.effective_max_batch_tokens(device)
        max_texts = len(lengths) if (fill_budget and budget) else batch_size
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            # Sorted descending, so the batch's first text is its longest.
            if cur and (len(cur) >= max_texts or (budget and lengths[cur[0]] * (len(cur) + 1) > budget)):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    def forward_ids(self, ids: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Token-id lists -> (last hidden state (total_tokens, H), cu_seqlens (B + 1,))."""
        batch, n_real, t_real = self.strategy.to_device(ids, self.encoder.config.position_offset, device)
        hidden = self.encoder(batch, self.backend)
        return hidden[:t_real], batch.cu_seqlens[: n_real + 1]

    def sentence_embeddings(self, hidden: Tensor, cu_seqlens: Tensor, request: EncodeRequest) -> Tensor:
        """(total_tokens, H) -> (B, D): pooling, the model's heads, truncation, normalization."""
        emb = pool(hidden, cu_seqlens, self.pooling_modes, request.pooling_skip,
                   backend="triton" if self.backend == "triton" else "torch")  # (B, pooled_dim)
        for h in self.heads:
            emb = h(emb)
        if request.truncate_dim is not None:
            emb = emb[:, :request.truncate_dim]
        if request.normalize and request.output_value is not None:
            emb = F.normalize(emb, p=2, dim=1)
        return emb

    def embed_chunks(self, texts: Sequence[str], request: EncodeRequest, progress=None) -> Iterator[EmbeddedChunk]:
        """Embed ``texts`` chunk by chunk, each chunk's results in input order.

        Memory is bounded by the chunk, not the input. Within a chunk, texts are tokenized once,
        sorted by token count and cut into batches. With a prefetching strategy the next chunk
        is tokenized on a worker thread while the device works on the current one.
        ``request.output_value`` None produces both sentence and token embeddings.
        """
        device = self.device
        size = self.effective_chunk_size(device)
        want_tokens = request.output_value != "sentence_embedding"
        want_sentence = request.output_value != "token_embeddings"
        texts = _with_prompt(texts, request)
        prefetcher = ThreadPoolExecutor(1, thread_name_prefix="minilm-tokenize") \
            if self.strategy.prefetch and len(texts) > size else None

        def tokenize(i: int) -> list[list[int]]:
            try:
                return self.tokenizer.encode(texts[i:i + size])
            except Exception:
                # tokenizers names no index (a lone surrogate gives a TypeError about its
                # argument types): find the culprit only now, off the hot path.
                check_encodable(texts[i:i + size], offset=i)
                raise
        out_dim = request.truncate_dim or self.embedding_dim
        try:
            pending = None
            for start in range(0, len(texts), size):
                ids = pending.result() if pending is not None else tokenize(start)
                pending = prefetcher.submit(tokenize, start + size) \
                    if prefetcher and start + size < len(texts) else None
                n = len(ids)
                tokens: Optional[list] = [None] * n if want_tokens else None
                out = torch.empty(n, out_dim, dtype=self.dtype, device=device) if want_sentence else None
                for idx in self.plan_batches([len(s) for s in ids], request.batch_size, device,
                                             fill_budget=not want_tokens):
                    hidden, cu = self.forward_ids([ids[i] for i in idx], device)  # (total_tokens, H)
                    if tokens is not None:
                        for j, t in enumerate(torch.split(hidden, torch.diff(cu).tolist())):
                            tokens[idx[j]] = t
                    if out is not None:
                        out[torch.tensor(idx, device=device)] = self.sentence_embeddings(hidden, cu, request)
                    if progress is not None:
                        progress.update(len(idx))
                yield EmbeddedChunk(start, ids, out, tokens)
        finally:
            if prefetcher is not None:
                prefetcher.shutdown(wait=True, cancel_futures=True)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], request: EncodeRequest, progress=None) -> Any:
        """Embed ``texts`` (a list) and format the result as ``request`` asks: ``(N, D)`` numpy,
        a tensor, a list of tensors, token embeddings, feature dicts or quantized codes."""
        device = self.device
        fast = self.strategy.sentence_embeddings(self, texts, request, progress)
        if fast is not None:
            return format_output(request, fast, [], [], device, with_token_types=False)
        out_dim = request.truncate_dim or self.embedding_dim
        host = request.convert_to_numpy and request.output_value == "sentence_embedding"
        sentence_out = None
        if request.output_value != "token_embeddings":
            sentence_out = torch.empty(len(texts), out_dim, dtype=self.dtype, device="cpu" if host else device)
        token_out: list[Tensor] = []
        all_ids: list[list[int]] = []
        for chunk in self.embed_chunks(texts, request, progress):
            if chunk.sentence_embeddings is not None:
                # one device -> host copy per chunk
                sentence_out[chunk.start:chunk.start + len(chunk.ids)] = chunk.sentence_embeddings
            if chunk.token_embeddings is not None:
                token_out.extend(chunk.token_embeddings)
            if request.output_value is None:
                all_ids.extend(chunk.ids)
        return format_output(request, sentence_out, token_out, all_ids, device,
                             with_token_types=self.encoder.config.type_vocab_size > 0)

    def spec(self, model_path: Path | str) -> "EngineSpec":
        return EngineSpec(model_path=str(model_path), dtype=str(self.dtype).replace("torch.", ""),
                          max_seq_length=self.tokenizer.max_length, max_batch_tokens=self.max_batch_tokens,
                          chunk_size=self.chunk_size, quantize=self.quantize,
                          calibration_texts=None if self.calibration_texts is None else tuple(self.calibration_texts))


@dataclass(frozen=True)
class EngineSpec:
    """Everything a worker process needs to rebuild an engine: picklable, a few hundred bytes."""

    model_path: str
    dtype: str
    max_seq_length: int
    max_batch_tokens: Optional[int] = None
    chunk_size: Optional[int] = None
    quantize: Optional[str] = None
    calibration_texts: Optional[tuple[str, ...]] = None

    def differences(self, other: "EngineSpec") -> dict[str, tuple[Any, Any]]:
        a, b = asdict(self), asdict(other)
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    def build(self, device: str) -> Engine:
        dev = resolve_device(device)
        engine = Engine.from_folder(read_model_folder(Path(self.model_path)), resolve_dtype(self.dtype, dev),
                                    quantize=self.quantize, calibration_texts=self.calibration_texts, device=dev)
        engine.tokenizer.max_length = self.max_seq_length
        engine.max_batch_tokens = self.max_batch_tokens
        engine.chunk_size = self.chunk_size
        engine.move_to(dev)
        return engine
