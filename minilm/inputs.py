"""The checks on what callers hand to minilm: texts, counts and sizes, and devices.

They live in one module so that ``encode``, ``encode_iter``, the multi-process pools and the
command line accept and refuse exactly the same things, with the same messages. Every check
raises before any work starts (``TypeError`` for the wrong kind of object, ``ValueError`` for
a wrong value) and names what it got, never silently reinterpreting it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Set
from typing import Any, Iterator, Optional

import torch

_ACCEPTED = "a str, or an iterable of str such as a list, a 1-D numpy array or a pandas Series"


# ------------------------------------------------------------------------------------ numbers
def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int ``>= minimum`` (bools are refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def check_chunk_size(chunk_size: Any) -> Optional[int]:
    """``chunk_size`` (texts per chunk) if it is None (the default) or a positive int."""
    return None if chunk_size is None else check_int("chunk_size", chunk_size)


def check_max_seq_length(value: Any, max_positions: Optional[int] = None) -> int:
    """A positive token count that fits the model's ``max_positions`` (when given)."""
    check_int("max_seq_length", value)
    if max_positions is not None and value > max_positions:
        raise ValueError(f"max_seq_length={value} exceeds the model's {max_positions} positions")
    return value


# -------------------------------------------------------------------------------------- texts
def _container_error(what: str, obj: Any) -> TypeError:
    name = type(obj).__name__
    if obj is None:
        return TypeError(f"{what} expects {_ACCEPTED}, got None")
    if isinstance(obj, str):  # only streams refuse a str: its items would be its characters
        return TypeError(f"{what} expects an iterable of str, got a single str; pass [text]")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return TypeError(f"{what} expects str, got {name}; decode it first (e.g. b.decode('utf-8'))")
    if getattr(obj, "ndim", 1) != 1 and hasattr(obj, "shape"):
        hint = "; pass one column, e.g. df['text']" if hasattr(obj, "columns") else ""
        return TypeError(f"{what} expects {_ACCEPTED}; got a {name} of shape {tuple(obj.shape)} "
                         f"(a 1-D array is needed){hint}")
    if isinstance(obj, Set):
        return TypeError(f"{what} expects {_ACCEPTED}, got {name}, which has no order, so the rows could "
                         "not be matched to the texts; pass a list (e.g. sorted(texts))")
    if isinstance(obj, Mapping):
        return TypeError(f"{what} expects {_ACCEPTED}, got {name}; pass list(d.values()) or list(d)")
    return TypeError(f"{what} expects {_ACCEPTED}, got {name}")


def check_text_container(texts: Any, what: str = "encode()") -> None:
    """Refuse containers whose iteration would not give the texts meant, before reading any.

    Iterating a pandas DataFrame gives its column names, a dict its keys, a set an arbitrary
    order, bytes its integers and a 2-D array its rows: each would embed something, wrongly.
    A str is accepted by ``encode`` (one text) but not here, as a stream of characters.
    """
    if isinstance(texts, (str, bytes, bytearray, memoryview, Mapping, Set)) or texts is None \
            or not isinstance(texts, Iterable) or (hasattr(texts, "shape") and getattr(texts, "ndim", 1) != 1):
        raise _container_error(what, texts)


def check_items(texts: list, offset: int = 0, what: str = "encode()") -> list[str]:
    """``texts`` if every item is a str; ``offset`` is the index of ``texts[0]`` in the caller's input."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what} expects every input to be a str; item {offset + i} is "
                            f"{type(t).__name__}: {t!r:.60}")
    return texts


def check_texts(sentences: Any, what: str = "encode()") -> tuple[list[str], bool]:
    """``encode``'s input as a list of str, and whether it was a single str (a 1-D result)."""
    if isinstance(sentences, str):
        return [sentences], True
    check_text_container(sentences, what)
    # numpy arrays and pandas Series: tolist() gives plain str and is far quicker than iterating.
    texts = sentences.tolist() if hasattr(sentences, "shape") and hasattr(sentences, "tolist") else list(sentences)
    return check_items(texts, 0, what), False


class InvalidTextError(ValueError):
    """A text that cannot be tokenized: it holds a lone surrogate, which UTF-8 cannot encode
    (usually the trace of a byte string decoded with ``errors="surrogateescape"``, or of
    UTF-16 halves split apart). ``index`` is the text's position in the caller's input."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"item {index} is not valid Unicode: UTF-8 cannot encode it ({reason}); clean it, "
                         "e.g. text.encode('utf-8', 'replace').decode('utf-8')")
        self.index = index
        self.reason = reason

    def __reduce__(self):  # travels back from pool workers by pickle
        return type(self), (self.index, self.reason)

    def shifted(self, offset: int) -> "InvalidTextError":
        """The same error for a chunk that starts at ``offset`` in the caller's input."""
        return InvalidTextError(self.index + offset, self.reason)


def check_encodable(texts: list[str], offset: int = 0) -> None:
    """Raise :class:`InvalidTextError` for the first text UTF-8 cannot encode.

    Meant for after the tokenizer failed (it reports no index): checking every text up front
    would cost a copy of each on the hot path.
    """
    for i, t in enumerate(texts):
        if not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidTextError(offset + i, f"{e.reason} at character {e.start}: {t[e.start]!r}") from None


# ------------------------------------------------------------------------------------ devices
def available_devices() -> list[str]:
    """The devices this machine can run minilm on, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` this machine has; None picks CUDA when present, else CPU.

    Refuses before anything moves: a device type torch does not know, CUDA on a machine without
    it, a CUDA index past the last GPU, and ``meta`` (tensors without data, from which the model
    could never come back).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"Invalid device {str(device)!r}: it is not a device name ({e}); use cpu, cuda or "
                         f"cuda:N. Available: {', '.join(available_devices())}") from e
    if dev.type == "cpu":
        return dev
    where = f"on this machine (torch {torch.__version__}); available: {', '.join(available_devices())}"
    if dev.type == "meta":
        raise ValueError(f"device {str(device)!r} cannot hold data (meta tensors have shapes but no values), "
                         f"so the model could not compute or come back from it; available: "
                         f"{', '.join(available_devices())}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible to this process")
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available ({why}) {where}")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {str(device)!r} requested but there {'is' if n == 1 else 'are'} only {n} "
                             f"CUDA device{'' if n == 1 else 's'} {where}")
        return dev
    probes = [getattr(getattr(m, dev.type, None), "is_available", None) for m in (torch.backends, torch)]
    probe = next((p for p in probes if callable(p)), None)
    if probe is not None and not probe():
        raise ValueError(f"device {str(device)!r} requested but {dev.type} is not available {where}")
    return dev


def check_device_list(devices: Any) -> list[str]:
    """A pool's ``target_devices``: a non-empty list of devices this machine has, as strings."""
    if isinstance(devices, (str, torch.device)) or not isinstance(devices, (list, tuple)):
        raise TypeError(f"target_devices must be a list of devices such as ['cpu', 'cpu'] or "
                        f"['cuda:0', 'cuda:1'], got {devices!r}")
    if not devices:
        raise ValueError("target_devices is empty; give at least one device, e.g. ['cpu', 'cpu']")
    return [str(resolve_device(d)) for d in devices]


def iter_text_chunks(texts: Iterable[Any], size: int, what: str = "encode_iter()") -> Iterator[list[str]]:
    """Lists of at most ``size`` texts drawn lazily from ``texts``, each item checked to be a str.

    The container and ``size`` are checked now, the items as they are drawn."""
    check_text_container(texts, what)
    check_int("chunk_size", size)
    return _text_chunks(iter(texts), size, what)


def _text_chunks(it: Iterator[Any], size: int, what: str) -> Iterator[list[str]]:
    seen = 0
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield check_items(chunk, seen, what)
        seen += len(chunk)
