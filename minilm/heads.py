"""The modules that follow pooling in a sentence-transformers pipeline: Dense and Normalize."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import read_checkpoint


def _activation(name: str | None) -> nn.Module:
    """``torch.nn`` activation from its dotted class name, e.g. ``torch.nn.modules.activation.Tanh``.

    Only classes that live in ``torch.nn`` are accepted: a model folder never makes us import
    arbitrary code.
    """
    if name is None:
        return nn.Tanh()  # sentence-transformers' Dense default
    if not isinstance(name, str) or not name.startswith("torch."):
        raise ValueError(f"Dense activation_function {name!r} is not a torch.nn class; refusing to import it")
    cls = getattr(nn, name.rsplit(".", 1)[-1], None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"Dense activation_function {name!r} is not a torch.nn.Module class")
    return cls()


class Dense(nn.Module):
    """sentence-transformers' Dense: ``activation(linear(x))`` (plus an optional residual)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: nn.Module,
                 use_residual: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation
        self.use_residual = use_residual
        if use_residual and in_features != out_features:
            # Named as in sentence-transformers, so its checkpoint key matches.
            self.residual = nn.Linear(in_features, out_features, bias=False)
        else:
            self.residual = None

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, out)
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out

    @classmethod
    def load(cls, folder: Path) -> "Dense":
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"Dense module folder {folder} has no config.json")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            in_f, out_f = int(cfg["in_features"]), int(cfg["out_features"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path} is not a valid Dense config: {e}") from e
        if cfg.get("module_input_name", "sentence_embedding") != "sentence_embedding":
            raise ValueError(f"{cfg_path}: Dense over {cfg['module_input_name']!r} is not supported "
                             "(only over the sentence embedding)")
        module = cls(in_f, out_f, bool(cfg.get("bias", True)), _activation(cfg.get("activation_function")),
                     bool(cfg.get("use_residual", False)))
        tensors = read_checkpoint(folder)
        expected = {k: v.shape for k, v in module.state_dict().items()}
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"Dense weights in {folder}: missing {missing}, unexpected {unexpected}")
        for k, shape in expected.items():
            if tuple(tensors[k].shape) != tuple(shape):
                raise ValueError(f"Dense weights in {folder}: {k} has shape {tuple(tensors[k].shape)}, "
                                 f"config implies {tuple(shape)} (in_features={in_f}, out_features={out_f})")
        module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        return module


class Normalize(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2, dim=1)


def load_head(kind: str, folder: Path) -> nn.Module:
    if kind == "Dense":
        return Dense.load(folder)
    if kind == "Normalize":
        return Normalize()
    if kind == "Dropout":
        return nn.Identity()  # inference: dropout does nothing
    raise AssertionError(kind)

