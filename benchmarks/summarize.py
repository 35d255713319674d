"""Print the short verdict table of a GPU run from the CSVs in benchmarks/out/.

Targets: pooling and add+LayerNorm at >= 80% of the measured copy bandwidth; varlen
attention at least as fast as SDPA's flash backend on the same tokens; end-to-end encode of
the SciFact abstracts >= 3x sentence-transformers in the same dtype.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


SUFFIX = "_smoke" if "--smoke" in sys.argv[1:] else ""


def _rows(name, suffix=SUFFIX):
    path = OUT / f"{name}{suffix}.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def main() -> int:
    lines = []
    device = None
    for name, ops in (("pooling", ("varlen", "varlen+normalize", "masked")), ("layernorm", ("add+LN", "LN")), ("gelu", ("bias+gelu",))):
        rows = _rows(name)
        for row in rows:
            device = device or f"{row['device']} | torch {row['torch']} | triton {row['triton']} | lengths {row.get('lengths')}"
            if row["variant"] != "triton" or row["op"] not in ops:
                continue
            pct = _f(row.get("%copy_bw"))
            others = [
                r for r in rows
                if r["op"] == row["op"] and r["dtype"] == row["dtype"] and r.get("H") == row.get("H")
                and r["variant"] != "triton" and _f(r.get("ms"))
            ]
            best = min(others, key=lambda r: _f(r["ms"]), default=None)
            target = "" if name == "gelu" or row["op"] == "masked" else ("PASS" if pct and pct >= 80 else "MISS")
            label = f"{name}:{row['op']}" + (f" H={row['H']}" if row.get("H") else "")
            lines.append(
                (label, row["dtype"], f"{_f(row['GB/s']):.0f} GB/s", f"{pct:.0f}% copy" if pct else "",
                 f"vs best torch ({best['variant']}) x{_f(best['ms']) / _f(row['ms']):.2f}" if best else "", target)
            )
    rows = _rows("attention")
    for row in rows:
        device = device or f"{row['device']} | torch {row['torch']} | triton {row['triton']}"
        if row["variant"] != "triton" or not _f(row.get("ms")):
            continue
        same = [r for r in rows if (r["mix"], r["shape"], r["dtype"]) == (row["mix"], row["shape"], row["dtype"])]
        by = {r["variant"]: _f(r.get("ms")) for r in same}
        flash = by.get("sdpa_flash_padded")
        varlen = min((v for k, v in by.items() if k in ("torch_varlen_attn", "aten_flash_varlen") and v), default=None)
        ms = _f(row["ms"])
        lines.append(
            (f"attention {row['mix']} {row['shape']}", row["dtype"], f"{_f(row['TFLOP/s']):.1f} TFLOP/s",
             f"{ms:.2f} ms",
             f"sdpa_flash_padded x{flash / ms:.2f}" + (f", flash varlen x{varlen / ms:.2f}" if varlen else "")
             if flash else "sdpa flash n/a",
             "" if not flash else ("PASS" if ms <= flash else "MISS"))
        )
    # End to end (bench_encode.py): minilm against sentence-transformers in the same dtype.
    for row in _rows("encode_cuda", "") or _rows("encode_cpu", ""):  # bench_encode.py has no smoke suffix
        if row["engine"] != "minilm":
            continue
        ratio = _f(row.get("speedup_vs_st_same_dtype"))
        target = "" if row["workload"] != "long" or not ratio else ("PASS" if ratio >= 3 else "MISS")
        lines.append(
            (f"encode {row['workload']} ({row['texts']} texts)", row["dtype"], f"{_f(row['tokens_per_s']):.0f} tok/s",
             f"min cos {row['min_cos_vs_st32']}", f"vs sentence-transformers x{ratio:.2f}" if ratio else "", target)
        )
    if not lines:
        print(f"no benchmark CSVs in {OUT}")
        return 1
    print("\n== SUMMARY (" + (device or "?") + ")")
    print("   (xN = how many times faster Triton is; targets: >=80% copy BW, attention <= SDPA flash time)")
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("   " + "  ".join(v.ljust(w) for v, w in zip(line, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
