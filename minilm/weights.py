"""Checkpoint reading and the one explicit name map from Hugging Face keys to ours.

Loading is strict: a missing tensor, a tensor we do not know, or a tensor whose shape does
not match the config raises ``ValueError`` naming it. Only ``safetensors`` files and, as a
fallback, ``pytorch_model.bin`` through ``torch.load(weights_only=True)`` are read.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor, nn

from .config import SUPPORTED_MODEL_TYPES, EncoderConfig

logger = logging.getLogger(__name__)

# Checkpoint tensors that are not part of a sentence encoder: buffers, the pooler, and the
# heads of task-specific models (MLM, classification). They are skipped, everything else
# must be mapped.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_IGNORED_PREFIXES = ("pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs.", "score.",
                     # DistilBERT's MLM and classification heads
                     "vocab_transform.", "vocab_layer_norm.", "vocab_projector.", "pre_classifier.")


def read_checkpoint(folder: Path) -> dict[str, Tensor]:
    """Read all tensors of a model folder: ``model.safetensors`` (possibly sharded), else
    ``pytorch_model.bin``. safetensors files are memory-mapped; nothing is copied until the
    tensors are cast or moved."""
    st = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if st.is_file():
        return _read_safetensors(st)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a valid safetensors index: {e}") from e
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            tensors.update(_read_safetensors(folder / shard))
        return tensors
    binf = folder / "pytorch_model.bin"
    if binf.is_file():
        return _read_torch_bin(binf)
    raise FileNotFoundError(
        f"No weights in {folder}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(f"Missing weights file {path}")
    try:
        out = {}
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
        return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def _read_torch_bin(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ValueError(
            f"{path} could not be loaded with torch.load(weights_only=True) (corrupt, or it holds "
            f"objects other than tensors, which minilm refuses to unpickle): {e}"
        ) from e
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a flat state dict of tensors")
    return obj


def _find_prefix(keys: Iterable[str], anchor: str) -> str:
    """The prefix in front of ``anchor`` (e.g. ``"bert."`` for BertForMaskedLM checkpoints)."""
    hits = sorted({k[: -len(anchor)] for k in keys if k.endswith(anchor)}, key=len)
    if not hits:
        raise ValueError(f"Checkpoint has no tensor named '*{anchor}'; is this one of the supported encoders "
                         f"{SUPPORTED_MODEL_TYPES}?")
    return hits[0]


# One flat table per family: our module name -> the checkpoint module name(s) it is built
# from, ``{}`` standing for the layer number. Each entry covers the module's parameters
# (``.weight``, and ``.bias`` where it has one). Several names are concatenated along dim 0:
# that is how Q, K and V become one fused projection. Checkpoint names get the family's
# prefix ("bert.", "roberta.", ... or none) in front.
_EMBEDDINGS = {
    "embeddings.word": "embeddings.word_embeddings",
    "embeddings.position": "embeddings.position_embeddings",
    "embeddings.token_type": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
}
BERT = {
    **_EMBEDDINGS,
    "layers.{}.attn.qkv": tuple(f"encoder.layer.{{}}.attention.self.{n}" for n in ("query", "key", "value")),
    "layers.{}.attn.out": "encoder.layer.{}.attention.output.dense",
    "layers.{}.attn_norm": "encoder.layer.{}.attention.output.LayerNorm",
    "layers.{}.mlp.up": "encoder.layer.{}.intermediate.dense",
    "layers.{}.mlp.down": "encoder.layer.{}.output.dense",
    "layers.{}.mlp_norm": "encoder.layer.{}.output.LayerNorm",
}
# DistilBERT: BERT's post-LN layer under other names, no token-type embeddings.
DISTILBERT = {
    **_EMBEDDINGS,
    "layers.{}.attn.qkv": tuple(f"transformer.layer.{{}}.attention.{n}" for n in ("q_lin", "k_lin", "v_lin")),
    "layers.{}.attn.out": "transformer.layer.{}.attention.out_lin",
    "layers.{}.attn_norm": "transformer.layer.{}.sa_layer_norm",
    "layers.{}.mlp.up": "transformer.layer.{}.ffn.lin1",
    "layers.{}.mlp.down": "transformer.layer.{}.ffn.lin2",
    "layers.{}.mlp_norm": "transformer.layer.{}.output_layer_norm",
}
# MPNet: BERT's layer with q/k/v/o names, plus the relative position bias table that every
# layer shares.
MPNET = {
    **_EMBEDDINGS,
    "position_bias.table": "encoder.relative_attention_bias",
    "layers.{}.attn.qkv": tuple(f"encoder.layer.{{}}.attention.attn.{n}" for n in ("q", "k", "v")),
    "layers.{}.attn.out": "encoder.layer.{}.attention.attn.o",
    "layers.{}.attn_norm": "encoder.layer.{}.attention.LayerNorm",
    "layers.{}.mlp.up": "encoder.layer.{}.intermediate.dense",
    "layers.{}.mlp.down": "encoder.layer.{}.output.dense",
    "layers.{}.mlp_norm": "encoder.layer.{}.output.LayerNorm",
}
# RoBERTa, XLM-R and CamemBERT checkpoints use BERT's tensor names.
WEIGHT_MAPS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "bert": BERT, "roberta": BERT, "xlm-roberta": BERT, "camembert": BERT,
    "distilbert": DISTILBERT,
    "mpnet": MPNET,
}
_LAYER_NUMBER = re.compile(r"\.(\d+)\.")


def name_map(param_names: Iterable[str], model_type: str, prefix: str) -> dict[str, list[str]]:
    """Our parameter name -> the checkpoint key(s) it is built from, for every name in
    ``param_names``. A parameter the family's table does not cover is a bug in the table."""
    table = WEIGHT_MAPS[model_type]
    out: dict[str, list[str]] = {}
    for ours in param_names:
        m = _LAYER_NUMBER.search(ours)
        pattern = ours if m is None else ours[:m.start()] + ".{}." + ours[m.end():]
        module, kind = pattern.rsplit(".", 1)
        if module not in table:
            raise KeyError(f"no checkpoint name for parameter {ours!r} in the {model_type} weight map")
        src = table[module]
        layer = m.group(1) if m else ""
        out[ours] = [f"{prefix}{name.format(layer)}.{kind}" for name in ((src,) if isinstance(src, str) else src)]
    return out


def _legacy_layernorm_names(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
    if not any(k.endswith((".gamma", ".beta")) for k in tensors):
        return tensors
    out = {}
    for k, v in tensors.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


# Every supported family names its word embeddings alike; the prefix in front differs
# ("bert.", "roberta.", "distilbert.", "mpnet.", or none for a bare encoder).
_ANCHOR = "embeddings.word_embeddings.weight"


def build_state_dict(model: nn.Module, cfg: EncoderConfig, tensors: dict[str, Tensor],
                     dtype: torch.dtype, source: str) -> dict[str, Tensor]:
    """Map checkpoint ``tensors`` onto ``model``'s parameter names, checking every shape."""
    tensors = _legacy_layernorm_names(tensors)
    prefix = _find_prefix(tensors, _ANCHOR)
    expected = {n: p.shape for n, p in model.state_dict(keep_vars=True).items()}
    names = name_map(expected, cfg.model_type, prefix)

    missing = sorted({k for keys in names.values() for k in keys if k not in tensors})
    if missing:
        raise ValueError(f"{source}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                         f"({len(missing)} in all) for a {cfg.num_hidden_layers}-layer {cfg.model_type} config")
    used = {k for keys in names.values() for k in keys}
    unexpected = sorted(
        k for k in tensors
        if k not in used
        and not k.endswith(_IGNORED_SUFFIXES)
        and not k[len(prefix):].startswith(_IGNORED_PREFIXES)
        and not k.startswith(_IGNORED_PREFIXES)
    )
    if unexpected:
        raise ValueError(
            f"{source}: unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} "
            f"({len(unexpected)} in all); does config.json (num_hidden_layers={cfg.num_hidden_layers}) match the weights?"
        )

    state: dict[str, Tensor] = {}
    for ours, keys in names.items():
        parts = [tensors[k] for k in keys]
        for k, t in zip(keys, parts):
            if not t.is_floating_point():
                raise ValueError(f"{source}: tensor {k} has non-float dtype {t.dtype}")
        t = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        if tuple(t.shape) != tuple(expected[ours]):
            shapes = ", ".join(f"{k}: {tuple(tensors[k].shape)}" for k in keys)
            raise ValueError(
                f"{source}: shape mismatch for {shapes}; config.json implies {tuple(expected[ours])} "
                f"(hidden_size={cfg.hidden_size}, intermediate_size={cfg.intermediate_size}, "
                f"vocab_size={cfg.vocab_size}, max_position_embeddings={cfg.max_position_embeddings})"
            )
        state[ours] = t.to(dtype)
    return state


def load_encoder_weights(model: nn.Module, cfg: EncoderConfig, folder: Path, dtype: torch.dtype) -> None:
    tensors = read_checkpoint(folder)
    state = build_state_dict(model, cfg, tensors, dtype, source=str(folder))
    model.load_state_dict(state, strict=True, assign=True)


def load_encoder(folder: Path, dtype: torch.dtype = torch.float32) -> "Encoder":
    """The encoder described by ``folder/config.json`` with its checkpoint's weights, in eval mode."""
    from .model import Encoder

    cfg = EncoderConfig.from_file(Path(folder) / "config.json")
    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        enc = Encoder(cfg)
    load_encoder_weights(enc, cfg, Path(folder), dtype)
    return enc.eval()
