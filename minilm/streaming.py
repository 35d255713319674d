"""Embedding corpora larger than memory: ``encode_iter`` over any iterable of texts, and an
incremental ``.npy`` writer with a progress sidecar so an interrupted run can say how far it got
and resume."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .inputs import InvalidTextError
from .memory import release_freed_memory
from .multiprocess import check_pool

logger = logging.getLogger(__name__)

PROGRESS_SUFFIX = ".progress"


def encode_chunks(engine, chunks: Iterator[list[str]], request, *, pool=None, spec=None,
                  progress=None, owns_progress: bool = True) -> Iterator[Any]:
    """``engine.encode`` per chunk (or ``pool``'s workers, built from ``spec``), results yielded
    in order (see ``SentenceTransformer.encode_iter``). ``progress`` (a tqdm bar or None)
    moves per batch; the generator closes it when it ends if it ``owns_progress``."""
    try:
        if pool is None:
            done = 0
            for chunk in chunks:
                try:
                    out = engine.encode(chunk, request, progress)
                except InvalidTextError as e:  # the stream's index, not the chunk's
                    raise e.shifted(done) from None
                done += len(chunk)
                release_freed_memory()
                yield out
        else:
            yield from check_pool(pool, spec).imap(chunks, request, progress, holder="encode_iter")
    finally:
        if progress is not None and owns_progress:
            progress.close()


# ------------------------------------------------------------------------------ .npy output
def count_lines(path: Path) -> int:
    """Lines as ``for line in open(path, encoding="utf-8")`` sees them (the text reader's own
    newline rules), so the count matches the rows the encoding pass produces. Also checks the
    whole file is UTF-8 before any time goes into embedding it."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, _ in enumerate(f, 1):
            pass
    return n


class NpyRowWriter:
    """Writes a ``(rows, dim)`` ``.npy`` file a block of rows at a time.

    The file is created full-size by ``numpy.lib.format.open_memmap``; rows are then written
    with ``pwrite`` rather than through one mapping of the whole file, whose touched pages would
    count towards the process's resident memory and grow it with the corpus. After each block a
    ``<output>.progress`` JSON sidecar records how many rows are complete; it is removed when the
    file is finished, so its presence marks an incomplete output. ``progress`` holds extra
    fields for the sidecar that change with the rows (``write(block, **fields)`` updates them),
    such as a fingerprint of the input consumed so far.
    """

    def __init__(self, path: Path, rows: int, dim: int, dtype: Any, meta: dict, resume: bool = False,
                 progress: Optional[dict] = None):
        self.path = Path(path)
        self.sidecar = self.path.with_name(self.path.name + PROGRESS_SUFFIX)
        self.rows = rows
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.meta = meta
        self.progress = dict(progress or {})
        self.done = 0
        if resume:
            self.done = self._check_resumable()
            mm = np.load(self.path, mmap_mode="r")
            self.offset = mm.offset
            del mm
        else:
            mm = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=(rows, dim))
            self.offset = mm.offset
            del mm
            self._save_progress()
        self._fd = os.open(self.path, os.O_WRONLY)

    @staticmethod
    def read_progress(path: Path) -> Optional[dict]:
        side = Path(path).with_name(Path(path).name + PROGRESS_SUFFIX)
        if not side.is_file():
            return None
        return json.loads(side.read_text(encoding="utf-8"))

    def _check_resumable(self) -> int:
        state = self.read_progress(self.path)
        if state is None:
            raise FileNotFoundError(f"Cannot resume: {self.sidecar} does not exist (nothing to resume, or "
                                    f"{self.path} was already completed)")
        if not self.path.is_file():
            raise FileNotFoundError(f"Cannot resume: {self.path} does not exist although {self.sidecar} does")
        mm = np.load(self.path, mmap_mode="r")
        shape, dtype = mm.shape, mm.dtype
        del mm
        if shape != (self.rows, self.dim) or dtype != self.dtype:
            raise ValueError(f"Cannot resume: {self.path} holds {shape} {dtype}, this run makes "
                             f"{(self.rows, self.dim)} {self.dtype}")
        changed = {k: (state.get(k), v) for k, v in self.meta.items() if state.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"Cannot resume {self.path}: the run's settings changed ({detail})")
        done = state.get("rows_done")
        if not isinstance(done, int) or not 0 <= done <= self.rows:
            raise ValueError(f"{self.sidecar}: rows_done={done!r} is not in 0..{self.rows}")
        return done

    def _save_progress(self) -> None:
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps({**self.meta, **self.progress, "rows_done": self.done, "rows_total": self.rows}),
                       encoding="utf-8")
        os.replace(tmp, self.sidecar)  # atomic: a reader never sees a half-written sidecar

    def write(self, block: np.ndarray, **progress: Any) -> None:
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got shape {block.shape}")
        if block.dtype != self.dtype:
            raise ValueError(f"expected {self.dtype} rows, got {block.dtype}")
        if self.done + len(block) > self.rows:
            raise ValueError(f"{self.done} + {len(block)} rows would overflow the {self.rows} planned")
        buf = memoryview(np.ascontiguousarray(block)).cast("B")
        pos = self.offset + self.done * self.dim * self.dtype.itemsize
        while buf:
            n = os.pwrite(self._fd, buf, pos)
            buf, pos = buf[n:], pos + n
        # Rows are in the OS's hands before the sidecar claims them.
        self.done += len(block)
        self.progress.update(progress)
        self._save_progress()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.done == self.rows and self.sidecar.exists():
            self.sidecar.unlink()

    def __enter__(self) -> "NpyRowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
