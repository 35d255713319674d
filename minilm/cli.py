"""``minilm`` command line: ``minilm encode`` embeds texts with a sentence-transformers model;
``minilm search`` ranks the lines of a corpus file for queries.

Conventions: data (embeddings, hits) goes to stdout, everything meant for a person (summaries,
progress bars, errors) to stderr. Errors are one ``minilm CMD: error: ...`` line with exit
code 2, never a traceback. torch is imported only once there is work to do, so ``--help`` and
argument errors are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from .hub import DEFAULT_MODEL
from .memory import bound_native_caches

# A bar is shown by default when stderr is a terminal and there are at least this many texts.
PROGRESS_MIN_TEXTS = 1000


class CLIError(Exception):
    """A problem with the command's input or environment; printed as one line, exit code 2."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ------------------------------------------------------------------------------- reading input
def _first_bad_utf8(path: str) -> Optional[tuple[int, int, int]]:
    """(byte offset, line number, byte) of the first byte of ``path`` that is not UTF-8."""
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            data = carry + block
            if not data:
                return None
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as e:
                if block and e.reason == "unexpected end of data":
                    good = e.start  # a character cut by the block boundary: decode it with the next block
                else:
                    return offset + e.start, line + data.count(b"\n", 0, e.start), data[e.start]
            line += data.count(b"\n", 0, good)
            offset += good
            carry = data[good:]


def _not_utf8(name: str, path: str, e: UnicodeDecodeError) -> CLIError:
    where = _first_bad_utf8(path) if path != "-" else None
    if where is not None:
        offset, line, byte = where
        detail = f"byte 0x{byte:02x} at offset {offset} (line {line}) is not valid UTF-8"
    else:
        detail = f"{e.reason} (byte 0x{e.object[e.start]:02x})"
    return CLIError(f"{name} is not UTF-8 text: {detail}. minilm reads UTF-8 only; convert the file first "
                    f"(e.g. iconv -f LATIN1 -t UTF-8) or check that it is a text file")


def _open_text(path: str):
    if path == "-":
        # UTF-8 whatever the locale says, like a file.
        reconfigure = getattr(sys.stdin, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8", errors="strict")
        return contextlib.nullcontext(sys.stdin)
    return open(path, encoding="utf-8")


def _iter_lines(path: str) -> Iterator[str]:
    """Every line of ``path`` ('-': stdin) without its line ending, blank lines included."""
    try:
        with _open_text(path) as f:
            for line in f:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise _not_utf8("stdin" if path == "-" else path, path, e) from None


def _count_lines(path: str) -> int:
    from .streaming import count_lines

    try:
        return count_lines(Path(path))
    except UnicodeDecodeError as e:
        raise _not_utf8(path, path, e) from None


def _check_input_file(path: Optional[str]) -> None:
    if path in (None, "-"):
        return
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file {path} does not exist")
    if p.is_dir():
        raise CLIError(f"input {path} is a folder; give a text file with one text a line")


def _text_source(args: argparse.Namespace) -> tuple[Iterable[str], Optional[int]]:
    """The texts to embed, lazily, and their number when known without reading stdin:
    the arguments, then the lines of --input (or of stdin, when nothing else is given)."""
    if args.file is not None and args.file != "-":
        return itertools.chain(args.texts, _iter_lines(args.file)), len(args.texts) + _count_lines(args.file)
    if args.file == "-" or not args.texts:
        if args.file is None and sys.stdin.isatty():
            raise CLIError("no input; give texts as arguments, --input FILE, or pipe them on stdin")
        return itertools.chain(args.texts, _iter_lines("-")), None
    return list(args.texts), len(args.texts)


def _check_writable(out: Path, what: str) -> None:
    """Fail before any work if ``out`` (and files beside it, such as its .progress sidecar)
    cannot be written."""
    if out.is_dir():
        raise CLIError(f"{what} {out} is a folder; give a file name such as {out / 'emb.npy'}")
    folder = out.parent
    if not folder.is_dir():
        raise CLIError(f"cannot write {what} {out}: folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.", suffix=".check"):
            pass
    except OSError as e:
        raise CLIError(f"cannot write {what} {out}: cannot create files in {folder} ({e.strerror or e})") from None
    if out.exists() and not os.access(out, os.W_OK):
        raise CLIError(f"cannot write {what} {out}: it exists and is not writable")


# ------------------------------------------------------------------------------- model, device
def _check_device(device: Optional[str]) -> None:
    """Refuse a device this machine does not have, naming what it does have: the library's
    own check (``inputs.resolve_device``), as one CLI error line."""
    if device is None:
        return
    from .inputs import resolve_device

    try:
        resolve_device(device)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--device {device}: {e}") from None


def _load_model(args: argparse.Namespace):
    _check_device(args.device)
    from .sentence_transformer import SentenceTransformer

    try:
        model = SentenceTransformer(args.model, device=args.device, dtype=getattr(args, "dtype", None),
                                    local_files_only=args.offline,
                                    max_batch_tokens=getattr(args, "max_batch_tokens", None))
    except (ValueError, RuntimeError, AssertionError) as e:
        # torch's own device errors are long and multi-line; the first line says it.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CLIError(f"cannot load model {args.model!r} on device {args.device or 'auto'}: {first}") from None
    if args.max_seq_length is not None:
        model.max_seq_length = args.max_seq_length
    if getattr(args, "chunk_size", None) is not None:
        model.chunk_size = args.chunk_size
    return model


def _start_pool(args: argparse.Namespace, model):
    if getattr(args, "workers", None) is None:
        return None
    dev = str(model.device) if args.device is None else args.device
    return model.start_multi_process_pool([dev] * args.workers, timeout=args.timeout)


def _progress_bar(args: argparse.Namespace, total: Optional[int], initial: int = 0):
    """A bar counting texts, or None: ``--progress``/``--no-progress``, else shown for
    PROGRESS_MIN_TEXTS texts or more (or an unknown number) when stderr is a terminal."""
    show = args.progress
    if show is None:
        show = (total is None or total >= PROGRESS_MIN_TEXTS) and sys.stderr.isatty()
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="Embedding", unit=" texts", file=sys.stderr, dynamic_ncols=True)


def _blocks(model, texts: Iterable[str], args: argparse.Namespace, bar, pool) -> Iterator:
    """``(n, D)`` float32 arrays, in input order, a chunk at a time; the bar moves per batch."""
    import numpy as np

    # A pool balances better, and its bar moves more often, with chunks smaller than the default.
    chunk = args.chunk_size or (1000 if pool is not None else None)
    blocks = model.encode_iter(texts, chunk_size=chunk, pool=pool, batch_size=args.batch_size,
                               prompt_name=args.prompt_name, prompt=args.prompt,
                               normalize_embeddings=args.normalize, _progress=bar)
    # encode() returns float16 rows for a float16 model (as sentence-transformers does), and
    # float16 is the CUDA default; files and stdout always get float32, the same whichever
    # device or dtype made them, so a streamed file, its --resume and an in-memory run agree.
    return (np.asarray(b, dtype=np.float32) for b in blocks)


def _summary(model, n: int, shape: tuple, t_load: float, t_embed: float) -> None:
    rate = n / t_embed if t_embed > 0 and n else 0.0
    print(f"embedded {_plural(n, 'text')} -> {shape} float32 in {t_embed:.3f} s ({rate:.1f} texts/s; model load "
          f"{t_load:.2f} s); model {model.model_path}, device {model.device}, "
          f"dtype {str(model.dtype).replace('torch.', '')}", file=sys.stderr)


# ------------------------------------------------------------------------------------ encode
def _validate_encode(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Everything that can be checked before loading torch and the model."""
    for name in ("batch_size", "chunk_size", "workers", "max_batch_tokens", "max_seq_length"):
        v = getattr(args, name)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.timeout is not None and args.workers is None:
        parser.error("--timeout applies to --workers; add --workers N")
    if args.show < 0:
        parser.error(f"--show must be >= 0, got {args.show}")
    if args.format == "jsonl" and args.output is not None:
        parser.error("--format jsonl prints to stdout; it cannot be combined with --output")
    if args.resume and (args.file in (None, "-") or args.output in (None, "-")):
        parser.error("--resume needs --input FILE and --output FILE.npy")
    _check_input_file(args.file)
    if args.output not in (None, "-"):
        _check_writable(Path(args.output), "--output")


def _cmd_encode(args: argparse.Namespace) -> int:
    if args.output not in (None, "-") and args.file not in (None, "-"):
        return _encode_file_to_npy(args)
    texts, total = _text_source(args)
    if args.format == "jsonl":
        return _encode_jsonl(args, texts, total)
    return _encode_in_memory(args, texts)


def _encode_jsonl(args: argparse.Namespace, texts: Iterable[str], total: Optional[int]) -> int:
    """One JSON array per input line on stdout, written a chunk at a time."""
    import json

    t0 = time.perf_counter()
    model = _load_model(args)
    t1 = time.perf_counter()
    n = 0
    bar = _progress_bar(args, total)
    pool = _start_pool(args, model)
    try:
        for block in _blocks(model, texts, args, bar, pool):
            # float32 -> Python float is exact, and json writes the shortest repr that reads back to it.
            sys.stdout.write("".join(json.dumps(row) + "\n" for row in block.tolist()))
            n += len(block)
        sys.stdout.flush()
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            model.stop_multi_process_pool(pool)
    _summary(model, n, (n, model.get_sentence_embedding_dimension()), t1 - t0, time.perf_counter() - t1)
    return 0


def _encode_in_memory(args: argparse.Namespace, texts: Iterable[str]) -> int:
    """Texts from arguments or stdin: embed them all, then print a preview or write one .npy
    (``--output -``: to stdout)."""
    import numpy as np

    texts = list(texts)
    t0 = time.perf_counter()
    model = _load_model(args)
    t1 = time.perf_counter()
    bar = _progress_bar(args, len(texts))
    pool = _start_pool(args, model)
    try:
        parts = list(_blocks(model, texts, args, bar, pool))
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            model.stop_multi_process_pool(pool)
    t2 = time.perf_counter()
    dim = model.get_sentence_embedding_dimension()
    emb = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    if args.output == "-":
        np.save(sys.stdout.buffer, emb)
        sys.stdout.flush()
    elif args.output:
        np.save(args.output, emb)
        print(f"wrote {args.output} {emb.shape} {emb.dtype}", file=sys.stderr)
    else:
        for text, row in list(zip(texts, emb))[: args.show]:
            head = " ".join(f"{v:+.4f}" for v in row[:4])
            print(f"[{head} ...] |v|={float(np.linalg.norm(row)):.4f}  {text[:60]!r}")
        if len(texts) > args.show:
            print(f"... {len(texts) - args.show} more rows (--output FILE.npy or --format jsonl gives them all)",
                  file=sys.stderr)
    _summary(model, len(texts), emb.shape, t1 - t0, t2 - t1)
    return 0


class _ConsumedInput:
    """SHA-256 of the texts whose rows are written (arguments, then the input's lines), advanced
    with the rows, so that ``--resume`` can tell whether those lines are still what was embedded."""

    def __init__(self, texts: list[str], path: str):
        import hashlib

        self._lines = itertools.chain(texts, _iter_lines(path))
        self._hash = hashlib.sha256()

    def advance(self, n: int) -> str:
        for t in itertools.islice(self._lines, n):
            self._hash.update(t.encode("utf-8", "surrogatepass") + b"\n")
        return self._hash.hexdigest()


def _encode_file_to_npy(args: argparse.Namespace) -> int:
    """--input FILE --output OUT.npy: rows are read, embedded and written a chunk at a time, so
    neither the texts nor the embeddings of the whole corpus are ever in memory."""
    from .streaming import PROGRESS_SUFFIX, NpyRowWriter

    src, out = args.file, Path(args.output)
    state = None
    if args.resume:
        state = NpyRowWriter.read_progress(out)
        if state is None:
            raise CLIError(f"--resume: {out}{PROGRESS_SUFFIX} not found; nothing to resume (the run finished, "
                           "or never started)")
    total = len(args.texts) + _count_lines(src)  # also checks the whole file is UTF-8
    t0 = time.perf_counter()
    model = _load_model(args)
    t1 = time.perf_counter()
    meta = {"input": str(Path(src).resolve()), "input_bytes": Path(src).stat().st_size, "arguments": len(args.texts),
            "model": str(model.model_path), "dtype": str(model.dtype), "max_seq_length": model.max_seq_length,
            "prompt": args.prompt, "prompt_name": args.prompt_name, "normalize": args.normalize}
    dim = model.get_sentence_embedding_dimension()
    consumed = _ConsumedInput(list(args.texts), src)
    if args.resume:
        writer = NpyRowWriter(out, total, dim, "float32", meta, resume=True)  # checks shape and settings
        digest = consumed.advance(writer.done)
        if state.get("consumed_sha256") != digest:
            writer.close()
            raise CLIError(f"cannot resume {out}: the first {writer.done} lines of {src} are not the ones that were "
                           f"embedded (their SHA-256 differs from the one in {writer.sidecar.name}); the input was "
                           "edited. Run again without --resume to start over")
    else:
        writer = NpyRowWriter(out, total, dim, "float32", meta, progress={"consumed_sha256": consumed.advance(0)})
    skip = writer.done
    rows = itertools.islice(itertools.chain(args.texts, _iter_lines(src)), skip, None)
    bar = _progress_bar(args, total, initial=skip)
    pool = None
    try:
        pool = _start_pool(args, model)
        for block in _blocks(model, rows, args, bar, pool):
            writer.write(block, consumed_sha256=consumed.advance(len(block)))
    except BaseException as e:
        if bar is not None:
            bar.close()  # so that the message starts on a line of its own
            bar = None
        how = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        msg = f"minilm encode: {how}: wrote {writer.done} of {total} rows to {out}"
        if writer.sidecar.exists():
            msg += f"; {writer.sidecar.name} records this, and the same command with --resume continues from it"
        print(msg, file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            return 130
        raise
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        if pool is not None:
            model.stop_multi_process_pool(pool)
    t2 = time.perf_counter()
    assert writer.done == total, (writer.done, total)
    print(f"wrote {out} ({total}, {writer.dim}) {writer.dtype}", file=sys.stderr)
    _summary(model, total - skip, (total, writer.dim), t1 - t0, t2 - t1)
    return 0


# ------------------------------------------------------------------------------------ search
def _corpus_fingerprint(model, texts: list[str]) -> dict:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return {"texts_sha256": h.hexdigest(), "n": len(texts), "model": str(model.model_path),
            "max_seq_length": model.max_seq_length, "dim": model.get_sentence_embedding_dimension()}


def _corpus_embeddings(model, texts: list[str], args: argparse.Namespace):
    """Embed the corpus, or reuse ``--save-corpus`` when its fingerprint (texts, model, max length)
    still matches, so that a stale cache is never searched."""
    import json

    import numpy as np

    cache = Path(args.save_corpus) if args.save_corpus else None
    meta_path = cache.with_name(cache.name + ".json") if cache else None
    fp = _corpus_fingerprint(model, texts)
    if cache is not None and cache.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if meta == fp:
            emb = np.load(cache)
            if emb.shape == (len(texts), fp["dim"]):
                print(f"loaded corpus embeddings from {cache}", file=sys.stderr)
                return emb
        print(f"{cache} does not match this corpus and model; re-embedding", file=sys.stderr)
    bar = _progress_bar(args, len(texts))
    try:
        emb = model.encode_document(texts, batch_size=args.batch_size, show_progress_bar=False, _progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if cache is not None:
        np.save(cache, emb)
        meta_path.write_text(json.dumps(fp, indent=1), encoding="utf-8")
        print(f"wrote {cache} {emb.shape} {emb.dtype}", file=sys.stderr)
    return emb


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    if args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.corpus == "-" and args.queries == "-":
        raise CLIError("the corpus and the queries cannot both come from stdin")
    _check_input_file(args.corpus)
    _check_input_file(args.queries)
    if args.save_corpus:
        _check_writable(Path(args.save_corpus), "--save-corpus")
    # Blank lines: every line is a row (row i is line i + 1, as with `encode`), but a blank
    # line is never a hit, and a blank query line is not a query.
    lines = list(_iter_lines(args.corpus))
    if args.queries is not None:
        queries = list(args.query) + [q for q in _iter_lines(args.queries) if q.strip()]
    elif args.query:
        queries = list(args.query)
    elif args.corpus != "-" and not sys.stdin.isatty():
        queries = [q for q in _iter_lines("-") if q.strip()]
        if not queries:
            raise CLIError("no queries: stdin is not a terminal but gave no non-blank lines; give queries as "
                           "arguments, --queries FILE, or pipe them on stdin")
    else:
        raise CLIError("no queries; give them as arguments, --queries FILE, or pipe them on stdin")
    if not queries:
        raise CLIError(f"no queries: {args.queries} has no non-blank lines")
    keep = [i for i, t in enumerate(lines) if t.strip()]
    if not keep:
        raise CLIError(f"corpus {args.corpus} has no non-blank lines")

    from .search import semantic_search
    from .similarity import get_similarity_fn

    t0 = time.perf_counter()
    model = _load_model(args)
    t1 = time.perf_counter()
    corpus_emb = _corpus_embeddings(model, lines, args)
    t2 = time.perf_counter()
    query_emb = model.encode_query(queries, batch_size=args.batch_size, show_progress_bar=False)
    hits = semantic_search(query_emb, corpus_emb[keep], top_k=args.top_k,
                           score_function=get_similarity_fn(model.similarity_fn_name))
    t3 = time.perf_counter()

    if args.json:
        for q, qhits in zip(queries, hits):
            out = [{"rank": r, "score": h["score"], "line": keep[h["corpus_id"]] + 1,
                    "text": lines[keep[h["corpus_id"]]]} for r, h in enumerate(qhits, 1)]
            print(json.dumps({"query": q, "hits": out}, ensure_ascii=False))
    else:
        width = max(4, len(str(len(lines))))
        for q, qhits in zip(queries, hits):
            print(f"query: {q}")
            print(f"  {'rank':>4}  {'score':>7}  {'line':>{width}}  text")
            for r, h in enumerate(qhits, 1):
                row = keep[h["corpus_id"]]
                text = lines[row]
                shown = text if len(text) <= args.max_chars else text[: max(args.max_chars - 3, 1)] + "..."
                print(f"  {r:>4}  {h['score']:>7.4f}  {row + 1:>{width}}  {shown}")
            print()
    print(f"model: {model.model_path} ({model.similarity_fn_name}); corpus {_plural(len(keep), 'text')} in "
          f"{t2 - t1:.2f} s; {_plural(len(queries), 'query').replace('querys', 'queries')} in {t3 - t2:.3f} s; "
          f"model load {t1 - t0:.2f} s", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ parser
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their layout; options with a value show its default unless their help
    already says it."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" not in h and action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS):
            h += " (default: %(default)s)"
        return h


_BLANK_LINES = ("Blank lines: every line is one text, blank ones included, so row i of the output\n"
                "is line i + 1 of the input (a blank line is embedded as the empty string);\n"
                "search never returns a blank line as a hit, and skips blank query lines.")
_PROGRESS_RULE = (f"Progress: a bar on stderr, counting texts, is shown by default when stderr is a\n"
                  f"terminal and there are at least {PROGRESS_MIN_TEXTS} texts (or an unknown number, from\n"
                  f"stdin); --progress / --no-progress override this.")

_ENCODE_EPILOG = f"""\
examples:
  minilm encode "The weather is lovely today." "It's so sunny outside!"
  minilm encode --input corpus.txt --output emb.npy          # streamed: memory stays flat
  cat corpus.txt | minilm encode --format jsonl > emb.jsonl  # one JSON array per line
  minilm encode --input corpus.txt --output - | python -c "import numpy, sys; print(numpy.load(sys.stdin.buffer).shape)"

Output: without --output or --format, the first --show rows are printed as a preview.
--output FILE.npy writes every row ((texts, dim) float32); with --input FILE it is streamed a
chunk at a time and can be resumed (--resume) after an interruption. --output - writes the .npy
to stdout. Summaries and progress go to stderr.

{_BLANK_LINES}

{_PROGRESS_RULE}
"""

_SEARCH_EPILOG = f"""\
examples:
  minilm search corpus.txt "how do magnets work" --top-k 3
  minilm search corpus.txt --queries questions.txt --json > hits.jsonl
  minilm search corpus.txt --save-corpus corpus.npy < questions.txt

Queries come from the arguments, then --queries FILE; with neither, from stdin (one a line).
Hits go to stdout (a table, or with --json one JSON object per query); the summary to stderr.

{_BLANK_LINES}

{_PROGRESS_RULE}
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="model folder or hub id")
    p.add_argument("-b", "--batch-size", type=int, default=32, metavar="N",
                   help="texts per forward pass for token outputs; sentence embeddings are batched "
                        "by a token budget (CPU) or take at least N texts (CUDA)")
    p.add_argument("--max-seq-length", type=int, default=None, metavar="N",
                   help="truncate texts to this many tokens (default: the model's)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--offline", action="store_true", help="never contact the hub (local folders, cache, wheels)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help=f"always show the progress bar (default: shown on a terminal for >= {PROGRESS_MIN_TEXTS} "
                        "texts)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show the progress bar")


def _add_encode_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("encode", help="embed texts (arguments, --input FILE, or stdin, one text a line)",
                       description="Embed texts with a sentence-transformers model: the arguments, then the lines "
                                   "of --input FILE, or the lines of stdin.",
                       epilog=_ENCODE_EPILOG, formatter_class=_HelpFormatter)
    e.add_argument("texts", nargs="*", help="texts to embed (before those of --input)")
    e.add_argument("-i", "--input", "-f", "--file", dest="file", metavar="FILE",
                   help="file with one text a line ('-' for stdin); with --output it is streamed")
    e.add_argument("-o", "--output", metavar="FILE.npy",
                   help="write every row to this .npy file ('-': the .npy bytes to stdout)")
    e.add_argument("--format", choices=["preview", "jsonl"], default="preview",
                   help="stdout without --output: a preview of --show rows, or every row as one JSON array a line")
    _add_common(e)
    e.add_argument("--max-batch-tokens", type=int, default=None, metavar="N",
                   help="padded tokens per forward pass (default: 2048 on CPU, unlimited on CUDA)")
    e.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="compute precision (default: float32 on CPU, float16 on CUDA); the output is float32")
    e.add_argument("--prompt-name", default=None, help="a prompt from the model's config, e.g. query")
    e.add_argument("--prompt", default=None, help="text prepended to every input")
    e.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    e.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="texts read, embedded and written at a time (default: 8192; 1000 with --workers)")
    e.add_argument("--resume", action="store_true",
                   help="continue an interrupted --input/--output run from OUTPUT.progress")
    e.add_argument("--workers", type=int, default=None, metavar="N",
                   help="embed in N worker processes on --device (CPU workers share the cores; default: "
                        "one process)")
    e.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --workers: seconds a worker may spend on one chunk before the run fails "
                        "(default: no limit)")
    e.add_argument("--show", type=int, default=5, metavar="N", help="rows in the preview")
    e.set_defaults(func=_cmd_encode, validate=_validate_encode, parser=e)
    return e


def _add_search_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("search", help="embed a corpus file (one text a line) and print the best lines for queries",
                       description="Semantic search: embed CORPUS (one text a line) and, for each query, print the "
                                   "top-k lines by the model's similarity function.",
                       epilog=_SEARCH_EPILOG, formatter_class=_HelpFormatter)
    s.add_argument("corpus", help="corpus file, one text a line ('-' for stdin)")
    s.add_argument("query", nargs="*", help="queries (else --queries FILE, else stdin)")
    s.add_argument("-q", "--queries", metavar="FILE", help="file with one query a line ('-' for stdin)")
    s.add_argument("-k", "--top-k", type=int, default=5, metavar="K", help="hits per query")
    _add_common(s)
    s.add_argument("--save-corpus", metavar="EMB.npy",
                   help="cache the corpus embeddings here (reused while corpus and model are unchanged)")
    s.add_argument("--json", action="store_true", help="print one JSON object per query instead of a table")
    s.add_argument("--max-chars", type=int, default=100, metavar="N", help="truncate shown texts to N characters")
    s.set_defaults(func=_cmd_search, validate=None, parser=s)
    return s


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="minilm", formatter_class=_HelpFormatter,
        description="Fast sentence embeddings, compatible with sentence-transformers.",
        epilog="examples:\n  minilm encode \"A sentence.\" \"Another one.\"\n"
               "  minilm encode --input corpus.txt --output emb.npy\n"
               "  minilm search corpus.txt \"a question\"\n\n"
               "minilm COMMAND --help describes each command.")
    p.add_argument("--version", action="version", version=f"minilm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_encode_parser(sub)
    _add_search_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bound_native_caches()  # before the first bf16/int8 matmul: streams must stay flat
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.validate is not None:
            args.validate(args, args.parser)  # argument errors print the subcommand's usage
        return args.func(args)
    except KeyboardInterrupt:
        print(f"minilm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`minilm encode ... | head`): not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (CLIError, ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"minilm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
