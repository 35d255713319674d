"""Hostile strings against sentence-transformers (issue 14): full Unicode and its odd corners,
huge and degenerate texts, special-token literals. minilm must match the real model to
rounding, produce no NaN, fail exactly where sentence-transformers fails, and give every text
the same bits whatever batch it shares and wherever it sits in the input.

Hypothesis draws lists of strings and each list is embedded in one call per engine, so a few
hundred strings cost a few dozen model calls. ``derandomize=True`` makes CI reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MIN_COSINE = 0.99999

# Single grapheme clusters and marks where tokenizers and normalizers have edge cases.
EMOJI_ZWJ = ["\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F3F3\uFE0F\u200D\U0001F308",
             "\U0001F469\U0001F3FD\u200D\U0001F4BB", "\U0001F9D1\u200D\U0001F91D\u200D\U0001F9D1",
             "\u2764\uFE0F\u200D\U0001F525", "\U0001F1FA\U0001F1F8"]
BIDI = ["\u200E", "\u200F", "\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2066", "\u2067", "\u2068",
        "\u2069", "\u061C", "שלום", "مرحبا بالعالم"]
ZERO_WIDTH = ["\u200B", "\u200C", "\u200D", "\u2060", "\uFEFF", "\u00AD", "\u180E"]
COMBINING = ["\u0301", "\u0308", "\u0327", "\u20DD", "\u0489", "\u1AB0", "e\u0301", "Z\u0351\u0362\u0334"]
CONTROLS = [chr(c) for c in range(0x00, 0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[unused0]", "[pad]", "<s>", "</s>", "##", "[", "]"]
# Characters the all-MiniLM-L6-v2 vocabulary lacks: each becomes [UNK].
UNKNOWN = ["\U00013000", "\u2C00", "\uA66E", "\U0001F9FF", "\U0001D400", "\u16A0"]
WORDS = ["the", "cat", "sat", "on", "a", "mat", "Straße", "naïve", "日本語", "текст", "3.14", "e-mail", "!!"]

pieces = st.one_of(
    st.sampled_from(EMOJI_ZWJ), st.sampled_from(BIDI), st.sampled_from(ZERO_WIDTH),
    st.sampled_from(COMBINING), st.sampled_from(CONTROLS), st.sampled_from(SPECIAL), st.sampled_from(WORDS),
    st.just(" "), st.just("\x00"),
)
mixed = st.lists(pieces, max_size=40).map("".join)
# Any code point but surrogates (those are not text; see test_inputs.py), in any category.
full_unicode = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
odd_categories = st.text(st.characters(categories=["Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Co", "Cn", "So"]),
                         max_size=40)
only_unknown = st.lists(st.sampled_from(UNKNOWN), min_size=1, max_size=30).map(" ".join)
special_literals = st.one_of(
    st.lists(st.sampled_from(SPECIAL + [" "]), min_size=1, max_size=60).map("".join),
    st.just("[CLS] [SEP] [MASK]"),
)
blank = st.sampled_from(["", " ", "\t\n", "\u3000", "\u00A0" * 5, "\x00"])
short = st.one_of(mixed, full_unicode, odd_categories, only_unknown, special_literals, blank)
# Texts truncated to max_seq_length by both engines: 10k+ characters from a repeated fragment
# (cheap to draw), or a special token repeated up to 300 times ("[PAD]" * 300).
long = st.one_of(
    st.builds(lambda frag: (frag * (10_000 // len(frag) + 2))[:12_000],
              st.one_of(mixed, full_unicode).filter(lambda s: len(s) > 0)),
    st.builds(lambda tok, n: tok * n, st.sampled_from(SPECIAL), st.integers(100, 300)),
)


@st.composite
def hostile_lists(draw) -> list[str]:
    """Up to 12 short hostile texts and, half the time, one long one among them: long texts
    cost 256 tokens each on both engines, so they are rationed to keep the test quick."""
    texts = draw(st.lists(short, min_size=1, max_size=12))
    if draw(st.booleans()):
        texts.insert(draw(st.integers(0, len(texts))), draw(long))
    return texts


def _run(fn):
    """(result, None) or (None, exception type): both engines must fail, or neither."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - compared across engines below
        return None, type(e)


@settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(texts=hostile_lists())
def test_hostile_strings_match_sentence_transformers(st_real, ml_real, texts):
    expected, st_error = _run(lambda: st_real.encode(texts, batch_size=32, convert_to_numpy=True))
    got, ml_error = _run(lambda: ml_real.encode(texts, batch_size=32))
    assert (st_error is None) == (ml_error is None), (st_error, ml_error, texts)
    if st_error is not None:
        return
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.isfinite(got).all()
    a, b = got.astype(np.float64), expected.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= MIN_COSINE, (float(cos.min()), texts[int(cos.argmin())][:200])

    # Order and batch invariance: the same bits in reversed order and batches of 7 ...
    np.testing.assert_array_equal(ml_real.encode(texts[::-1], batch_size=7), got[::-1], err_msg="reversed, 7")
    # ... in batches of 1 ...
    np.testing.assert_array_equal(ml_real.encode(texts[:3], batch_size=1), got[:3], err_msg="batch_size=1")
    # ... and alone in a call.
    for i, t in enumerate(texts[:2]):
        np.testing.assert_array_equal(ml_real.encode(t), got[i], err_msg=f"single call, text {i}")
