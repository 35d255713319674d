"""Triton kernels for minilm, installed as ``minilm.kernels``.

Importing this package does not import Triton: each op lives in its own module and is
loaded on first use, so CPU-only users never pay for (or need) Triton.

Every op takes ``backend="auto" | "triton" | "torch"`` and has a plain-torch
``<op>_ref`` twin with the same signature.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "varlen_mean_pool": "pooling",
    "varlen_mean_pool_ref": "pooling",
    "masked_mean_pool": "pooling",
    "masked_mean_pool_ref": "pooling",
    "varlen_attention": "attention",
    "varlen_attention_ref": "attention",
    "add_layer_norm": "layernorm",
    "add_layer_norm_ref": "layernorm",
    "bias_gelu": "gelu",
    "bias_gelu_ref": "gelu",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
