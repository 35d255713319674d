"""Host memory of long runs: what keeps a stream's resident set flat.

Two things made ``minilm encode --input --output`` grow with the rows it streamed, although
no Python object stayed alive:

- glibc keeps freed blocks in its heaps, and per-batch buffers of ever-different sizes
  fragment them (:func:`release_freed_memory`);
- oneDNN, which runs the bfloat16 and int8 GEMMs on CPU, JIT-compiles one kernel per GEMM
  shape and keeps up to 1,024 of them in each of two caches (ideep's and oneDNN's own).
  The token count of a batch is part of the shape, so a stream fills both caches, at about
  0.5 MB a shape (:func:`bound_native_caches`).

This module imports nothing heavy: the CLI calls it before torch is loaded.
"""

from __future__ import annotations

import os

# Kernels kept per cache. Token counts rarely repeat between batches, so a big cache buys
# little: at 16, 60k bf16 lines ran at 698 lines/s against 708 with the defaults (2-core
# Zen 4), and peak RSS grew 10 MB from 30k to 60k rows instead of 98 MB.
NATIVE_CACHE_CAPACITY = 16
_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY",  # oneDNN's primitive cache
                    "LRU_CACHE_CAPACITY")  # ideep's cache of prepared computations, in torch


def bound_native_caches(capacity: int = NATIVE_CACHE_CAPACITY) -> dict[str, str]:
    """Cap oneDNN's per-shape kernel caches, unless the user already set them.

    Both libraries read these variables when they first build a kernel, so this works after
    ``import torch`` but not after the first bfloat16 or int8 matmul. It changes the process's
    environment, hence it is called only by processes minilm owns (the CLI and pool
    workers); library users who stream millions of texts in bf16 or int8 set the variables
    themselves (README, "Memory"). Returns the values in force.
    """
    for name in _CACHE_VARIABLES:
        os.environ.setdefault(name, str(capacity))
    return {name: os.environ[name] for name in _CACHE_VARIABLES}


def _load_malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows: their allocators differ)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory that was freed back to the OS.

    Each chunk allocates and frees tokenizer buffers and per-batch tensors of ever-different
    sizes. glibc keeps freed blocks in its heaps (one arena per thread that allocated) for
    reuse, and the mix of sizes fragments them, so a long stream's RSS crept up by ~1.5 KB a
    row although nothing stayed alive (``malloc_trim(0)`` after a 190k-row run gave back half
    the process's memory). Trimming once per chunk costs milliseconds against seconds of work.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)
