"""Pool faults that used to hang: a stopped worker (SIGSTOP, or stuck in a driver) and an
unfinished ``encode_iter(pool=...)`` generator holding the pool. (A killed worker is covered
in test_multiprocess.py.) Every wait here is bounded, so a regression fails instead of hanging."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import minilm
from minilm.multiprocess import MultiProcessPool


@pytest.fixture(scope="module")
def model(tiny_folder):
    return minilm.SentenceTransformer(str(tiny_folder), device="cpu")


TEXTS = [f"sentence {i} about the weather" for i in range(400)]


def _call_with_deadline(fn, seconds: float):
    """Run ``fn`` in a thread; returns ("ok", value) / ("raised", exc), or fails if it hangs."""
    box: list = []

    def target():
        try:
            box.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box.append(("raised", e))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    return box[0]


def test_unfinished_encode_iter_makes_other_calls_raise_not_hang(model):
    pool = model.start_multi_process_pool(["cpu", "cpu"])
    try:
        it = model.encode_iter(TEXTS, pool=pool, chunk_size=100)
        first = next(it)
        # Same thread: waiting would be a deadlock.
        kind, val = _call_with_deadline(lambda: model.encode(["x"], pool=pool), 60)
        assert kind == "raised" and isinstance(val, RuntimeError), val
        assert "busy with an unfinished encode_iter()" in str(val)
        # Another thread: it would wait for a generator nobody may ever resume.
        box: list = []
        t = threading.Thread(target=lambda: box.append(_call_with_deadline(lambda: model.encode(["x"], pool=pool),
                                                                           60)))
        t.start()
        t.join(90)
        assert box and box[0][0] == "raised" and "unfinished encode_iter" in str(box[0][1])
        # The generator itself is unharmed, and once it is done the pool serves others again.
        rest = list(it)
        np.testing.assert_array_equal(np.concatenate([first, *rest]), model.encode(TEXTS))
        kind, val = _call_with_deadline(lambda: model.encode(["x", "y"], pool=pool), 120)
        assert kind == "ok" and val.shape == (2, 32)
        # Closing an unfinished generator releases the pool too.
        it = model.encode_iter(TEXTS, pool=pool, chunk_size=100)
        next(it)
        it.close()
        kind, val = _call_with_deadline(lambda: model.encode(["x"], pool=pool), 120)
        assert kind == "ok", val
    finally:
        model.stop_multi_process_pool(pool)


def test_concurrent_plain_encodes_still_wait_for_each_other(model):
    pool = model.start_multi_process_pool(["cpu"])
    try:
        ref = model.encode(TEXTS[:50])
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(model.encode(TEXTS[:50], pool=pool, chunk_size=10)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == 3
        for r in results:
            np.testing.assert_array_equal(r, ref)
    finally:
        model.stop_multi_process_pool(pool)


def test_stopped_worker_times_out_and_pool_shuts_down(model):
    pool = model.start_multi_process_pool(["cpu", "cpu"], timeout=3)
    victim = pool["processes"][1]
    try:
        model.encode(TEXTS[:40], pool=pool, chunk_size=10)  # both workers have loaded the model
        os.kill(victim.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        kind, err = _call_with_deadline(lambda: model.encode(TEXTS, pool=pool, chunk_size=10), 90)
        elapsed = time.monotonic() - t0
        assert kind == "raised" and isinstance(err, RuntimeError), err
        assert f"worker 1 (pid {victim.pid}, device cpu) did not finish chunk" in str(err)
        assert "timeout of 3 s" in str(err) and "The pool has been shut down" in str(err)
        assert 3 <= elapsed < 30
        assert not any(p.is_alive() for p in pool["processes"])  # the stopped one included
        with pytest.raises(RuntimeError, match="broken"):
            model.encode(["a"], pool=pool)
    finally:
        if victim.is_alive():
            os.kill(victim.pid, signal.SIGCONT)
        model.stop_multi_process_pool(pool)
    # A new pool works.
    pool = model.start_multi_process_pool(["cpu"], timeout=60)
    try:
        np.testing.assert_array_equal(model.encode(TEXTS[:20], pool=pool), model.encode(TEXTS[:20]))
    finally:
        model.stop_multi_process_pool(pool)


def test_timeout_does_not_count_model_loading(model, monkeypatch):
    """A worker's first chunk waits for its model to load; only the chunk itself is timed."""
    pool = model.start_multi_process_pool(["cpu"], timeout=0.5)
    try:
        # The worker is still loading (spawn + torch import + model: seconds); must not fail.
        np.testing.assert_array_equal(model.encode(TEXTS[:8], pool=pool), model.encode(TEXTS[:8]))
    finally:
        model.stop_multi_process_pool(pool)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "10", True])
def test_timeout_must_be_positive_seconds(model, bad):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        MultiProcessPool(None, ["cpu"], timeout=bad)
