"""Several worker processes on one machine: ``start_multi_process_pool`` / ``encode(pool=...)``.

sentence-transformers 6.x semantics, with failures made loud:

* Workers are spawned (never forked: a forked CUDA or OpenMP runtime is unsafe) and load the
  model themselves from the parent's resolved local folder with the parent's settings, passed as
  a small picklable :class:`~minilm.engine.EngineSpec` rather than the module's weights.
  Each call's settings travel as a resolved :class:`~minilm.engine.EncodeRequest`, so
  workers run exactly the parent's ``encode``.
* Each worker has its own duplex pipe and at most one chunk in flight. The parent waits on the
  pipes and the process sentinels together, so a worker that dies (even by SIGKILL, even halfway
  through sending a result) is noticed at once instead of leaving the caller blocked on a shared
  queue whose lock or stream the dead process may have left in a broken state.
* A worker that raises reports the exception; the caller gets a ``RuntimeError`` that names the
  worker and the cause, and the pool stays usable. A worker that dies takes the pool down with
  it (the others are stopped), since the chunk it held is lost.
* CPU workers split the machine's cores instead of each using all of them.
* Pools are shut down at interpreter exit, and workers exit on their own when the parent
  disappears (their pipe reaches EOF), so no process outlives its parent.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from multiprocessing.connection import wait as mp_wait
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from .engine import EncodeRequest, EngineSpec
from .inputs import InvalidTextError, check_chunk_size, check_device_list
from .memory import bound_native_caches, release_freed_memory
from .outputs import empty_output

logger = logging.getLogger(__name__)

# How long stop_multi_process_pool waits for a worker to leave on its own before terminating it.
_GRACEFUL_EXIT_S = 2.0
# Chunks a pool may run ahead of the oldest unfinished one, per worker; bounds the reorder buffer.
_AHEAD_PER_WORKER = 4


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------- worker side
def _describe(exc: BaseException) -> tuple[Optional[BaseException], str, str]:
    """(the exception if it survives pickling, "Type: message", formatted traceback)."""
    try:
        pickle.loads(pickle.dumps(exc))
        kept: Optional[BaseException] = exc
    except Exception:
        kept = None
    return kept, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _to_cpu(obj: Any) -> Any:
    # Results travel by plain pickle: CUDA tensors must not be unpickled onto the parent's GPU.
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, list):
        return [_to_cpu(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _worker_main(index: int, spec: EngineSpec, device: str, threads: int, conn) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    bound_native_caches()  # a worker is minilm's own process, and it may stream for hours

    def send(msg: tuple) -> None:
        conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    try:
        engine = spec.build(device)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        send(("fatal", None, None, _describe(e)))
        conn.close()
        raise SystemExit(1)
    send(("ready", None, None, os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone: leave instead of lingering
            return
        if task is None:
            return
        job, chunk_id, texts, request = task
        try:
            msg = ("result", job, chunk_id, pickle.dumps(_to_cpu(engine.encode(texts, request)),
                                                         protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            logger.debug("worker %d failed on chunk %d", index, chunk_id, exc_info=True)
            msg = ("error", job, chunk_id, _describe(e))
        try:
            send(msg)
        except (BrokenPipeError, OSError):
            return
        del msg  # the pickled result is freed before trimming
        release_freed_memory()  # a worker streams chunks too: keep its RSS flat


# ---------------------------------------------------------------------------------- parent side
def _stop_processes(processes: list, conns: list, graceful: bool) -> None:
    """Stop workers: a polite ``None`` first when ``graceful``, then SIGTERM, then SIGKILL."""
    if graceful:
        for c in conns:
            try:
                c.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + _GRACEFUL_EXIT_S
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(2.0)
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


class MultiProcessPool(dict):
    """A pool of embedding workers, from ``SentenceTransformer.start_multi_process_pool``.

    A dict (``pool["processes"]``, ``pool["devices"]``) like sentence-transformers' pool, so code
    that inspects it keeps working. One ``encode`` runs on a pool at a time; concurrent calls
    wait for each other. An ``encode_iter`` generator holds the pool from its first chunk until
    it is exhausted or closed; any other use of the pool meanwhile raises at once rather than
    wait for a generator that may never be resumed.

    ``timeout``: seconds a worker may spend on one chunk (counted once it has loaded the
    model). A worker that overruns it (stopped, stuck in a driver) is treated like one that
    died: the pool is shut down and ``encode`` raises a ``RuntimeError`` naming it.
    """

    def __init__(self, spec: EngineSpec, devices: Sequence[str], timeout: Optional[float] = None):
        super().__init__()
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < math.inf):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        ctx = mp.get_context("spawn")
        cores = available_cores()
        n_cpu = sum(1 for d in devices if torch.device(d).type == "cpu")
        threads = max(1, cores // max(1, len(devices)))
        if n_cpu:
            threads = max(1, cores // n_cpu)
        self.spec = spec
        self.devices = list(devices)
        self.threads = threads
        self._conns: list = []
        self._processes: list = []
        self._busy: list[Optional[tuple[int, int]]] = []  # per worker: (job, chunk) in flight
        self._since: list[float] = []  # per worker: when its chunk in flight started counting
        self._ready: list[bool] = []  # per worker: model loaded
        self.timeout = timeout
        self._jobs = itertools.count(1)
        self._lock = threading.Lock()
        self._held_by: Optional[str] = None  # "encode_iter" while a generator holds the lock
        self._closed = False
        self.broken: Optional[str] = None
        try:
            for i, dev in enumerate(self.devices):
                parent_conn, child_conn = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker_main, args=(i, spec, dev, threads, child_conn),
                                name=f"minilm-worker-{i}", daemon=True)
                p.start()
                # Only the child keeps its end open, so its death reads as EOF here.
                child_conn.close()
                self._conns.append(parent_conn)
                self._processes.append(p)
                self._busy.append(None)
                self._since.append(0.0)
                self._ready.append(False)
        except BaseException:
            _stop_processes(self._processes, self._conns, graceful=False)
            raise
        self["processes"] = self._processes
        self["devices"] = self.devices
        # At interpreter exit or when the pool is garbage collected; holds no reference to self.
        self._finalizer = weakref.finalize(self, _stop_processes, self._processes, self._conns, False)
        logger.info("Started %d minilm workers on %s (%d threads each)", len(devices), self.devices, threads)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("broken" if self.broken else "running")
        return f"MultiProcessPool({self.devices}, {state}, pids={[p.pid for p in self._processes]})"

    def __hash__(self) -> int:  # dicts are unhashable; weakref.finalize does not need it, users might
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def describe_worker(self, i: int) -> str:
        p = self._processes[i]
        return f"worker {i} (pid {p.pid}, device {self.devices[i]})"

    def close(self) -> None:
        """Stop the workers; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _stop_processes(self._processes, self._conns, graceful=self.broken is None)

    def _fail(self, reason: str) -> RuntimeError:
        """The pool cannot be trusted any more: stop every worker and build the error to raise."""
        self.broken = reason
        self._closed = True
        self._finalizer.detach()
        _stop_processes(self._processes, self._conns, graceful=False)
        return RuntimeError(f"{reason}. The pool has been shut down; start a new one with "
                            "start_multi_process_pool() to continue.")

    def _death_reason(self, i: int) -> str:
        p = self._processes[i]
        p.join(0.5)
        code = p.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        busy = self._busy[i]
        held = f" while embedding chunk {busy[1]}" if busy is not None else ""
        return f"minilm multi-process {self.describe_worker(i)} died unexpectedly ({how}){held}"

    def _receive(self, timeout: Optional[float]) -> list[tuple[int, tuple]]:
        """Messages from whichever workers have one; raises (and shuts the pool down) on a death."""
        sentinels = {p.sentinel: i for i, p in enumerate(self._processes)}
        conns = {id(c): i for i, c in enumerate(self._conns)}
        ready = mp_wait(list(self._conns) + list(sentinels), timeout)
        out: list[tuple[int, tuple]] = []
        dead: list[int] = []
        for obj in ready:
            if not isinstance(obj, int):
                i = conns[id(obj)]
                try:
                    out.append((i, pickle.loads(obj.recv_bytes())))
                except (EOFError, OSError, pickle.UnpicklingError):
                    dead.append(i)  # died mid-message (or closed its end)
        for obj in ready:
            i = sentinels.get(obj) if isinstance(obj, int) else None
            if i is not None and i not in dead:
                # A worker may have sent a last message (a load failure) just before exiting.
                if self._conns[i].poll(0):
                    try:
                        out.append((i, pickle.loads(self._conns[i].recv_bytes())))
                    except (EOFError, OSError, pickle.UnpicklingError):
                        pass
                if not any(j == i and m[0] == "fatal" for j, m in out):
                    dead.append(i)
        for i, msg in out:
            if msg[0] == "fatal":
                _, summary, tb = msg[3]
                raise self._fail(f"minilm multi-process {self.describe_worker(i)} could not load the model: "
                                 f"{summary}\n{tb}") from msg[3][0]
        if dead:
            raise self._fail("; ".join(self._death_reason(i) for i in sorted(set(dead))))
        return out

    def _wait_s(self) -> float:
        """How long to wait for messages: at most until the first busy worker's deadline."""
        if self.timeout is None:
            return 1.0
        now = time.monotonic()
        left = [self._since[i] + self.timeout - now for i, b in enumerate(self._busy) if b is not None and self._ready[i]]
        return max(0.0, min([1.0] + left))

    def _check_timeouts(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        late = [i for i, b in enumerate(self._busy)
                if b is not None and self._ready[i] and now - self._since[i] > self.timeout]
        if late:
            raise self._fail("; ".join(
                f"minilm multi-process {self.describe_worker(i)} did not finish chunk {self._busy[i][1]} within "
                f"the pool's timeout of {self.timeout:g} s (stopped, stuck, or too slow for that limit)"
                for i in late))

    def imap(self, chunks: Iterable[list[str]], request: EncodeRequest, progress=None,
             holder: Optional[str] = None) -> Iterator[Any]:
        """Embed each chunk as ``request`` says on some worker; yields results in order.
        ``holder="encode_iter"`` marks a caller that may keep the pool between chunks."""
        if self._closed:
            raise RuntimeError(f"This pool is {'broken: ' + self.broken if self.broken else 'stopped'}; "
                               "start a new one with start_multi_process_pool()")
        # Wait for another encode() to finish, but never for a suspended encode_iter generator:
        # nothing guarantees it will be resumed, and in the same thread waiting is a deadlock.
        while not self._lock.acquire(timeout=0.05):
            if self._held_by is not None:
                raise RuntimeError(
                    f"This pool is busy with an unfinished {self._held_by}() (a generator that was neither "
                    "exhausted nor closed). Finish it, call its close() method, or start another pool for "
                    "this call.")
        try:
            self._held_by = holder
            yield from self._imap(iter(chunks), request, progress)
        finally:
            self._held_by = None
            self._lock.release()

    def _imap(self, chunks: Iterator[list[str]], request: EncodeRequest, progress) -> Iterator[Any]:
        job = next(self._jobs)
        n = len(self._processes)
        max_ahead = _AHEAD_PER_WORKER * n
        done: dict[int, Any] = {}
        sizes: dict[int, int] = {}
        next_id = 0      # next chunk to hand out
        next_yield = 0   # next chunk the caller gets
        exhausted = False
        try:
            while True:
                # Hand a chunk to every idle worker, staying within max_ahead of the caller.
                for i in range(n):
                    if exhausted or self._busy[i] is not None or next_id - next_yield >= max_ahead:
                        continue
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                        break
                    try:
                        self._conns[i].send((job, next_id, chunk, request))
                    except (BrokenPipeError, ConnectionResetError, EOFError):
                        raise self._fail(self._death_reason(i)) from None
                    self._busy[i] = (job, next_id)
                    self._since[i] = time.monotonic()
                    sizes[next_id] = len(chunk)
                    next_id += 1
                while next_yield in done:
                    result = done.pop(next_yield)
                    next_yield += 1
                    yield result
                if exhausted and next_yield == next_id:
                    return
                for i, msg in self._receive(timeout=self._wait_s()):
                    kind, mjob, chunk_id, payload = msg
                    if kind == "ready":
                        logger.debug("%s is ready", self.describe_worker(i))
                        self._ready[i] = True
                        self._since[i] = time.monotonic()  # loading the model is not the chunk's time
                        continue
                    self._busy[i] = None
                    if mjob != job:
                        continue  # left over from an earlier call that failed or stopped early
                    if kind == "error":
                        exc, summary, tb = payload
                        if isinstance(exc, InvalidTextError):  # the caller's index, not the chunk's
                            raise exc.shifted(_offset(sizes, chunk_id)) from None
                        err = RuntimeError(f"minilm multi-process {self.describe_worker(i)} failed on chunk "
                                           f"{chunk_id} (texts {_offset(sizes, chunk_id)}.."
                                           f"{_offset(sizes, chunk_id) + sizes[chunk_id] - 1}): "
                                           f"{summary}\n--- worker traceback ---\n{tb}")
                        raise err from exc
                    assert kind == "result", kind
                    done[chunk_id] = pickle.loads(payload)
                    if progress is not None:
                        progress.update(sizes[chunk_id])
                self._check_timeouts()
        except (GeneratorExit, RuntimeError, InvalidTextError):
            # Workers still busy with this job finish their chunk; the result is dropped on arrival.
            raise
        except BaseException:
            # Interrupted (Ctrl-C) perhaps halfway through reading a message: the pipes cannot be
            # trusted, so the workers go.
            if not self._closed:
                self._fail("interrupted")
            raise


def _offset(sizes: dict[int, int], chunk_id: int) -> int:
    return sum(sizes[c] for c in range(chunk_id))


# ------------------------------------------------------------------------------------- public API
def default_devices() -> list[str]:
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    # Enough workers to overlap tokenization and matrix work, few enough that each keeps a core.
    return ["cpu"] * min(4, available_cores())


def start_pool(spec: EngineSpec, target_devices: Optional[Sequence[str]] = None,
               timeout: Optional[float] = None) -> MultiProcessPool:
    devices = default_devices() if target_devices is None else check_device_list(target_devices)
    return MultiProcessPool(spec, devices, timeout=timeout)


def stop_pool(pool: Any) -> None:
    if not isinstance(pool, MultiProcessPool):
        raise TypeError(f"Expected a pool from start_multi_process_pool(), got {type(pool).__name__}")
    pool.close()


def check_pool(pool: Any, spec: EngineSpec) -> "MultiProcessPool":
    """``pool`` is a pool from start_multi_process_pool() for an engine like ``spec``."""
    if not isinstance(pool, MultiProcessPool):
        raise TypeError(f"pool must come from start_multi_process_pool(), got {type(pool).__name__}")
    diff = pool.spec.differences(spec)
    if diff:
        detail = ", ".join(f"{k}: pool {a!r}, model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"The pool was started for a model with other settings ({detail}); its results would "
                         "differ from this model's. Start a new pool after changing the model.")
    return pool


def concat(parts: list[Any]) -> Any:
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return [x for p in parts for x in p]


def encode_multi_process(spec: EngineSpec, texts: list[str], request: EncodeRequest, *,
                         pool: Optional[MultiProcessPool], devices: Any, chunk_size: Optional[int],
                         progress=None) -> Any:
    """``texts`` embedded as ``request`` says over a pool (or a temporary pool on ``devices``)
    of engines built from ``spec``; the same result as in one process. ``progress`` (a tqdm
    bar or None) advances as chunks come back."""
    check_chunk_size(chunk_size)
    if pool is not None:
        check_pool(pool, spec)
    else:
        devices = check_device_list(devices)
    if not texts:
        # The right empty answer for this request, without starting anything.
        return empty_output(request.convert_to_numpy, request.convert_to_tensor, torch.device("cpu"))
    own = pool is None
    if own:
        pool = start_pool(spec, devices)
    try:
        n_workers = len(pool.devices)
        if chunk_size is None:
            chunk_size = max(1, min(math.ceil(len(texts) / n_workers / 10), 5000))
        chunks = (texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size))
        parts = list(pool.imap(chunks, request, progress))
    finally:
        if own:
            pool.close()
    return concat(parts)
