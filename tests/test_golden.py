"""CPU float32 embeddings of the real all-MiniLM-L6-v2 reproduce, bit for bit, the ones saved by
tests/data/make_golden.py from the code before the engine refactor (its docstring names the
commit). The random-weight architectures are checked the same way in test_architectures.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import TEST_DATA, assert_golden


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", TEST_DATA / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()


@pytest.fixture(scope="module")
def golden():
    with np.load(make_golden.GOLDEN) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def embeddings(real_model_path, tmp_path_factory):
    if real_model_path.name.endswith("-fp16"):
        pytest.skip("the golden embeddings are of the float32 weights; this is the carried float16 copy")
    return make_golden.real_model_embeddings(real_model_path, tmp_path_factory.mktemp("golden"))


def test_golden_file_is_small_float32_and_covers_every_pooling_mode(golden):
    assert make_golden.GOLDEN.stat().st_size < 1 << 20
    assert all(a.dtype == np.float32 for a in golden.values())
    modes = {k.split("/")[1] for k in golden if k.startswith("real/")}
    assert {"mean", "mean_prompt", "mean_prompt_excluded", *make_golden.POOLING_MODES} <= modes


@pytest.mark.parametrize("key", ["mean", "mean_prompt", "mean_prompt_excluded", "mean_truncate64_normalize",
                                 "token_embeddings", *make_golden.POOLING_MODES])
def test_real_model_embeddings_are_bitwise_golden(golden, embeddings, key):
    got, want = embeddings["real/" + key], golden["real/" + key]
    assert want.dtype == np.float32
    assert_golden(got, want)


def test_golden_texts_exercise_truncation_and_edge_cases(ml_real):
    texts = make_golden.golden_texts()
    lengths = [len(ids) for ids in ml_real.tokenizer.encode(texts)]
    assert "" in texts and max(lengths) == ml_real.max_seq_length  # truncated at 256
    assert sum(n == ml_real.max_seq_length for n in lengths) >= 3
    assert min(lengths) == 2  # [CLS] [SEP]
