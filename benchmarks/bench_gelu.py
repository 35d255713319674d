"""Bias + exact GELU on the BERT intermediate activations: Triton vs torch.

Workload: (tokens of the SciFact abstracts truncated at 256, 4*384=1536) - the output of
the first FFN matmul before its bias. "torch_native" is ``F.gelu(x + bias)`` in the model
dtype (two kernels, what eager PyTorch runs after a bias-free matmul); "torch_addmm_path"
is the GELU alone, i.e. the cost left when the bias is fused into the matmul epilogue
(``F.linear`` with bias) - the bar the fused kernel must beat to pay. GB/s counts x read
and the output written.

    python benchmarks/bench_gelu.py            # CUDA
    python benchmarks/bench_gelu.py --smoke    # tiny CPU run through the interpreter
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--inter", type=int, default=1536)
    parser.add_argument("--mix", default="max256", choices=["max256", "max512"])
    args = parser.parse_args(argv)
    torch = C.setup(args.smoke)
    K = C.import_kernels()
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = C.smoke_lengths(args.mix) if args.smoke else C.load_lengths(args.mix)
    rows = sum(lengths)
    width = 64 if args.smoke else args.inter
    report = C.Report("gelu", torch, args.smoke, C.copy_bandwidth_gbs(args.smoke))
    for dtype in C.dtypes(torch, args.dtypes):
        es = torch.empty((), dtype=dtype).element_size()
        x = torch.randn(rows, width, dtype=dtype, device=device)
        bias = torch.randn(width, dtype=dtype, device=device)
        nbytes = 2 * rows * width * es
        triton_ms = None
        for variant, fn in (
            ("triton", lambda: K.bias_gelu(x, bias, backend="triton")),
            ("torch_ref(fp32)", lambda: K.bias_gelu_ref(x, bias)),
            ("torch_native", lambda: F.gelu(x + bias)),
            ("torch_addmm_path", lambda: F.gelu(x)),
        ):
            ms = C.time_ms(fn, args.smoke)
            triton_ms = triton_ms or ms
            report.add(
                op="bias+gelu",
                dtype=str(dtype)[6:],
                variant=variant,
                ms=ms,
                **{"GB/s": nbytes / (ms * 1e-3) / 1e9},
                triton_speedup=None if variant == "triton" else ms / triton_ms,
            )
    report.emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
