"""Post-processing of ``encode()`` results: ``output_value=None`` feature dicts, quantized
``precision`` and the numpy/tensor/list conversions, kept out of the batch loop."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .quantization import quantize_embeddings


def feature_dicts(
    ids: Sequence[Sequence[int]],
    token_embeddings: Sequence[Tensor],
    sentence_embeddings: Tensor,
    with_token_types: bool,
    prompt_length: Optional[int],
) -> list[dict[str, Any]]:
    """One dict per text with sentence-transformers' ``output_value=None`` keys.

    sentence-transformers pads every row to its batch's longest text, so its rows depend on
    which texts were batched together. Here each text gets exactly its own tokens: the tensors
    are ``(n_tokens,)`` / ``(n_tokens, H)``, ``attention_mask`` is all ones, and the values equal
    sentence-transformers' on those tokens.
    """
    out = []
    for i, toks in enumerate(token_embeddings):
        dev = toks.device
        input_ids = torch.tensor(ids[i], dtype=torch.int64, device=dev)
        d: dict[str, Any] = {"input_ids": input_ids}
        if with_token_types:
            d["token_type_ids"] = torch.zeros_like(input_ids)
        d["attention_mask"] = torch.ones_like(input_ids)
        d["modality"] = "text"
        if prompt_length is not None:
            d["prompt_length"] = prompt_length
        d["token_embeddings"] = toks
        d["sentence_embedding"] = sentence_embeddings[i]
        out.append(d)
    return out


def quantized_output(
    embeddings: Tensor | list[Tensor],
    precision: str,
    convert_to_numpy: bool,
    convert_to_tensor: bool,
):
    """``encode(precision=...)``: the whole result is quantized at once, so the int8/uint8
    ranges come from all the texts of the call (one text alone cannot calibrate).

    As in sentence-transformers, the codes are numpy; ``convert_to_tensor`` wraps them in one
    CPU tensor and ``convert_to_numpy=False`` in a list of CPU tensors. Token embeddings give a
    list of numpy matrices quantized with shared ranges.
    """
    q = quantize_embeddings(embeddings, precision)
    if isinstance(q, list):
        return q
    if convert_to_tensor:
        return torch.from_numpy(q)
    if convert_to_numpy:
        return q
    return list(torch.from_numpy(q).unbind(0))


def empty_output(convert_to_numpy: bool, convert_to_tensor: bool, device: torch.device):
    if convert_to_tensor:
        return torch.tensor([], device=device)
    return np.array([]) if convert_to_numpy else []


def format_output(request, sentence_out: Optional[Tensor], token_out: list[Tensor], ids: list[list[int]],
                  device: torch.device, with_token_types: bool) -> Any:
    """The result of one ``encode`` call (a list of texts) in the form ``request`` asks for.

    ``sentence_out`` is ``(N, D)`` (on the host when numpy was asked for), ``token_out`` the
    per-text ``(n_tokens, H)`` tensors, ``ids`` the per-text token ids (for feature dicts).
    """
    n = len(token_out) if sentence_out is None else sentence_out.shape[0]
    if n == 0:
        return empty_output(request.convert_to_numpy, request.convert_to_tensor, device)
    if request.output_value is None:
        return feature_dicts(ids, token_out, sentence_out, with_token_types, request.prompt_length)
    if request.precision not in (None, "float32"):
        return quantized_output(token_out if request.output_value == "token_embeddings" else sentence_out,
                                request.precision, request.convert_to_numpy, request.convert_to_tensor)
    if request.output_value == "token_embeddings":
        return token_out
    if request.convert_to_numpy:
        return (sentence_out.float() if sentence_out.dtype == torch.bfloat16 else sentence_out).numpy()
    if request.convert_to_tensor:
        return sentence_out
    return list(sentence_out.unbind(0))
