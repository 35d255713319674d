"""Encoder configuration, read from a Hugging Face ``config.json``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .inputs import check_int

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "mpnet")

# RoBERTa-family checkpoints (fairseq lineage) number positions from pad_token_id + 1.
_ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")

# transformers' MPNet always buckets relative positions into 32 buckets (its
# compute_position_bias default), whatever relative_attention_num_buckets says, and numbers
# absolute positions from a hard-coded padding_idx of 1 rather than from pad_token_id.
MPNET_NUM_BUCKETS = 32
MPNET_PADDING_IDX = 1

# DistilBERT's config.json names -> ours.
_DISTILBERT_NAMES = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
}

# Activation names as they appear in config.json. "gelu" is BERT's exact erf GELU; the tanh
# approximation differs in the 4th decimal, which is far outside our parity budget.
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"
    # Position ids are `position_offset + index_in_sequence`. 0 for BERT, pad_token_id + 1 for
    # the RoBERTa family, 2 for MPNet.
    position_offset: int = 0
    # Rows of MPNet's shared relative position bias table; 0 for models without one.
    relative_attention_num_buckets: int = 0

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings"):
            check_int(f"config.json: {f}", getattr(self, f))
        if self.type_vocab_size < 0:
            raise ValueError(f"config.json: type_vocab_size must be >= 0, got {self.type_vocab_size!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"config.json: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"config.json: hidden_act={self.hidden_act!r} is not supported; expected one of {SUPPORTED_ACTIVATIONS}"
            )
        if self.relative_attention_num_buckets and self.relative_attention_num_buckets < MPNET_NUM_BUCKETS:
            raise ValueError(
                f"config.json: relative_attention_num_buckets={self.relative_attention_num_buckets} is below the "
                f"{MPNET_NUM_BUCKETS} buckets MPNet's relative position bias indexes"
            )
        if self.max_positions <= 0:
            raise ValueError(
                f"config.json: max_position_embeddings={self.max_position_embeddings} leaves no usable positions "
                f"after the offset {self.position_offset}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_positions(self) -> int:
        """How many tokens one sequence may hold (the position table minus its offset)."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config.json must hold a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"Unsupported model_type={model_type!r} in config.json; minilm supports {SUPPORTED_MODEL_TYPES}"
            )
        if d.get("auto_map"):
            raise ValueError(
                "config.json declares custom code (auto_map); minilm never runs code from a model folder"
            )
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(f"position_embedding_type={pet!r} is not supported (only 'absolute')")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError(f"decoder / cross-attention {model_type} configs are not sentence encoders; not supported")
        if model_type == "distilbert":
            kwargs = _distilbert_kwargs(d)
        else:
            names = {f.name for f in fields(cls)} - {"position_offset", "relative_attention_num_buckets"}
            kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["model_type"] = model_type
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ValueError(f"config.json is missing required keys: {missing}")
        if kwargs.get("pad_token_id") is None:
            # transformers' config defaults: BERT and DistilBERT pad with 0, the fairseq lineage with 1.
            kwargs["pad_token_id"] = 1 if model_type in _ROBERTA_FAMILY + ("mpnet",) else 0
        if model_type in _ROBERTA_FAMILY:
            kwargs["position_offset"] = check_int("config.json: pad_token_id", kwargs["pad_token_id"], 0) + 1
        elif model_type == "mpnet":
            kwargs["position_offset"] = MPNET_PADDING_IDX + 1
            kwargs["type_vocab_size"] = 0
            kwargs["relative_attention_num_buckets"] = d.get("relative_attention_num_buckets", MPNET_NUM_BUCKETS)
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> "EncoderConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No config.json at {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(d)


def _distilbert_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    """DistilBERT's config.json -> EncoderConfig keyword arguments."""
    missing = [k for k in ("vocab_size", *_DISTILBERT_NAMES) if k not in d and k != "activation"]
    if missing:
        raise ValueError(f"config.json (distilbert) is missing required keys: {missing}")
    kwargs = {ours: d[theirs] for theirs, ours in _DISTILBERT_NAMES.items() if theirs in d}
    for k in ("vocab_size", "max_position_embeddings", "pad_token_id"):
        if k in d:
            kwargs[k] = d[k]
    # No segment embeddings, and transformers hard-codes LayerNorm eps 1e-12 for DistilBERT.
    # sinusoidal_pos_embds needs nothing here: the sinusoidal table is stored as the
    # position embedding weight like any learned one.
    kwargs["type_vocab_size"] = 0
    kwargs["layer_norm_eps"] = 1e-12
    return kwargs
