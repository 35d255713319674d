"""Tokenization (minilm/tokenizer.py) against transformers' AutoTokenizer on the same folder."""

from __future__ import annotations

import json
import shutil

import pytest

from minilm.tokenizer import TextTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def hf_tokenizer(real_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_model_path))


EDGE = ["", " ", "a", "  several   spaces\tand a\nnewline  ", "Unicode: naïve café — 東京 🚀", "[CLS] [SEP] [MASK]",
        "UPPER lower MiXeD", "don't, won't; can't!"]


@pytest.mark.parametrize("max_length", [256, 16, 3])
def test_ids_match_transformers(real_model_path, hf_tokenizer, sentences, paragraphs, max_length):
    texts = sentences + paragraphs + EDGE
    ours = TextTokenizer(load_tokenizer(real_model_path), max_length).encode(texts)
    ref = hf_tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert ours == ref
    assert max(map(len, ours)) == max_length  # truncation is exercised, special tokens included


def test_vocab_txt_fallback_matches_transformers_wordpiece(real_model_path, hf_tokenizer, tmp_path, sentences):
    """A BERT folder with vocab.txt and no tokenizer.json tokenizes like transformers' BertTokenizer."""
    from transformers import BertTokenizer

    folder = tmp_path / "vocab_only"
    folder.mkdir()
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(real_model_path / f, folder / f)
    texts = sentences[:100] + EDGE
    ours = TextTokenizer(load_tokenizer(folder), 128).encode(texts)
    assert ours == BertTokenizer(str(folder / "vocab.txt"))(texts, truncation=True, max_length=128)["input_ids"]
    assert ours == hf_tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    with pytest.raises(FileNotFoundError, match="No tokenizer"):
        load_tokenizer(folder, vocab_txt_fallback=False)


def test_padding_and_truncation_baked_into_tokenizer_json_are_ignored(real_model_path, tmp_path, paragraphs):
    folder = tmp_path / "baked"
    folder.mkdir()
    raw = json.loads((real_model_path / "tokenizer.json").read_text(encoding="utf-8"))
    raw["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    raw["padding"] = {"strategy": {"Fixed": 300}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                      "pad_type_id": 0, "pad_token": "[PAD]"}
    (folder / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    base = load_tokenizer(folder)
    assert base.truncation is None and base.padding is None
    assert len(base.encode(paragraphs[0]).ids) > 64
    ours = TextTokenizer(base, 64).encode(["a b", paragraphs[0]])
    assert [len(x) for x in ours] == [4, 64]


def test_prompt_length_matches_sentence_transformers(ml_real, st_real):
    tok = TextTokenizer(load_tokenizer(ml_real.model_path), 256)
    for prompt in ("query: ", "Represent this sentence for searching relevant passages: ", "x", "[SEP]"):
        # sentence-transformers reports it in the features of output_value=None.
        ref = st_real.encode("text", prompt=prompt, output_value=None)["prompt_length"]
        assert tok.prompt_length(prompt) == ref, prompt


def test_max_length_can_change_and_is_validated(real_model_path, paragraphs):
    tok = TextTokenizer(load_tokenizer(real_model_path), 256)
    assert len(tok.encode(paragraphs[-1:])[0]) == 256
    tok.max_length = 20
    assert tok.max_length == 20 and len(tok(paragraphs[-1:])[0]) == 20
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="max_seq_length must be a positive integer"):
            tok.max_length = bad
    assert tok.max_length == 20


def test_do_lower_case_adds_lowercasing_like_sentence_transformers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    cased = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "Hello": 2}, unk_token="[UNK]"))
    cased.pre_tokenizer = pre_tokenizers.Whitespace()
    cased.save(str(tmp_path / "tokenizer.json"))
    assert TextTokenizer(load_tokenizer(tmp_path), 8).encode(["Hello hello"]) == [[2, 1]]
    assert TextTokenizer(load_tokenizer(tmp_path, do_lower_case=True), 8).encode(["Hello hello"]) == [[1, 1]]
