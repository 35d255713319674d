"""Tokenization with the ``tokenizers`` library.

A ``tokenizers.Tokenizer`` must not be reconfigured while another thread encodes with it, so
the configured tokenizer is never mutated after construction: changing ``max_length`` builds
a new one and swaps the reference, and encoding threads keep the one they started with.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, normalizers

from .inputs import check_max_seq_length

logger = logging.getLogger(__name__)


def _has_lowercase(norm) -> bool:
    if norm is None:
        return False
    state = json.loads(norm.__getstate__()) if hasattr(norm, "__getstate__") else {}
    return _state_lowercases(state)


def _state_lowercases(state: dict) -> bool:
    t = state.get("type")
    if t == "Lowercase":
        return True
    if t == "BertNormalizer":
        return bool(state.get("lowercase"))
    if t == "Sequence":
        return any(_state_lowercases(s) for s in state.get("normalizers", []))
    return False


def load_tokenizer(folder: Path, do_lower_case: bool = False, vocab_txt_fallback: bool = True) -> Tokenizer:
    """The folder's ``tokenizer.json`` (or, when ``vocab_txt_fallback``, a BERT WordPiece
    tokenizer built from ``vocab.txt``), with any padding or truncation baked into the file removed."""
    tj = folder / "tokenizer.json"
    if tj.is_file():
        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as e:  # tokenizers raises a bare Exception for malformed files
            raise ValueError(f"{tj} could not be read by the tokenizers library: {e}") from e
    elif vocab_txt_fallback and (folder / "vocab.txt").is_file():
        tok = _wordpiece_from_vocab(folder)
    else:
        raise FileNotFoundError(
            f"No tokenizer in {folder}: expected tokenizer.json (a vocab.txt alone is read only for BERT and "
            "DistilBERT, whose [CLS]/[SEP] specials it implies)"
        )
    tok.no_padding()
    tok.no_truncation()
    if do_lower_case and not _has_lowercase(tok.normalizer):
        # sentence-transformers' do_lower_case prepends a Lowercase normalizer.
        parts = [normalizers.Lowercase()]
        if tok.normalizer is not None:
            parts.append(tok.normalizer)
        tok.normalizer = normalizers.Sequence(parts)
    return tok


def _wordpiece_from_vocab(folder: Path) -> Tokenizer:
    from tokenizers.implementations import BertWordPieceTokenizer

    cfg = {}
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        cfg = json.loads(tc.read_text(encoding="utf-8"))
    bw = BertWordPieceTokenizer(
        str(folder / "vocab.txt"),
        lowercase=bool(cfg.get("do_lower_case", True)),
        strip_accents=cfg.get("strip_accents"),
        handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
    )
    return bw._tokenizer


class TextTokenizer:
    """Texts -> token-id lists, truncated to ``max_length`` tokens (special tokens included)."""

    def __init__(self, base: Tokenizer, max_length: int):
        self._base = base
        self._tok = self._configured(max_length)
        self._max_length = max_length
        self._special_ids = self._find_special_ids()

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (truncation set, no padding)."""
        return self._tok

    def _configured(self, max_length: int) -> Tokenizer:
        check_max_seq_length(max_length)
        tok = Tokenizer.from_str(self._base.to_str())
        tok.no_padding()
        tok.enable_truncation(max_length, strategy="longest_first")
        return tok

    def _find_special_ids(self) -> frozenset[int]:
        added = self._base.get_added_tokens_decoder() if hasattr(self._base, "get_added_tokens_decoder") else {}
        return frozenset(i for i, t in added.items() if getattr(t, "special", False))

    @property
    def pad_id(self) -> int:
        """The padding token's id: the tokenizer's own padding setting, else its [PAD]/<pad>."""
        padding = self._base.padding
        if padding and "pad_id" in padding:
            return int(padding["pad_id"])
        for tok in ("[PAD]", "<pad>"):
            i = self._base.token_to_id(tok)
            if i is not None:
                return i
        return 0

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        tok = self._configured(value)
        self._tok, self._max_length = tok, value  # one reference swap: readers see old or new

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self._tok
        fast = getattr(tok, "encode_batch_fast", None)  # skips offsets, which we never use
        encs = fast(list(texts)) if fast is not None else tok.encode_batch(list(texts))
        return [e.ids for e in encs]

    def prompt_length(self, prompt: str) -> int:
        """Tokens the prompt contributes at the start of a sequence (sentence-transformers'
        rule: the prompt tokenized alone, minus a trailing special token)."""
        ids = self._tok.encode(prompt).ids
        n = len(ids)
        if n and ids[-1] in self._special_ids:
            n -= 1
        return n

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encode(texts)
