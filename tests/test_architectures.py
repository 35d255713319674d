"""Every supported architecture (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, MPNet) against
transformers (last hidden state) and sentence-transformers (encode), on small random-weight
models with tokenizers of the model's own family trained offline on STS text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_scifact, read_sts, save_st_model, widen_weights
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


def _corpus(n: int = 1500) -> list[str]:
    return [s for _, a, b in read_sts("sts-train.tsv")[:n] for s in (a, b)]


def _train(model, pre_tokenizer, trainer, normalizer=None):
    from tokenizers import Tokenizer

    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
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


def _unigram_tokenizer(cls_name: str, specials: list[str], max_len: int):
    """A SentencePiece-style Unigram tokenizer with the given special tokens first."""
    import transformers
    from tokenizers import models, pre_tokenizers, trainers

    m = _train(models.Unigram(),
               pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]),
               trainers.UnigramTrainer(vocab_size=500, special_tokens=specials, unk_token="<unk>",
                                       show_progress=False))
    vocab = [tuple(v) for v in m["vocab"]] + [("<mask>", 0.0)]
    return getattr(transformers, cls_name)(vocab=vocab, model_max_length=max_len)


def _wordpiece_mpnet_tokenizer(max_len: int):
    """A lower-casing WordPiece tokenizer with MPNet's <s>/</s> specials (<pad>=1)."""
    from tokenizers import models, normalizers, pre_tokenizers, trainers
    from transformers import MPNetTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]
    m = _train(models.WordPiece(unk_token="[UNK]"), pre_tokenizers.BertPreTokenizer(),
               trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials, show_progress=False),
               normalizer=normalizers.BertNormalizer(lowercase=True))
    vocab = dict(m["vocab"])
    vocab["<mask>"] = len(vocab)
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
        from conftest import save_random_bert

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


@pytest.fixture(scope="module")
def texts():
    rows = read_sts("sts-dev.tsv")[:16]
    # The abstracts overflow every position table: truncation is hit.
    return [s for _, a, b in rows for s in (a, b)] + read_scifact(limit=3) + EDGE_TEXTS


def hidden_state_error(folder: Path, texts: list[str]) -> float:
    """Max abs error of our last hidden state against transformers' AutoModel on a padded
    batch (real tokens only), relative to the largest reference value when that exceeds 1."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    mask = enc["attention_mask"].bool()
    assert mask.shape[1] == tok.model_max_length  # truncation is exercised
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
    return (got - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def encode_error(folder: Path, texts: list[str], **encode_kwargs) -> float:
    """Max abs error of minilm's encode against sentence-transformers', relative to the largest output."""
    import minilm
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    ml = minilm.SentenceTransformer(str(folder), device="cpu")
    assert ml.max_seq_length == st.max_seq_length
    assert ml.get_sentence_embedding_dimension() == st.get_embedding_dimension()
    ref = st.encode(texts, batch_size=9, **encode_kwargs)
    ours = ml.encode(texts, batch_size=9, **encode_kwargs)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_match_transformers(hf_folders, texts, arch):
    err = hidden_state_error(hf_folders[arch], texts)
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
