"""Varlen attention: Triton vs PyTorch's flash paths vs plain torch.

Workload: the SciFact abstracts tokenised with all-MiniLM-L6-v2, truncated at 256
("max256") and 512 ("max512"), encoded in file order in batches of ``--batch`` documents,
as an encoder would see them. Every variant processes the whole corpus per timed call.
TFLOP/s always counts the useful work, sum_i 4 * L_i^2 * head_dim * heads, so padded
variants pay for their padding.

Variants:
  triton               varlen_attention on q/k/v views of a fused (T, 3, heads, d) tensor
  torch_varlen_attn    torch.nn.attention.varlen.varlen_attn (flash varlen), if present
  aten_flash_varlen    torch.ops.aten._flash_attention_forward with cu_seqlens
  sdpa_flash_padded    SDPA, flash backend, padded (B, heads, Lmax, d), NO mask: keys
                       include the padding, so it is a speed bound, not a correct result
  sdpa_masked_padded   SDPA with a key-padding mask (PyTorch picks the backend)
  torch_eager_padded   softmax(q k^T * scale + mask) v in the model dtype (eager BERT)
  torch_ref            varlen_attention_ref: a float32 loop over sequences

    python benchmarks/bench_attention.py            # CUDA
    python benchmarks/bench_attention.py --smoke    # tiny CPU run through the interpreter
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main(argv=None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--mixes", default="max256,max512")
    parser.add_argument("--shapes", default="12x32,12x64", help="heads x head_dim list")
    parser.add_argument("--batch", type=int, default=256, help="documents per encode batch")
    parser.add_argument("--no-ref", action="store_true", help="skip the slow float32 loop")
    args = parser.parse_args(argv)
    torch = C.setup(args.smoke)
    K = C.import_kernels()
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = C.Report("attention", torch, args.smoke)
    shapes = [(2, 32)] if args.smoke else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    batch_docs = 3 if args.smoke else args.batch
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        varlen_attn = None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for mix in args.mixes.split(","):
        all_lengths = C.smoke_lengths(mix) if args.smoke else C.load_lengths(mix)
        chunks = [all_lengths[i : i + batch_docs] for i in range(0, len(all_lengths), batch_docs)]
        for heads, head_dim in shapes:
            for dtype in C.dtypes(torch, args.dtypes):
                flops = sum(4.0 * n * n * head_dim * heads for n in all_lengths)
                scale = head_dim**-0.5
                batches = []
                for lengths in chunks:
                    total, max_len = sum(lengths), max(lengths)
                    fused = torch.randn(total, 3, heads, head_dim, dtype=dtype, device=device)
                    q, k, v = fused.unbind(1)
                    qc, kc, vc = (t.contiguous() for t in (q, k, v))
                    lengths_t = torch.tensor(lengths, device=device)
                    valid = torch.arange(max_len, device=device)[None, :] < lengths_t[:, None]
                    padded = torch.zeros(len(lengths), max_len, 3, heads, head_dim, dtype=dtype, device=device)
                    padded[valid] = fused
                    # (B, heads, L, d) views of a (B, L, heads, d) buffer: flash's native layout
                    qp, kp, vp = (padded[:, :, i].transpose(1, 2) for i in range(3))
                    add_mask = torch.zeros(len(lengths), 1, 1, max_len, dtype=dtype, device=device)
                    add_mask.masked_fill_(~valid[:, None, None, :], float("-inf"))
                    bias = torch.randn(heads, max_len, max_len, dtype=dtype, device=device)
                    batches.append(
                        dict(q=q, k=k, v=v, qc=qc, kc=kc, vc=vc, cu=C.cu_seqlens(lengths, device),
                             max_len=max_len, qp=qp, kp=kp, vp=vp, bool_mask=valid[:, None, None, :],
                             add_mask=add_mask, bias=bias)
                    )

                def over_batches(step):
                    def run():
                        for b in batches:
                            step(b)
                    return run

                def triton_step(b, with_bias=False):
                    K.varlen_attention(b["q"], b["k"], b["v"], b["cu"], b["max_len"], scale,
                                       bias=b["bias"] if with_bias else None, backend="triton", validate=False)

                def varlen_step(b):
                    varlen_attn(b["qc"], b["kc"], b["vc"], b["cu"], b["cu"], b["max_len"], b["max_len"], scale=scale)

                def aten_step(b):
                    torch.ops.aten._flash_attention_forward(
                        b["qc"], b["kc"], b["vc"], b["cu"], b["cu"], b["max_len"], b["max_len"],
                        0.0, False, False, scale=scale)

                def sdpa_flash_step(b):
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        F.scaled_dot_product_attention(b["qp"], b["kp"], b["vp"], scale=scale)

                def sdpa_masked_step(b, with_bias=False):
                    mask = b["add_mask"] + b["bias"][None] if with_bias else b["bool_mask"]
                    F.scaled_dot_product_attention(b["qp"], b["kp"], b["vp"], attn_mask=mask, scale=scale)

                def eager_step(b):
                    s = torch.matmul(b["qp"], b["kp"].transpose(-1, -2)) * scale + b["add_mask"]
                    torch.matmul(torch.softmax(s, dim=-1), b["vp"])

                def ref_step(b):
                    K.varlen_attention_ref(b["q"], b["k"], b["v"], b["cu"], b["max_len"], scale, validate=False)

                variants = [
                    ("triton", triton_step),
                    ("torch_varlen_attn", varlen_step if varlen_attn is not None else None),
                    ("aten_flash_varlen", aten_step),
                    ("sdpa_flash_padded", sdpa_flash_step),
                    ("sdpa_masked_padded", sdpa_masked_step),
                    ("torch_eager_padded", eager_step),
                    ("torch_ref", None if args.no_ref else ref_step),
                    ("triton+bias", lambda b: triton_step(b, True)),
                    ("sdpa_padded+bias", lambda b: sdpa_masked_step(b, True)),
                ]
                # Sanity check on the first batch: the kernel against the float32 loop.
                b0 = batches[0]
                got = K.varlen_attention(b0["q"], b0["k"], b0["v"], b0["cu"], b0["max_len"], scale, backend="triton")
                want = K.varlen_attention_ref(b0["q"], b0["k"], b0["v"], b0["cu"], b0["max_len"], scale)
                max_err = (got.float() - want.float()).abs().max().item()
                triton_ms = None
                for variant, step in variants:
                    row = dict(mix=mix, shape=f"{heads}x{head_dim}", dtype=str(dtype)[6:], variant=variant)
                    if step is None:
                        report.add(**row, ms=None, note="n/a")
                        continue
                    try:
                        ms = C.time_ms(over_batches(step), args.smoke)
                    except Exception as exc:  # a fast path missing in this build
                        report.add(**row, ms=None, note=f"n/a: {type(exc).__name__}: {str(exc)[:60]}")
                        continue
                    triton_ms = triton_ms or ms
                    report.add(
                        **row,
                        ms=ms,
                        **{"TFLOP/s": flops / (ms * 1e-3) / 1e12},
                        triton_speedup=None if variant == "triton" else ms / triton_ms,
                        note=f"max|err| vs ref {max_err:.1e}" if variant == "triton" else
                        ("attends to padding" if variant == "sdpa_flash_padded" else ""),
                    )
                del batches
                if device == "cuda":
                    torch.cuda.empty_cache()
    report.emit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
