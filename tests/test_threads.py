"""Many threads share one model while its settings change under them (issue 14): every call's
result must be bit-identical to a single-threaded call with the settings that call ran with,
and nothing may hang."""

from __future__ import annotations

import itertools
import random
import threading
import time

import numpy as np
import pytest

import minilm
from conftest import save_random_bert, save_st_model

MAX_SEQ_LENGTHS = (8, 16, 64)       # set on the model by another thread while calls run
MODEL_TRUNCATE_DIMS = (None, 24)    # likewise; a call passing truncate_dim=None uses it
CALL_TRUNCATE_DIMS = (None, 12, 32)  # passed per call
N_THREADS = 6
CALLS_PER_THREAD = 16
JOIN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def model(tmp_path_factory, real_model_path):
    hf = save_random_bert(tmp_path_factory.mktemp("hf"), real_model_path, hidden_size=32, num_attention_heads=2,
                          num_hidden_layers=2, intermediate_size=64)
    folder = save_st_model(tmp_path_factory.mktemp("st"), hf)
    return minilm.SentenceTransformer(str(folder), device="cpu")


def _slices() -> list[list[str]]:
    # 20-80 words each: longer than 8 and 16 tokens, and some longer than 64, so the setting a
    # call ran with shows in its rows.
    rng = random.Random(0)
    words = "the of and a to in is was for on that with as by at from his an were are which this".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 80))) for _ in range(24)]
    return [texts[i:i + 6] for i in range(0, len(texts), 6)]


def test_settings_change_under_concurrent_encode(model):
    slices = _slices()
    # reference[(slice, max_seq_length, effective truncate_dim, normalize)], single-threaded
    reference = {}
    for msl in MAX_SEQ_LENGTHS:
        model.max_seq_length = msl
        for s, texts in enumerate(slices):
            for td in (None, 12, 24, 32):
                for norm in (False, True):
                    reference[s, msl, td, norm] = model.encode(texts, truncate_dim=td, normalize_embeddings=norm)

    stop = threading.Event()
    failures: list[str] = []
    used_settings: set[tuple] = set()

    def mutate() -> None:
        for msl, td in zip(itertools.cycle(MAX_SEQ_LENGTHS), itertools.cycle(MODEL_TRUNCATE_DIMS)):
            if stop.is_set():
                return
            model.max_seq_length = msl
            model.truncate_dim = td
            time.sleep(0.0005)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(CALLS_PER_THREAD):
            s = rng.randrange(len(slices))
            td = rng.choice(CALL_TRUNCATE_DIMS)
            norm = rng.random() < 0.5
            try:
                got = model.encode(slices[s], truncate_dim=td, normalize_embeddings=norm, batch_size=rng.choice([1, 4, 32]))
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                failures.append(f"slice {s} td={td} norm={norm}: {type(e).__name__}: {e}")
                continue
            # The call's own settings are known; the model's were whatever the mutator had set.
            tds = [td] if td is not None else list(MODEL_TRUNCATE_DIMS)
            match = [(msl, t) for msl in MAX_SEQ_LENGTHS for t in tds
                     if np.array_equal(got, reference[s, msl, t, norm])]
            if len(match) != 1:
                failures.append(f"slice {s} td={td} norm={norm}: matches {match} of the single-threaded references")
            else:
                used_settings.add(match[0])

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(N_THREADS)]
    mutator = threading.Thread(target=mutate, daemon=True)
    try:
        mutator.start()
        for t in threads:
            t.start()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in threads if t.is_alive()]
    finally:
        stop.set()
        mutator.join(10)
        model.max_seq_length, model.truncate_dim = 64, None
    assert not hung, f"threads still running after {JOIN_TIMEOUT_S} s (deadlock?): {hung}"
    assert not mutator.is_alive()
    assert not failures, "\n".join(failures[:10])
    # The settings did change under load: calls ran with more than one of them.
    assert len({msl for msl, _ in used_settings}) > 1, used_settings
