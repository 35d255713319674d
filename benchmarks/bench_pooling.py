"""Mean pooling: Triton vs plain torch vs the sentence-transformers padded formula.

Workload: the SciFact abstracts' token lengths (all-MiniLM-L6-v2 tokenizer, truncated at
256), H=384, all documents in one call. GB/s counts the bytes an op must move: the packed
hidden states (varlen) or the whole padded tensor (masked; the Triton kernel skips padding
rows, so its figure can exceed the copy bandwidth), plus the mask and output.

    python benchmarks/bench_pooling.py            # CUDA
    python benchmarks/bench_pooling.py --smoke    # tiny CPU run through the interpreter
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--mix", default="max256", choices=["max256", "max512"])
    args = parser.parse_args(argv)
    torch = C.setup(args.smoke)
    K = C.import_kernels()
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = C.smoke_lengths(args.mix) if args.smoke else C.load_lengths(args.mix)
    width = 32 if args.smoke else args.hidden
    report = C.Report("pooling", torch, args.smoke, C.copy_bandwidth_gbs(args.smoke))
    cu = C.cu_seqlens(lengths, device)
    total, batch, max_len = sum(lengths), len(lengths), max(lengths)
    lengths_t = torch.tensor(lengths, device=device)
    mask = (torch.arange(max_len, device=device)[None, :] < lengths_t[:, None]).to(torch.int64)

    for dtype in C.dtypes(torch, args.dtypes):
        es = torch.empty((), dtype=dtype).element_size()
        hidden = torch.randn(total, width, dtype=dtype, device=device)
        padded = torch.zeros(batch, max_len, width, dtype=dtype, device=device)
        padded[mask.bool()] = hidden

        def st_formula(h=padded, m=mask):
            # sentence-transformers' Pooling (mean), in the model dtype
            me = m.unsqueeze(-1).expand(h.size()).to(h.dtype)
            return torch.sum(h * me, 1) / torch.clamp(me.sum(1), min=1e-9)

        def st_formula_normalized():
            return F.normalize(st_formula(), p=2, dim=1)

        varlen_bytes = (total + batch) * width * es + cu.numel() * 4
        masked_bytes = (batch * max_len + batch) * width * es + mask.numel() * mask.element_size()
        cases = [
            ("varlen", "triton", lambda: K.varlen_mean_pool(hidden, cu, backend="triton", validate=False), varlen_bytes),
            ("varlen", "torch_ref(index_add)", lambda: K.varlen_mean_pool_ref(hidden, cu, validate=False), varlen_bytes),
            ("varlen", "st_padded_formula", st_formula, masked_bytes),
            ("varlen+normalize", "triton", lambda: K.varlen_mean_pool(hidden, cu, normalize=True, backend="triton", validate=False), varlen_bytes),
            ("varlen+normalize", "torch_ref", lambda: K.varlen_mean_pool_ref(hidden, cu, normalize=True, validate=False), varlen_bytes),
            ("varlen+normalize", "st_padded+F.normalize", st_formula_normalized, masked_bytes),
            ("masked", "triton", lambda: K.masked_mean_pool(padded, mask, backend="triton"), masked_bytes),
            ("masked", "torch_ref(fp32)", lambda: K.masked_mean_pool_ref(padded, mask), masked_bytes),
            ("masked", "st_padded_formula", st_formula, masked_bytes),
        ]
        if hasattr(torch, "segment_reduce") and not args.smoke:
            cases.insert(3, ("varlen", "torch.segment_reduce", lambda: torch.segment_reduce(hidden, "mean", lengths=lengths_t), varlen_bytes))
        baseline = {}
        for op, variant, fn, nbytes in cases:
            try:
                ms = C.time_ms(fn, args.smoke)
            except Exception as exc:  # a missing fast path must not sink the run
                report.add(op=op, dtype=str(dtype)[6:], variant=variant, ms=None, note=f"n/a: {type(exc).__name__}")
                continue
            baseline.setdefault(op, ms)
            report.add(
                op=op,
                dtype=str(dtype)[6:],
                variant=variant,
                ms=ms,
                **{"GB/s": nbytes / (ms * 1e-3) / 1e9},
                triton_speedup=None if variant == "triton" else ms / baseline[op],
            )
        del padded
    report.emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
