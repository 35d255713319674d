"""Every supported architecture (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, MPNet) against
transformers (last hidden state) and sentence-transformers (encode), on small random-weight
models with tokenizers of the model's own family built offline from our test text; BERT also
in several shapes and as the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (TEST_DATA, assert_golden, compare_encode, read_lines, save_random_bert, save_st_model,
                      widen_weights)
from minilm.config import SUPPORTED_MODEL_TYPES, EncoderConfig
from minilm.varlen import make_varlen_batch
from minilm.weights import load_encoder

ARCHS = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "mpnet")
# Usable positions per sequence; each family's position table holds them plus its offset.
MAX_LEN = 64
# MPNet gets longer sequences so relative distances reach the clamped buckets (>= 128).
MPNET_MAX_LEN = 160
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

EDGE_TEXTS = ["", "a", "  several   spaces\tand a\nnewline  ", "Unicode: naïve café — 東京 🚀",
              "<s> not special"]


def _corpus() -> list[str]:
    return read_lines("sentences.txt") + read_lines("paragraphs.txt")


def _train(model, pre_tokenizer, trainer):
    from tokenizers import Tokenizer

    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(_corpus(), trainer)
    return json.loads(tok.to_str())["model"]


def _bpe_tokenizer(max_len: int):
    """A byte-level BPE tokenizer, RoBERTa's layout: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4."""
    from tokenizers import models, pre_tokenizers, trainers
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    m = _train(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=False),
               trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    return RobertaTokenizer(vocab=m["vocab"], merges=merges, model_max_length=max_len)


def _word_counts(normalize=None) -> Counter:
    counts = Counter()
    for text in _corpus():
        counts.update(re.findall(r"\w+|[^\w\s]", normalize(text) if normalize else text))
    return counts


def _frequent_words_and_chars(counts: Counter, n: int) -> tuple[list[str], list[str]]:
    """The n most frequent words (ties by spelling) and every character of the text, sorted."""
    return sorted(counts, key=lambda w: (-counts[w], w))[:n], sorted({c for w in counts for c in w})


# The Unigram and WordPiece vocabularies are built from word counts rather than trained: those
# trainers do not give the same vocabulary twice, and the golden embeddings need the same ids.
def _unigram_tokenizer(cls_name: str, specials: list[str], max_len: int, size: int = 500):
    """A SentencePiece-style Unigram tokenizer with the given special tokens first: frequent words
    of our text as whole pieces and every character, scored by log frequency."""
    import transformers

    counts = _word_counts()
    total = sum(counts.values())
    words, chars = _frequent_words_and_chars(counts, size - len(specials) - 1)
    char_score = math.log(1 / total) - 2.0  # a word piece always beats spelling it out
    vocab = [(t, 0.0) for t in specials] + [("\u2581", char_score)] + [(c, char_score) for c in chars]
    vocab += [("\u2581" + w, math.log(counts[w] / total)) for w in words][: size - len(vocab)]
    return getattr(transformers, cls_name)(vocab=vocab + [("<mask>", 0.0)], model_max_length=max_len)


def _wordpiece_mpnet_tokenizer(max_len: int, size: int = 600):
    """A lower-casing WordPiece tokenizer with MPNet's <s>/</s> specials (<pad>=1): frequent
    words, every character and every continuation character."""
    from tokenizers import normalizers
    from transformers import MPNetTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]
    words, chars = _frequent_words_and_chars(
        _word_counts(normalizers.BertNormalizer(lowercase=True).normalize_str), size)
    pieces = specials + chars + ["##" + c for c in chars]
    pieces += [w for w in words if w not in pieces][: size - len(pieces)]
    vocab = {p: i for i, p in enumerate(pieces + ["<mask>"])}
    return MPNetTokenizer(vocab=vocab, model_max_length=max_len)


def _save_hf(folder: Path, model, tokenizer=None, seed: int = 0) -> Path:
    widen_weights(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def _set_model_max_length(folder: Path, n: int, **extra) -> None:
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc.update(model_max_length=n, **extra)
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))


def build_hf(arch: str, folder: Path, real_model_path: Path, seed: int = 0) -> Path:
    """A random-weight transformers model of ``arch`` with a tokenizer of its family, saved in HF format."""
    import transformers as tf

    torch.manual_seed(seed)
    if arch == "bert":
        save_random_bert(folder, real_model_path, seed, max_position_embeddings=MAX_LEN, **SMALL)
        _set_model_max_length(folder, MAX_LEN)
        return folder
    if arch == "roberta":
        tok = _bpe_tokenizer(MAX_LEN)
        cfg = tf.RobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, type_vocab_size=1,
                               max_position_embeddings=MAX_LEN + tok.pad_token_id + 1, **SMALL)
        return _save_hf(folder, tf.RobertaModel(cfg, add_pooling_layer=False).eval(), tok, seed)
    if arch == "xlm-roberta":
        tok = _unigram_tokenizer("XLMRobertaTokenizer", ["<s>", "<pad>", "</s>", "<unk>"], MAX_LEN)
        cfg = tf.XLMRobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, type_vocab_size=1,
                                  max_position_embeddings=MAX_LEN + tok.pad_token_id + 1, **SMALL)
        return _save_hf(folder, tf.XLMRobertaModel(cfg, add_pooling_layer=False).eval(), tok, seed)
    if arch == "camembert":
        # CamemBERT's NOTUSED placeholders, and <pad> moved to id 6 so that the position
        # offset (pad + 1 = 7) is neither BERT's 0 nor RoBERTa's 2.
        specials = ["<s>NOTUSED", "</s>NOTUSED", "<unk>NOTUSED", "<unk>", "<s>", "</s>", "<pad>"]
        tok = _unigram_tokenizer("CamembertTokenizer", specials, MAX_LEN)
        assert tok.pad_token_id == 6
        cfg = tf.CamembertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, type_vocab_size=1,
                                 max_position_embeddings=MAX_LEN + tok.pad_token_id + 1, **SMALL)
        return _save_hf(folder, tf.CamembertModel(cfg, add_pooling_layer=False).eval(), tok, seed)
    if arch == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=30522, dim=SMALL["hidden_size"], n_layers=SMALL["num_hidden_layers"],
                                  n_heads=SMALL["num_attention_heads"], hidden_dim=SMALL["intermediate_size"],
                                  max_position_embeddings=MAX_LEN, activation="gelu")
        _save_hf(folder, tf.DistilBertModel(cfg).eval(), None, seed)
        # The real all-MiniLM-L6-v2 WordPiece files, declared as a DistilBERT tokenizer.
        for f in ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "tokenizer_config.json"):
            if (real_model_path / f).is_file():
                shutil.copy(real_model_path / f, folder / f)
        _set_model_max_length(folder, MAX_LEN, tokenizer_class="DistilBertTokenizer")
        return folder
    if arch == "mpnet":
        tok = _wordpiece_mpnet_tokenizer(MPNET_MAX_LEN)
        # transformers' MPNet numbers positions from its hard-coded padding_idx 1 (+ 1).
        cfg = tf.MPNetConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, max_position_embeddings=MPNET_MAX_LEN + 2, **SMALL)
        return _save_hf(folder, tf.MPNetModel(cfg, add_pooling_layer=False).eval(), tok, seed)
    raise AssertionError(arch)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory, real_model_path):
    return {a: build_hf(a, tmp_path_factory.mktemp(a.replace("-", "_")), real_model_path) for a in ARCHS}


def arch_texts() -> list[str]:
    # The paragraphs overflow every position table: truncation is hit.
    return read_lines("sentences.txt")[:32] + read_lines("paragraphs.txt")[:3] + EDGE_TEXTS


@pytest.fixture(scope="module")
def texts():
    return arch_texts()


def hidden_state_error(folder: Path, texts: list[str], max_len: int | None = None, truncates: bool = True,
                       relative: bool = True) -> float:
    """Max abs error of our last hidden state against transformers' AutoModel on a padded
    batch (real tokens only), relative to the largest reference value when that exceeds 1
    (``relative``). Texts are cut at ``max_len`` (default: the tokenizer's model_max_length)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    max_len = max_len or tok.model_max_length
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    assert mask.shape[1] == max_len or not truncates  # truncation is exercised
    ref = AutoModel.from_pretrained(str(folder)).eval()
    cfg = EncoderConfig.from_file(folder / "config.json")
    ids = [row[m].tolist() for row, m in zip(enc["input_ids"], mask)]
    with torch.inference_mode():
        kwargs = {"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {}
        expected = ref(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs).last_hidden_state
        got = load_encoder(folder)(make_varlen_batch(ids, position_offset=cfg.position_offset,
                                              with_token_types=cfg.type_vocab_size > 0))
    expected = expected[mask]
    assert got.shape == expected.shape
    err = (got - expected).abs().max().item()
    return err / max(1.0, expected.abs().max().item()) if relative else err


def encode_error(folder: Path, texts: list[str], **encode_kwargs) -> float:
    """Max abs error of minilm's encode against sentence-transformers', relative to the largest output."""
    return compare_encode(folder, texts, batch_size=9, **encode_kwargs)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_match_transformers(hf_folders, texts, arch):
    err = hidden_state_error(hf_folders[arch], texts)
    assert err <= 1e-5, err


# BERT shapes: head counts and widths, short and long position tables, eps, one token type.
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
def test_bert_configs_hidden_states_match_transformers(tmp_path, real_model_path, texts, config):
    folder = save_random_bert(tmp_path / "bert", real_model_path, **config)
    n = config["max_position_embeddings"]
    err = hidden_state_error(folder, texts, max_len=n, truncates=n < 300, relative=False)
    assert err <= 1e-5, err


def test_real_minilm_hidden_states_match_transformers(real_model_path, texts, sentences, paragraphs):
    err = hidden_state_error(real_model_path, texts + sentences[32:56] + paragraphs[-2:], max_len=256, relative=False)
    assert err <= 1e-5, err


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_hf_folder_encode_matches_sentence_transformers(hf_folders, texts, arch):
    err = encode_error(hf_folders[arch], texts)  # no modules.json: mean pooling
    assert err <= 1e-5, err


@pytest.mark.parametrize("arch", ARCHS)
def test_st_folder_encode_matches_sentence_transformers(tmp_path, hf_folders, texts, arch):
    # Several pooling modes, Dense, Normalize, and a default prompt excluded from pooling,
    # whose length depends on the family's special tokens (</s> vs [SEP]).
    folder = save_st_model(tmp_path / "st", hf_folders[arch], pooling_mode=("cls", "max", "lasttoken", "weightedmean"),
                           include_prompt=False, dense=[(24, "Tanh")], normalize=True,
                           prompts={"query": "query: "}, default_prompt_name="query")
    err = encode_error(folder, texts)
    assert err <= 1e-5, err


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_is_bitwise_golden(hf_folders, texts, arch):
    """CPU float32 embeddings equal, bit for bit, those saved by tests/data/make_golden.py from
    the code before the engine refactor."""
    import minilm

    with np.load(TEST_DATA / "golden_cpu_fp32.npz") as golden:
        want = golden[f"arch/{arch}"]
    got = minilm.SentenceTransformer(str(hf_folders[arch]), device="cpu").encode(texts)
    assert_golden(got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_config_translation(hf_folders, arch):
    cfg = EncoderConfig.from_file(hf_folders[arch] / "config.json")
    raw = json.loads((hf_folders[arch] / "config.json").read_text())
    assert cfg.model_type == arch and cfg.hidden_size == SMALL["hidden_size"]
    assert cfg.max_positions == (MPNET_MAX_LEN if arch == "mpnet" else MAX_LEN)
    expected_offset = {"bert": 0, "distilbert": 0, "mpnet": 2}.get(arch, raw.get("pad_token_id", 0) + 1)
    assert cfg.position_offset == expected_offset
    assert cfg.type_vocab_size == {"bert": 2, "distilbert": 0, "mpnet": 0}.get(arch, 1)
    assert cfg.relative_attention_num_buckets == (32 if arch == "mpnet" else 0)


def test_unsupported_model_type_lists_supported(tmp_path, hf_folders):
    import minilm

    d = tmp_path / "m"
    shutil.copytree(hf_folders["roberta"], d)
    raw = json.loads((d / "config.json").read_text())
    raw["model_type"] = "deberta-v2"
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="Unsupported model_type='deberta-v2'") as e:
        minilm.SentenceTransformer(str(d), device="cpu")
    for t in SUPPORTED_MODEL_TYPES:
        assert repr(t) in str(e.value)
    assert set(ARCHS) == set(SUPPORTED_MODEL_TYPES)


def test_architecture_specific_config_errors():
    base = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    with pytest.raises(ValueError, match=r"distilbert.*missing required keys.*'dim'"):
        EncoderConfig.from_dict(dict(model_type="distilbert", vocab_size=100, n_layers=1, n_heads=4, hidden_dim=64))
    with pytest.raises(ValueError, match="relative_attention_num_buckets=16"):
        EncoderConfig.from_dict(dict(model_type="mpnet", relative_attention_num_buckets=16, **base))
    with pytest.raises(ValueError, match="leaves no usable positions"):
        EncoderConfig.from_dict(dict(model_type="roberta", pad_token_id=1, max_position_embeddings=2, **base))
    # transformers' RoBERTa default pad id is 1, so a config without one still offsets by 2.
    assert EncoderConfig.from_dict(dict(model_type="xlm-roberta", **base)).position_offset == 2


def test_vocab_txt_alone_is_bert_only(tmp_path, hf_folders):
    import minilm

    # MPNet's specials are <s>/</s>: a vocab.txt cannot say so, so its tokenizer.json is required.
    d = tmp_path / "m"
    shutil.copytree(hf_folders["mpnet"], d)
    (d / "tokenizer.json").unlink()
    (d / "vocab.txt").write_text("\n".join(["<s>", "<pad>", "</s>", "[UNK]"]))
    with pytest.raises(FileNotFoundError, match="vocab.txt alone is read only for BERT and DistilBERT"):
        minilm.SentenceTransformer(str(d), device="cpu")


def test_max_seq_length_without_model_max_length_stays_within_positions(tmp_path, hf_folders, texts):
    import minilm

    # sentence-transformers caps by max_position_embeddings (66 here) and then fails on long
    # inputs; minilm caps by the usable positions (66 - offset 2).
    d = tmp_path / "m"
    shutil.copytree(hf_folders["roberta"], d)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.pop("model_max_length")
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    ml = minilm.SentenceTransformer(str(d), device="cpu")
    assert ml.max_seq_length == MAX_LEN
    assert ml.encode(texts[-8:]).shape == (8, SMALL["hidden_size"])


@pytest.mark.parametrize("arch", ARCHS)
def test_triton_route_matches_for_every_architecture(hf_folders, texts, arch):
    """The CUDA route (Triton varlen attention with MPNet's bias, add+LayerNorm, pooling),
    run through the Triton interpreter on CPU tensors, against the CPU route."""
    import minilm

    try:
        from minilm.kernels._utils import interpreter_active
    except ImportError:
        pytest.skip("triton not installed")
    if not interpreter_active():
        pytest.skip("needs TRITON_INTERPRET=1 set before triton is imported")
    ml = minilm.SentenceTransformer(str(hf_folders[arch]), device="cpu")
    sample = texts[:6] + texts[-8:]
    ref = ml.encode(sample, batch_size=5)
    ml.engine.backend = "triton"
    try:
        got = ml.encode(sample, batch_size=5)
    finally:
        ml.engine.backend = None
    err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
    assert err <= 1e-5, err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_route_matches_cpu_for_every_architecture(hf_folders, texts, arch):
    import minilm

    cpu = minilm.SentenceTransformer(str(hf_folders[arch]), device="cpu").encode(texts, batch_size=5)
    gpu = minilm.SentenceTransformer(str(hf_folders[arch]), device="cuda", dtype=torch.float32)
    assert gpu.engine.backend == "triton"
    err = float(np.abs(gpu.encode(texts, batch_size=5) - cpu).max() / max(np.abs(cpu).max(), 1e-12))
    assert err <= 1e-4, err


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_layers_run_every_architecture(hf_folders, texts, arch):
    """quantize="int8" replaces each family's layers by fused int8 layers (MPNet's attention
    bias included); the hidden states stay close to the float encoder's, token by token."""
    from transformers import AutoTokenizer

    from minilm import int8

    if int8.gemm_backend() != "onednn":
        pytest.skip("this torch build has no oneDNN int8 linear")
    folder = hf_folders[arch]
    tok = AutoTokenizer.from_pretrained(str(folder))
    cfg = EncoderConfig.from_file(folder / "config.json")
    ids = [tok(t, truncation=True, max_length=tok.model_max_length)["input_ids"] for t in texts]
    batch = make_varlen_batch(ids, position_offset=cfg.position_offset, with_token_types=cfg.type_vocab_size > 0)
    encoder = load_encoder(folder)
    with torch.inference_mode():
        if encoder.position_bias is not None:  # random init leaves MPNet's bias too small to matter
            encoder.position_bias.table.weight.mul_(100)
        ref = encoder(batch)
        int8.quantize_encoder(encoder, [batch], scheme="static")
        assert all(isinstance(layer, int8.Int8Layer) for layer in encoder.layers)
        got = encoder(batch)
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    assert float(cos.min()) > 0.98, float(cos.min())
