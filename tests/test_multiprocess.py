"""Multi-process encoding: start_multi_process_pool / encode(pool=...) / encode(device=[...])."""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing import resource_tracker

import numpy as np
import pytest
import torch

import minilm
from minilm.multiprocess import MultiProcessPool


def _children() -> set[int]:
    """Live child processes of this process (from /proc, so nothing is missed that multiprocessing
    does not track)."""
    # Spawning starts multiprocessing's resource tracker, a helper that lives as long as this
    # process does; start it up front so it is never counted as a worker left behind.
    resource_tracker.ensure_running()
    me = os.getpid()
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(d))
    return out


@pytest.fixture(scope="module")
def sts_reference(ml_real, sts_sentences):
    return ml_real.encode(sts_sentences, batch_size=32)


@pytest.fixture(scope="module")
def pool(ml_real):
    before = _children()
    p = ml_real.start_multi_process_pool(["cpu", "cpu"])
    yield p
    ml_real.stop_multi_process_pool(p)
    assert not any(proc.is_alive() for proc in p["processes"])
    assert _children() <= before


def test_pool_matches_single_process(ml_real, pool, sts_sentences, sts_reference):
    assert isinstance(pool, MultiProcessPool) and len(pool["processes"]) == 2
    # CPU workers split the cores rather than each taking all of them.
    assert pool.threads == max(1, minilm.multiprocess.available_cores() // 2)
    t0 = time.perf_counter()
    out = ml_real.encode(sts_sentences, pool=pool, batch_size=32)
    elapsed = time.perf_counter() - t0
    assert out.shape == sts_reference.shape and out.dtype == np.float32
    # Same order, same bits: the CPU path is batch invariant, so chunking across workers changes nothing.
    np.testing.assert_array_equal(out, sts_reference)
    print(f"pool encode of {len(sts_sentences)} sentences: {elapsed:.1f} s")

    # The other output forms, a single str, a chunk size and generators behave as in one process.
    few = sts_sentences[:37]
    t = ml_real.encode(few, pool=pool, convert_to_tensor=True, chunk_size=5)
    assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), sts_reference[:37])
    lst = ml_real.encode(few, pool=pool, convert_to_numpy=False, chunk_size=8)
    assert isinstance(lst, list) and len(lst) == 37
    np.testing.assert_array_equal(torch.stack(lst).numpy(), sts_reference[:37])
    np.testing.assert_array_equal(ml_real.encode(few[3], pool=pool), sts_reference[3])
    np.testing.assert_array_equal(ml_real.encode((s for s in few), pool=pool), sts_reference[:37])
    norm = ml_real.encode(few, pool=pool, normalize_embeddings=True, truncate_dim=64)
    np.testing.assert_array_equal(norm, ml_real.encode(few, normalize_embeddings=True, truncate_dim=64))
    tok = ml_real.encode(few[:4], pool=pool, output_value="token_embeddings")
    for a, b in zip(tok, ml_real.encode(few[:4], output_value="token_embeddings")):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ml_real.encode([], pool=pool).shape == (0,)

    # encode_iter over a generator, through the pool, in order.
    chunks = list(ml_real.encode_iter((s for s in sts_sentences[:500]), chunk_size=64, pool=pool))
    assert [len(c) for c in chunks] == [64] * 7 + [52]
    np.testing.assert_array_equal(np.concatenate(chunks), sts_reference[:500])


def test_pool_argument_errors_are_raised_in_the_caller(ml_real, pool):
    with pytest.raises(ValueError, match="truncate_dim=1000"):
        ml_real.encode(["a"], pool=pool, truncate_dim=1000)
    with pytest.raises(ValueError, match="chunk_size"):
        ml_real.encode(["a"], pool=pool, chunk_size=0)
    with pytest.raises(TypeError, match="start_multi_process_pool"):
        ml_real.encode(["a"], pool={"processes": []})
    with pytest.raises(ValueError, match="empty"):
        ml_real.start_multi_process_pool([])
    with pytest.raises(TypeError, match="list of devices"):
        ml_real.start_multi_process_pool("cpu")


def test_worker_exception_names_worker_and_cause_and_pool_survives(ml_real, pool, sts_reference, sts_sentences):
    from minilm.engine import EncodeRequest

    # A request the caller-side checks never let through, so only the worker can reject it.
    with pytest.raises(RuntimeError, match=r"worker \d \(pid \d+, device cpu\) failed on chunk 0.*ValueError"):
        list(pool.imap([["some text", "more text"]], EncodeRequest(precision="int3")))
    np.testing.assert_array_equal(ml_real.encode(sts_sentences[:10], pool=pool), sts_reference[:10])


def test_settings_changed_after_start_are_refused(real_model_path, pool):
    other = minilm.SentenceTransformer(str(real_model_path), device="cpu")
    other.max_seq_length = 16
    with pytest.raises(ValueError, match="max_seq_length: pool 256, model 16"):
        other.encode(["a"], pool=pool)


def test_killed_worker_raises_quickly_and_leaves_no_orphans(ml_real, sts_sentences):
    before = _children()
    p = ml_real.start_multi_process_pool(["cpu", "cpu"])
    ml_real.encode(sts_sentences[:8], pool=p)  # both workers loaded (or at least one; fine either way)
    victim = p["processes"][1]
    killed_at: list[float] = []

    def kill():
        time.sleep(1.0)
        killed_at.append(time.monotonic())
        os.kill(victim.pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    with pytest.raises(RuntimeError, match=r"worker 1 \(pid \d+, device cpu\) died unexpectedly \(killed by SIGKILL\)"):
        ml_real.encode(sts_sentences, pool=p, chunk_size=50)
    assert killed_at, "encode finished before the worker was killed"
    assert time.monotonic() - killed_at[0] < 10.0
    # The pool took itself down: no worker survives, and the pool refuses further work.
    assert not any(proc.is_alive() for proc in p["processes"])
    assert _children() <= before
    with pytest.raises(RuntimeError, match="broken"):
        ml_real.encode(["a"], pool=p)
    ml_real.stop_multi_process_pool(p)  # still safe


def test_worker_that_cannot_load_the_model_is_reported(ml_real, tmp_path):
    from minilm.engine import EngineSpec

    spec = ml_real.engine.spec(ml_real.model_path)
    bad = MultiProcessPool(EngineSpec(**{**spec.__dict__, "model_path": str(tmp_path / "missing")}), ["cpu"])
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker 0 .* could not load the model"):
        list(bad.imap([["a"]], {}))
    assert time.monotonic() - t0 < 60
    assert not bad["processes"][0].is_alive()
    bad.close()


def test_device_list_uses_a_temporary_pool(ml_real, sts_sentences, sts_reference):
    before = _children()
    out = ml_real.encode(sts_sentences[:64], device=["cpu", "cpu"])
    np.testing.assert_array_equal(out, sts_reference[:64])
    assert _children() <= before
