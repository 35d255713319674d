"""Residual add + LayerNorm: Triton vs plain torch (fp32 upcast) vs PyTorch's fused LayerNorm.

Workload: one row per token of the SciFact abstracts (truncated at 256), H=384, BERT's
eps 1e-12; with a residual (the per-layer post-LN) and without (the embeddings LN).
GB/s counts x (+ residual) read and the output written.

    python benchmarks/bench_layernorm.py            # CUDA
    python benchmarks/bench_layernorm.py --smoke    # tiny CPU run through the interpreter
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="384,768")
    parser.add_argument("--mix", default="max256", choices=["max256", "max512"])
    args = parser.parse_args(argv)
    torch = C.setup(args.smoke)
    K = C.import_kernels()
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = C.smoke_lengths(args.mix) if args.smoke else C.load_lengths(args.mix)
    rows = sum(lengths)
    widths = [48] if args.smoke else [int(h) for h in args.hidden.split(",")]
    report = C.Report("layernorm", torch, args.smoke, C.copy_bandwidth_gbs(args.smoke))
    eps = 1e-12
    for width in widths:
        for dtype in C.dtypes(torch, args.dtypes):
            es = torch.empty((), dtype=dtype).element_size()
            x = torch.randn(rows, width, dtype=dtype, device=device)
            res = torch.randn_like(x)
            w = torch.randn(width, dtype=dtype, device=device)
            b = torch.randn(width, dtype=dtype, device=device)
            for op, residual, nbytes in (
                ("add+LN", res, 3 * rows * width * es),
                ("LN", None, 2 * rows * width * es),
            ):
                def native(r=residual):
                    # what an eager BERT does: a separate add, then aten's fused LayerNorm
                    return F.layer_norm(x if r is None else x + r, (width,), w, b, eps)

                triton_ms = None
                for variant, fn in (
                    ("triton", lambda r=residual: K.add_layer_norm(x, r, w, b, eps, backend="triton")),
                    ("torch_ref(fp32)", lambda r=residual: K.add_layer_norm_ref(x, r, w, b, eps)),
                    ("torch_native", native),
                ):
                    ms = C.time_ms(fn, args.smoke)
                    triton_ms = triton_ms or ms
                    report.add(
                        op=op,
                        H=width,
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
