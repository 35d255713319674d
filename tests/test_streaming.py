"""Streaming in Python: encode_iter over generators, a chunk at a time. The command-line side
(`minilm encode --input --output`, flat memory, resume) is in test_cli.py."""

from __future__ import annotations

import numpy as np
import pytest


def test_encode_iter_and_generators(ml_real, sentences):
    texts = sentences[:300]
    ref = ml_real.encode(texts)
    chunks = list(ml_real.encode_iter(iter(texts), chunk_size=128))
    assert [c.shape for c in chunks] == [(128, 384), (128, 384), (44, 384)]
    np.testing.assert_array_equal(np.concatenate(chunks), ref)
    np.testing.assert_array_equal(ml_real.encode(t for t in texts), ref)
    assert list(ml_real.encode_iter([])) == []
    with pytest.raises(TypeError, match="iterable of str"):
        ml_real.encode_iter("not a list")
    with pytest.raises(TypeError, match="item 2 is int"):
        list(ml_real.encode_iter(["a", "b", 3]))
    with pytest.raises(ValueError, match="chunk_size"):
        ml_real.encode_iter(texts, chunk_size=0)


