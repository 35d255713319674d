"""``minilm`` command line: ``minilm encode`` embeds texts with a sentence-transformers model;
``minilm search`` ranks the lines of a corpus file for queries."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Sequence


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.file is not None:
        src = contextlib.nullcontext(sys.stdin) if args.file == "-" else open(args.file, encoding="utf-8")
        with src as f:
            texts.extend(line.rstrip("\r\n") for line in f)
    elif not texts:
        if sys.stdin.isatty():
            raise SystemExit("minilm encode: no input; give texts as arguments, --file FILE, or pipe them on stdin")
        texts.extend(line.rstrip("\r\n") for line in sys.stdin)
    return texts


def _load_model(args: argparse.Namespace):
    from .sentence_transformer import SentenceTransformer

    model = SentenceTransformer(args.model, device=args.device, dtype=args.dtype,
                                local_files_only=args.offline, max_batch_tokens=args.max_batch_tokens)
    if args.max_seq_length is not None:
        model.max_seq_length = args.max_seq_length
    if args.chunk_size is not None:
        if args.chunk_size < 1:
            raise ValueError(f"--chunk-size must be positive, got {args.chunk_size}")
        model.chunk_size = args.chunk_size
    return model


def _start_pool(args: argparse.Namespace, model):
    if args.workers is None:
        return None
    if args.workers < 1:
        raise ValueError(f"--workers must be positive, got {args.workers}")
    dev = str(model.device) if args.device is None else args.device
    return model.start_multi_process_pool([dev] * args.workers)


def _encode_streaming(args: argparse.Namespace) -> int:
    """--input FILE --output OUT.npy: rows are read, embedded and written a chunk at a time, so
    neither the texts nor the embeddings of the whole corpus are ever in memory."""
    import itertools

    from .streaming import NpyRowWriter, count_lines, read_lines

    src = Path(args.file)
    out = Path(args.output)
    total = len(args.texts) + count_lines(src)
    t0 = time.perf_counter()
    model = _load_model(args)
    meta = {"input": str(src.resolve()), "input_bytes": src.stat().st_size, "arguments": len(args.texts),
            "model": str(model.model_path), "dtype": str(model.dtype), "max_seq_length": model.max_seq_length,
            "prompt": args.prompt, "prompt_name": args.prompt_name, "normalize": args.normalize}
    skip = 0
    if args.resume:
        state = NpyRowWriter.read_progress(out)
        if state is None:
            raise FileNotFoundError(f"--resume: {out}.progress not found; nothing to resume")
        skip = int(state.get("rows_done", 0))
    rows = itertools.islice(itertools.chain(args.texts, read_lines(src)), skip, None)
    t1 = time.perf_counter()
    show = args.progress if args.progress is not None else total >= 1000
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=skip, desc="Embedding", unit="text")
    writer = None
    pool = None
    try:
        if args.resume:  # checks the output and its settings before any embedding
            writer = NpyRowWriter(out, total, model.get_sentence_embedding_dimension(), "float32", meta, resume=True)
        pool = _start_pool(args, model)
        for block in model.encode_iter(rows, pool=pool, batch_size=args.batch_size, prompt_name=args.prompt_name,
                                       prompt=args.prompt, normalize_embeddings=args.normalize):
            if writer is None:
                writer = NpyRowWriter(out, total, block.shape[1], block.dtype, meta)
            writer.write(block)
            if bar is not None:
                bar.update(len(block))
        if writer is None:  # nothing left to embed
            writer = NpyRowWriter(out, total, model.get_sentence_embedding_dimension(), "float32", meta)
    except BaseException as e:
        done = writer.done if writer is not None else skip
        print(f"minilm encode: {'interrupted' if isinstance(e, KeyboardInterrupt) else 'failed'}: wrote {done} "
              f"of {total} rows to {out}; {out.name}.progress records this, and --resume continues from it",
              file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            return 130
        raise
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if pool is not None:
            model.stop_multi_process_pool(pool)
    t2 = time.perf_counter()
    assert writer.done == total, (writer.done, total)
    rate = (total - skip) / (t2 - t1) if t2 > t1 else 0.0
    print(f"wrote {out} ({total}, {writer.dim}) {writer.dtype}", file=sys.stderr)
    print(f"model: {model.model_path}  device: {model.device}  dtype: {str(model.dtype).replace('torch.', '')}")
    print(f"embedded {total - skip} texts -> ({total}, {writer.dim}) {writer.dtype} in {t2 - t1:.3f} s "
          f"({rate:.1f} texts/s; model load {t1 - t0:.2f} s)")
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    if args.output and args.file not in (None, "-"):
        return _encode_streaming(args)
    if args.resume:
        raise ValueError("--resume needs --input FILE and --output FILE.npy")
    texts = _read_texts(args)
    t0 = time.perf_counter()
    model = _load_model(args)
    t1 = time.perf_counter()
    progress = args.progress if args.progress is not None else len(texts) >= 1000
    pool = _start_pool(args, model)
    try:
        emb = model.encode(texts, batch_size=args.batch_size, prompt_name=args.prompt_name, prompt=args.prompt,
                           normalize_embeddings=args.normalize, show_progress_bar=progress, pool=pool)
    finally:
        if pool is not None:
            model.stop_multi_process_pool(pool)
    t2 = time.perf_counter()
    if len(texts) == 0:
        emb = np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    if args.output:
        out = Path(args.output)
        np.save(out, emb)
        print(f"wrote {out} {emb.shape} {emb.dtype}", file=sys.stderr)
    rate = len(texts) / (t2 - t1) if t2 > t1 and texts else 0.0
    print(f"model: {model.model_path}  device: {model.device}  dtype: {str(model.dtype).replace('torch.', '')}")
    print(f"embedded {len(texts)} texts -> {emb.shape} {emb.dtype} in {t2 - t1:.3f} s "
          f"({rate:.1f} texts/s; model load {t1 - t0:.2f} s)")
    if not args.output:
        for text, row in list(zip(texts, emb))[: args.show]:
            head = " ".join(f"{v:+.4f}" for v in row[:4])
            print(f"  [{head} ...] |v|={float(np.linalg.norm(row)):.4f}  {text[:60]!r}")
        if len(texts) > args.show:
            print(f"  ... {len(texts) - args.show} more (use --output FILE.npy to save all)")
    return 0


def _read_lines(path: str) -> list[tuple[int, str]]:
    """(1-based line number, text) for every non-blank line; '-' reads stdin."""
    src = contextlib.nullcontext(sys.stdin) if path == "-" else open(path, encoding="utf-8")
    with src as f:
        return [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.strip()]


def _corpus_fingerprint(model, texts: list[str]) -> dict:
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
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
    emb = model.encode_document(texts, batch_size=args.batch_size, show_progress_bar=args.progress)
    if cache is not None:
        np.save(cache, emb)
        meta_path.write_text(json.dumps(fp, indent=1), encoding="utf-8")
        print(f"wrote {cache} {emb.shape} {emb.dtype}", file=sys.stderr)
    return emb


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from .search import semantic_search
    from .sentence_transformer import SentenceTransformer
    from .similarity import get_similarity_fn

    if args.top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.corpus == "-" and args.queries == "-":
        raise ValueError("the corpus and the queries cannot both come from stdin")
    corpus = _read_lines(args.corpus)
    if args.queries is not None:
        queries = list(args.query) + [t for _, t in _read_lines(args.queries)]
    elif args.query:
        queries = list(args.query)
    elif args.corpus != "-" and not sys.stdin.isatty():
        queries = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    else:
        raise SystemExit("minilm search: no queries; give them as arguments, --queries FILE, or pipe them on stdin")
    if not corpus:
        raise ValueError(f"corpus {args.corpus} has no non-blank lines")

    t0 = time.perf_counter()
    model = SentenceTransformer(args.model, device=args.device, local_files_only=args.offline)
    if args.max_seq_length is not None:
        model.max_seq_length = args.max_seq_length
    t1 = time.perf_counter()
    texts = [t for _, t in corpus]
    corpus_emb = _corpus_embeddings(model, texts, args)
    t2 = time.perf_counter()
    query_emb = model.encode_query(queries, batch_size=args.batch_size, show_progress_bar=False)
    hits = semantic_search(query_emb, corpus_emb, top_k=args.top_k,
                           score_function=get_similarity_fn(model.similarity_fn_name))
    t3 = time.perf_counter()

    if args.json:
        for q, qhits in zip(queries, hits):
            out = [{"rank": r, "score": h["score"], "line": corpus[h["corpus_id"]][0],
                    "text": corpus[h["corpus_id"]][1]} for r, h in enumerate(qhits, 1)]
            print(json.dumps({"query": q, "hits": out}, ensure_ascii=False))
    else:
        width = max(4, len(str(corpus[-1][0])))
        for q, qhits in zip(queries, hits):
            print(f"query: {q}")
            print(f"  {'rank':>4}  {'score':>7}  {'line':>{width}}  text")
            for r, h in enumerate(qhits, 1):
                line, text = corpus[h["corpus_id"]]
                shown = text if len(text) <= args.max_chars else text[: max(args.max_chars - 3, 1)] + "..."
                print(f"  {r:>4}  {h['score']:>7.4f}  {line:>{width}}  {shown}")
            print()
    print(f"model: {model.model_path} ({model.similarity_fn_name}); corpus {len(texts)} texts in {t2 - t1:.2f} s; "
          f"{len(queries)} queries in {t3 - t2:.3f} s; model load {t1 - t0:.2f} s", file=sys.stderr)
    return 0


def _add_search_parser(sub, default_model: str) -> None:
    s = sub.add_parser("search", help="embed a corpus file (one text a line) and print the best lines for queries",
                       description="Semantic search: embed CORPUS (one text a line; blank lines skipped) and, for "
                                   "each query, print the top-k lines by the model's similarity function.")
    s.add_argument("corpus", help="corpus file, one text a line ('-' for stdin)")
    s.add_argument("query", nargs="*", help="queries (else --queries FILE, else stdin)")
    s.add_argument("-q", "--queries", help="file with one query a line ('-' for stdin)")
    s.add_argument("-k", "--top-k", type=int, default=5, help="hits per query (default 5)")
    s.add_argument("-m", "--model", default=default_model, help=f"model folder or hub id (default {default_model})")
    s.add_argument("-b", "--batch-size", type=int, default=32)
    s.add_argument("--max-seq-length", type=int, default=None)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--offline", action="store_true", help="never contact the hub (local folders, cache, wheels)")
    s.add_argument("--save-corpus", metavar="EMB.npy",
                   help="cache the corpus embeddings here (reused while corpus and model are unchanged)")
    s.add_argument("--json", action="store_true", help="print one JSON object per query instead of a table")
    s.add_argument("--max-chars", type=int, default=100, help="truncate shown texts to this many characters")
    s.add_argument("--progress", action="store_true", help="show a progress bar while embedding the corpus")
    s.set_defaults(func=_cmd_search)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .sentence_transformer import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="minilm", description="Fast sentence embeddings (sentence-transformers compatible)")
    p.add_argument("--version", action="version", version=f"minilm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="embed texts (arguments, --input FILE, or stdin, one text a line)")
    e.add_argument("texts", nargs="*", help="texts to embed")
    e.add_argument("-f", "--file", "-i", "--input", dest="file",
                   help="file with one text a line ('-' for stdin); with --output it is streamed: "
                        "memory stays bounded by --chunk-size, whatever the file's size")
    e.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model folder or hub id (default {DEFAULT_MODEL})")
    e.add_argument("-o", "--output", help="write the embeddings to this .npy file")
    e.add_argument("-b", "--batch-size", type=int, default=32)
    e.add_argument("--max-batch-tokens", type=int, default=None, help="token budget per forward pass")
    e.add_argument("--max-seq-length", type=int, default=None)
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    e.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    e.add_argument("--prompt-name", default=None)
    e.add_argument("--prompt", default=None)
    e.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    e.add_argument("--offline", action="store_true", help="never contact the hub (local folders, cache, wheels)")
    e.add_argument("--chunk-size", type=int, default=None,
                   help="texts read, embedded and written at a time (default 8192)")
    e.add_argument("--resume", action="store_true",
                   help="continue an interrupted --input/--output run from OUTPUT.progress")
    e.add_argument("--workers", type=int, default=None,
                   help="embed in this many worker processes on --device (CPU workers share the cores)")
    e.add_argument("--show", type=int, default=5, help="rows to print when not writing a file")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None)
    g.add_argument("--no-progress", dest="progress", action="store_false")
    e.set_defaults(func=_cmd_encode)
    _add_search_parser(sub, DEFAULT_MODEL)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"minilm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
