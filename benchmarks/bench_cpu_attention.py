"""CPU attention for one run of equal-length sequences: SDPA against minilm's plain-matmul path.

Each call attends ``--tokens`` tokens (the CPU engine's batch budget) split into g sequences of
n tokens, with q/k/v the strided views of a fused (g, n, 3, heads, head_dim) projection, as the
encoder hands them over. Variants, per dtype:

  sdpa    torch.nn.functional.scaled_dot_product_attention (the flash kernel for CPU)
  math    minilm.model.math_attention: matmul, softmax, matmul, a few sequences at a time
  picked  which of the two minilm.model.fastest_cpu_attention uses at this n

Prints milliseconds per call (median of --repeats), tokens/s and GFLOP/s (4 n^2 d per head and
sequence), and the CPU's model and dot-product flags, since the answer depends on them.

    python benchmarks/bench_cpu_attention.py --threads 2
    python benchmarks/bench_cpu_attention.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="8,16,24,32,48,64,96,128,192,256")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per call (g = tokens // n)")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="two tiny lengths, 2 repeats")
    args = ap.parse_args(argv)
    if args.smoke:
        args.lengths, args.tokens, args.repeats = "8,40", 160, 2

    import torch
    import torch.nn.functional as F

    C.import_kernels()  # puts this checkout's minilm first on sys.path
    from minilm.model import fastest_cpu_attention, math_attention

    print(C.cpu_banner(torch, args.threads, ISA_FLAGS))
    print("\n| dtype | n | g | sdpa ms | math ms | picked | picked tokens/s | picked GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name.strip())
        for n in (int(x) for x in args.lengths.split(",")):
            g = max(1, args.tokens // n)
            qkv = torch.randn(g, n, 3, args.heads, args.head_dim, generator=gen).to(dtype)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (g, heads, n, head_dim), strided
            ms = {}
            for label, fn in (("sdpa", F.scaled_dot_product_attention), ("math", math_attention)):
                fn(q, k, v)  # warm: oneDNN compiles its kernels on first use
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn(q, k, v)
                    times.append(time.perf_counter() - t0)
                ms[label] = statistics.median(times) * 1e3
            picked = "math" if fastest_cpu_attention(n, dtype) is math_attention else "sdpa"
            sec = ms[picked] / 1e3
            gflops = 4 * g * args.heads * n * n * args.head_dim / sec / 1e9
            print(f"| {name} | {n} | {g} | {ms['sdpa']:.2f} | {ms['math']:.2f} | {picked} | "
                  f"{g * n / sec:,.0f} | {gflops:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
