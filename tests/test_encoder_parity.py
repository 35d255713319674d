"""The hand-written encoder's last hidden state against transformers' BertModel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import save_random_bert
from minilm.varlen import make_varlen_batch
from minilm.weights import load_encoder

TEXTS = [
    "A man is playing a guitar.",
    "x",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up.",
    "Unicode: naïve café — 東京 🚀",
    "",
]


def _compare(folder: Path, texts: list[str], max_len: int) -> float:
    from tokenizers import Tokenizer
    from transformers import BertModel

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    ids = [e.ids for e in tok.encode_batch(texts)]

    ref = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    L = max(len(s) for s in ids)
    input_ids = torch.zeros(len(ids), L, dtype=torch.long)
    mask = torch.zeros(len(ids), L, dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.inference_mode():
        expected = ref(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        got = load_encoder(folder)(make_varlen_batch(ids))  # (total_tokens, H)
    expected = expected[mask.bool()]
    assert got.shape == expected.shape
    return (got - expected).abs().max().item()


@pytest.mark.parametrize(
    "config",
    [
        dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, max_position_embeddings=64),
        dict(hidden_size=96, num_attention_heads=3, num_hidden_layers=3, intermediate_size=200, max_position_embeddings=40),
        dict(hidden_size=128, num_attention_heads=8, num_hidden_layers=1, intermediate_size=512, max_position_embeddings=512),
        dict(hidden_size=48, num_attention_heads=1, num_hidden_layers=2, intermediate_size=96, max_position_embeddings=128,
             type_vocab_size=1, layer_norm_eps=1e-5),
    ],
    ids=["h64-4heads", "h96-3heads-pos40", "h128-8heads-pos512", "h48-1head-eps1e-5"],
)
def test_random_bert_hidden_states_match_transformers(tmp_path, real_model_path, scifact_texts, config):
    folder = save_random_bert(tmp_path / "bert", real_model_path, **config)
    texts = TEXTS + scifact_texts[:3]  # the abstracts overflow every position table: truncation is hit
    err = _compare(folder, texts, max_len=config["max_position_embeddings"])
    assert err <= 1e-5, err


def test_real_minilm_hidden_states_match_transformers(real_model_path, sts_sentences, scifact_texts):
    err = _compare(real_model_path, TEXTS + sts_sentences[:24] + scifact_texts[:4], max_len=256)
    assert err <= 1e-5, err
