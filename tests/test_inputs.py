"""What encode/encode_iter accept, and what they refuse before any work (issue 14, items 1 and
8-11): containers whose iteration is not the texts, lone surrogates, chunk_size, devices."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

import minilm

TEXTS = ["a b", "c d", "e", "the quick brown fox"]


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    # Its own instance (the folder is shared): these tests try to break the model they use.
    return minilm.SentenceTransformer(str(tiny_folder), device="cpu")


@pytest.fixture(scope="module")
def reference(tiny):
    return tiny.encode(TEXTS)


# ------------------------------------------------------------------------- item 1: containers
@pytest.mark.parametrize("make", [
    lambda: list(TEXTS),
    lambda: tuple(TEXTS),
    lambda: (t for t in TEXTS),
    lambda: pd.Series(TEXTS),
    lambda: pd.Series(TEXTS, index=[10, 3, 7, 1]),  # tolist() follows positions, not labels
    lambda: pd.Series(TEXTS, dtype="string"),
    lambda: np.array(TEXTS),
    lambda: np.array(TEXTS, dtype=object),
], ids=["list", "tuple", "generator", "series", "series-index", "series-string", "ndarray-U", "ndarray-object"])
def test_accepted_containers_equal_the_list_result(tiny, reference, make):
    np.testing.assert_array_equal(tiny.encode(make()), reference)
    np.testing.assert_array_equal(np.concatenate(list(tiny.encode_iter(make(), chunk_size=3))), reference)


REFUSED = [
    (lambda: pd.DataFrame({"text": TEXTS}), r"DataFrame of shape \(4, 1\).*df\['text'\]"),
    (lambda: {"a": "b", "c": "d"}, "got dict"),
    (lambda: set(TEXTS), "got set, which has no order"),
    (lambda: frozenset(TEXTS), "got frozenset, which has no order"),
    (lambda: {"a": 1}.keys(), "got dict_keys, which has no order"),
    (lambda: b"bytes", "got bytes; decode it first"),
    (lambda: bytearray(b"x"), "got bytearray"),
    (lambda: None, "got None"),
    (lambda: 3, "got int"),
    (lambda: [["nested", "list"]], "item 0 is list"),
    (lambda: ["ok", None], "item 1 is NoneType"),
    (lambda: ["ok", b"x"], "item 1 is bytes"),
    (lambda: np.array([TEXTS, TEXTS]), r"ndarray of shape \(2, 4\)"),
    (lambda: np.array("one"), r"ndarray of shape \(\)"),
    (lambda: np.array([1.0, 2.0]), "item 0 is float"),
    (lambda: pd.Series([1, 2]), "item 0 is int"),
]


@pytest.mark.parametrize("make, match", REFUSED, ids=[m for _, m in REFUSED])
def test_refused_containers_raise_type_error_naming_the_type(tiny, make, match):
    with pytest.raises(TypeError, match=match):
        tiny.encode(make())
    with pytest.raises(TypeError, match=match):
        list(tiny.encode_iter(make()))
    # Refused before a pool would start, too (a device list starts one for the call).
    with pytest.raises(TypeError, match=match):
        tiny.encode(make(), device=["cpu"])


def test_encode_iter_refuses_a_single_str_and_reports_stream_indices(tiny):
    with pytest.raises(TypeError, match=r"got a single str; pass \[text\]"):
        tiny.encode_iter("one text")
    stream = iter(["a", "b", "c", "d", 5])
    with pytest.raises(TypeError, match="item 4 is int"):
        list(tiny.encode_iter(stream, chunk_size=2))


# ----------------------------------------------------------------------- item 8: chunk_size
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_chunk_size_is_refused_the_same_with_and_without_a_pool(tiny, bad):
    expected = f"chunk_size must be a positive integer, got {bad!r}"
    for call in (lambda: tiny.encode(TEXTS, chunk_size=bad),
                 lambda: tiny.encode(TEXTS, chunk_size=bad, device=["cpu"]),  # refused before the pool starts
                 lambda: tiny.encode_iter(TEXTS, chunk_size=bad)):
        with pytest.raises(ValueError, match=re.escape(expected)):
            call()


# --------------------------------------------------------------------- item 9: lone surrogates
def test_lone_surrogate_names_the_item(tiny):
    with pytest.raises(ValueError, match=r"item 1 is not valid Unicode: UTF-8 cannot encode it"):
        tiny.encode(["ok", "bad\ud800"])
    with pytest.raises(ValueError, match="item 0 is not valid Unicode"):
        tiny.encode("\udfff alone")
    # The index is the caller's, across encode's own chunks and encode_iter's.
    texts = ["fine text"] * 7 + ["tail \udc80 byte"] + ["fine"] * 3
    tiny.chunk_size = 3
    try:
        with pytest.raises(ValueError, match="item 7 is not valid Unicode"):
            tiny.encode(texts)
    finally:
        tiny.chunk_size = None
    with pytest.raises(ValueError, match="item 7 is not valid Unicode"):
        list(tiny.encode_iter(texts, chunk_size=2))
    # Valid non-ASCII text (astral plane, a surrogate *pair* written properly) is fine.
    assert tiny.encode(["ok", "emoji \U0001F600 and \u00e9"]).shape == (2, 32)


def test_lone_surrogate_through_a_pool_names_the_callers_index(tiny, reference):
    pool = tiny.start_multi_process_pool(["cpu"])
    try:
        texts = ["fine"] * 5 + ["bad\ud800"]
        with pytest.raises(ValueError, match="item 5 is not valid Unicode"):
            tiny.encode(texts, pool=pool, chunk_size=2)
        # A bad text is the caller's problem, not the pool's: it keeps working.
        np.testing.assert_array_equal(tiny.encode(TEXTS, pool=pool), reference)
    finally:
        tiny.stop_multi_process_pool(pool)


# -------------------------------------------------------------------------- items 10-11: devices
def test_meta_device_is_refused_and_the_model_stays_usable(tiny, tiny_folder, reference):
    with pytest.raises(ValueError, match="'meta' cannot hold data"):
        tiny.encode(TEXTS, device="meta")
    assert tiny.device.type == "cpu"
    np.testing.assert_array_equal(tiny.encode(TEXTS), reference)
    with pytest.raises(ValueError, match="cannot hold data"):
        tiny.encode(TEXTS, device=torch.device("meta"))
    np.testing.assert_array_equal(tiny.encode(TEXTS), reference)
    with pytest.raises(ValueError, match="'meta' cannot hold data"):
        minilm.SentenceTransformer(str(tiny_folder), device="meta")
    with pytest.raises(ValueError, match="'meta' cannot hold data"):
        tiny.start_multi_process_pool(["cpu", "meta"])


def test_cuda_without_cuda_says_so_and_what_is_available(tiny, tiny_folder, reference, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    want = (r"device 'cuda' requested but CUDA is not available \(.+\) on this machine \(torch .+\); "
            r"available: cpu")
    with pytest.raises(ValueError, match=want):
        minilm.SentenceTransformer(str(tiny_folder), device="cuda")
    with pytest.raises(ValueError, match=want):
        tiny.encode(TEXTS, device="cuda")
    with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
        tiny.encode(TEXTS, device=torch.device("cuda:1"))
    with pytest.raises(ValueError, match="CUDA is not available"):
        tiny.encode(TEXTS, device=["cuda:0", "cuda:1"])
    assert tiny.device.type == "cpu"
    np.testing.assert_array_equal(tiny.encode(TEXTS), reference)


def test_cuda_index_past_the_last_gpu(tiny, tiny_folder, monkeypatch):
    # Pretend to be a 2-GPU machine: the check must refuse cuda:7 before touching the device.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"'cuda:7' requested but there are only 2 CUDA devices .*"
                                         r"available: cpu, cuda:0, cuda:1"):
        tiny.encode(TEXTS, device="cuda:7")
    with pytest.raises(ValueError, match="'cuda:2' requested"):
        minilm.SentenceTransformer(str(tiny_folder), device="cuda:2")
    assert tiny.device.type == "cpu"


@pytest.mark.parametrize("bad, exc, match", [
    ("gpu", ValueError, r"Invalid device 'gpu'.*Available: cpu"),
    ("cuda:x", ValueError, "Invalid device 'cuda:x'"),
    (3, TypeError, "device must be a str or torch.device, got int"),
])
def test_unknown_device_strings(tiny, tiny_folder, bad, exc, match):
    with pytest.raises(exc, match=match):
        tiny.encode(TEXTS, device=bad)
    with pytest.raises(exc, match=match):
        minilm.SentenceTransformer(str(tiny_folder), device=bad)
