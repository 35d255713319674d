"""Issue 11's GPU measurements in one run, with a PASS/MISS line per goal.

Sections (``--sections``, all by default):
  sweep     encode() at the default batch (32) and a batch-size sweep, minilm and
            sentence-transformers, short (STS-B sentences) and long (SciFact, 256 tokens);
            also minilm's CUDA pipeline (minilm/cuda_pipeline.py) fed from texts; tokens/s,
            peak GPU memory, min cosine against sentence-transformers float32, bitwise
            equality across batch sizes; each configuration is timed warm, after untimed
            calls on the whole workload (autotune, graph capture), whose times are reported
  busy      GPU-busy share (union of CUDA kernel/copy intervals / wall, torch.profiler) on
            short text: encode() at batch 32 and at the best batch, and the pipeline fed
            from pre-tokenized ids
  tokenize  tokenize-only rate with all host cores (the end-to-end ceiling)
  coldstart `minilm encode "hello world"` wall time with an empty and a warm Triton cache,
            and where the time goes (import torch, CUDA init, import triton, model load,
            first encode = Triton kernel load or compile + autotune, second encode)
  scale     >= 200k short texts through encode() and through `minilm encode --output`

    python benchmarks/bench_gpu_pipeline.py              # on the GPU machine (gpu_all.sh)
    python benchmarks/bench_gpu_pipeline.py --smoke      # CPU plumbing check, seconds

Writes benchmarks/out/gpu_pipeline[_smoke].json and prints the summary last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encode import (REPO, PeakMemory, cosines, data_dir, default_model, hardware, load_long,  # noqa: E402
                          load_smoke, timed)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minilm  # noqa: E402
from minilm import cuda_pipeline as cp  # noqa: E402
from minilm import engine as engine_mod  # noqa: E402
from minilm.engine import EncodeRequest  # noqa: E402

GOALS = {"default_share": 0.90, "busy": 0.70, "short_tok_s": 2.5e6, "long_tok_s": 3.5e6, "tokenize_share": 0.85,
         "cold_warm_s": 3.0, "min_cos": 0.9999}


def load_short_all(n: int) -> list[str]:
    """STS-B dev then train sentences (held out from the model's training data)."""
    out = []
    for name in ("sts-dev.tsv", "sts-train.tsv"):
        path = data_dir() / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) >= 7:
                    out += [p[5], p[6]]
    if not out:
        raise SystemExit(f"no STS data under {data_dir()}: run benchmarks/prepare_gpu_carry.py")
    return out[:n]


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, dev: str, repeats: int):
    """(output, fastest seconds, peak memory bytes) over ``repeats`` runs."""
    times, peak, out = [], 0, None
    for _ in range(repeats):
        with PeakMemory(dev) as mem:
            out, secs = timed(fn, dev)
        times.append(secs)
        peak = max(peak, mem.peak)
    return out, min(times), peak


# ------------------------------------------------------------------------ sections
def distinct_texts(base: list[str], n: int) -> list[str]:
    """``n`` texts cycling through ``base``, each with a counter appended: every line distinct
    (no cache anywhere can help) at ~1-2 extra tokens."""
    return [f"{base[i % len(base)]} {i}" for i in range(n)]


def section_sweep(args, ml, st, st32, workloads, res):
    rows = []
    for wname, texts in workloads.items():
        ntok = sum(len(s) for s in ml.tokenizer.encode(texts))
        ref = np.asarray(st32.encode(texts, batch_size=128), dtype=np.float64)
        outs = {}
        engines = [("minilm", bs) for bs in args.batch_sizes] + [("sentence-transformers", bs) for bs in args.st_batch_sizes]
        engines.append(("minilm-pipeline", 32))
        for engine, bs in engines:
            if engine == "minilm":
                fn = lambda: ml.encode(texts, batch_size=bs)  # noqa: E731
            elif engine == "sentence-transformers":
                fn = lambda: st.encode(texts, batch_size=bs)  # noqa: E731
            else:
                pipe = cp.CudaPipeline(ml.engine, EncodeRequest())
                fn = lambda: pipe.encode_texts(texts, ml.tokenizer.encode, batch_size=bs)  # noqa: E731
            # Untimed calls first, on the whole workload: the first meets new attention
            # autotune keys, the second captures the CUDA graph of every bucket seen twice
            # (capture_after=2). Timing them made whichever batch size ran first look 5x
            # slower on the H100 (0.63 against 0.11 s for the same buckets); their times are
            # kept as the cost a one-off call pays.
            warm = [timed(fn, args.device)[1] for _ in range(1 if engine == "sentence-transformers" else 2)]
            emb, secs, peak = best_time(fn, args.device, args.repeats)
            emb = np.asarray(emb, dtype=np.float32)
            outs[(engine, bs)] = emb
            cos = cosines(emb, ref)
            rows.append(dict(workload=wname, engine=engine, batch=bs, texts=len(texts), tokens=ntok,
                             seconds=round(secs, 4), tok_s=round(ntok / secs), peak_mb=round(peak / 2**20, 1),
                            warmup_s=[round(w, 4) for w in warm],
                             min_cos=round(float(cos.min()), 7)))
            print(f"  sweep {wname} {engine} b={bs}: {ntok / secs:,.0f} tok/s, peak {peak / 2**20:.0f} MiB "
                  f"(untimed first calls: {', '.join(f'{w:.3f}' for w in warm)} s)", flush=True)
        base = outs[("minilm", 32)] if ("minilm", 32) in outs else outs[("minilm", args.batch_sizes[0])]
        for r in rows:
            if r["workload"] == wname and r["engine"].startswith("minilm"):
                r["max_abs_vs_b32"] = float(np.abs(outs[(r["engine"], r["batch"])] - base).max())
    res["sweep"] = rows


def _busy_share(fn, dev: str) -> dict:
    """Union of the profiler's CUDA intervals (kernels, copies) over the wall time. On CPU
    (smoke runs only) the same arithmetic over CPU ops, to exercise the code."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.startswith("cuda")
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    sync(dev)
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        sync(dev)
        wall = time.perf_counter() - t0
    events = [e for e in prof.events()
              if e.device_type == kind and e.time_range.end > e.time_range.start]
    spans = sorted((e.time_range.start, e.time_range.end) for e in events)
    # Which kernels run how often: tells whether bias adds ride in the GEMM epilogue
    # (one kernel per Linear) and what a fused launch would save.
    by_name: dict[str, list] = {}
    for e in events:
        c = by_name.setdefault(e.name[:60], [0, 0.0])
        c[0] += 1
        c[1] += e.time_range.elapsed_us() / 1e3
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:8]
    busy, cur_s, cur_e, kernels = 0.0, None, None, len(spans)
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    busy /= 1e6  # us -> s
    return dict(wall_s=round(wall, 4), gpu_busy_s=round(busy, 4), busy_share=round(busy / wall, 3),
                device_events=kernels, top_kernels_calls_ms=[(n, c, round(ms, 2)) for n, (c, ms) in top])


def section_busy(args, ml, workloads, res):
    if not args.device.startswith("cuda") and not args.smoke:
        res["busy"] = {"note": "needs CUDA"}
        print("  busy: needs CUDA, skipped")
        return
    texts = workloads["short"]
    best = max((r for r in res.get("sweep", []) if r["workload"] == "short" and r["engine"] == "minilm"),
               key=lambda r: r["tok_s"], default={"batch": 512})["batch"]
    ids = ml.tokenizer.encode(texts)
    pipe = cp.CudaPipeline(ml.engine, EncodeRequest())
    pipe.encode_ids(ids)  # warm-up and graph capture
    pipe.encode_ids(ids)
    out = {"encode_b32": _busy_share(lambda: ml.encode(texts, batch_size=32), args.device),
           f"encode_b{best}": _busy_share(lambda: ml.encode(texts, batch_size=best), args.device),
           "pipeline_ids_b32": _busy_share(lambda: pipe.encode_ids(ids, batch_size=32), args.device)}
    if not args.device.startswith("cuda"):
        out["note"] = "CPU ops, not GPU: plumbing check only"
    out["graphs"] = len(pipe.runner.graphs)
    out["replays"] = pipe.runner.replays
    out["eager_runs"] = pipe.runner.eager_runs
    for k, v in out.items():
        print(f"  busy {k}: {v}")
    res["busy"] = out


def section_tokenize(args, ml, workloads, res):
    out = {"threads": os.cpu_count()}
    for wname, texts in workloads.items():
        ml.tokenizer.encode(texts[:256])
        ids, secs, _ = best_time(lambda: ml.tokenizer.encode(texts), "cpu", args.repeats)
        out[wname] = round(sum(map(len, ids)) / secs)
        print(f"  tokenize {wname}: {out[wname]:,} tok/s ({os.cpu_count()} cores)")
    res["tokenize"] = out


# Chunk schedules of the CUDA sentence path: (CudaStrategy.first_chunk, ramp_upto_chunks,
# tokenize_ahead), or None for the strategy's defaults. "fixed chunks, 1 ahead" is the
# schedule before the ramp.
CHUNK_SCHEDULES = {"fixed chunks, 1 ahead": (None, 0, 1), "ramped chunks, 1 ahead": (512, 10**9, 1),
                   "fixed chunks, 2 ahead": (None, 0, 2), "ramped chunks, 2 ahead": (512, 10**9, 2),
                   "default": None}


def section_chunks(args, ml, workloads, res):
    """encode() from text under each chunk schedule, interleaved, against tokenize-only: the
    share of the tokenizer's rate is what the schedule can move."""
    loads = {**workloads, "short_x8": distinct_texts(workloads["short"], 8 * len(workloads["short"]))}
    names = args.chunk_schedules.split(";") if args.chunk_schedules else list(CHUNK_SCHEDULES)
    order = args.chunk_workloads.split(",") if args.chunk_workloads else list(loads)
    unknown = [n for n in names if n not in CHUNK_SCHEDULES] + [w for w in order if w not in loads]
    if unknown:
        raise SystemExit(f"--chunk-schedules / --chunk-workloads: unknown {unknown}; schedules are "
                         f"{list(CHUNK_SCHEDULES)}, workloads {list(loads)}")
    schedules = {k: CHUNK_SCHEDULES[k] for k in names}
    rows = []
    for wname in order:
        texts = loads[wname]
        ntok = sum(map(len, ml.tokenizer.encode(texts)))
        ref, times = None, {name: [] for name in schedules}
        tok_times = []
        for rep in range(args.repeats + 1):  # the first round warms every schedule up
            t0 = time.perf_counter()
            ml.tokenizer.encode(texts)
            if rep:
                tok_times.append(time.perf_counter() - t0)
            for name, schedule in schedules.items():
                # Pinned on the CPU too (smoke runs): the CUDA pipeline runs there, eagerly.
                strategy = engine_mod.CudaStrategy()
                if schedule is not None:
                    strategy.first_chunk, strategy.ramp_upto_chunks, strategy.tokenize_ahead = schedule
                ml.engine.strategy = strategy
                emb, secs = timed(lambda: ml.encode(texts), args.device)
                if rep:
                    times[name].append(secs)
                ref = emb if ref is None else ref
                if not np.array_equal(emb, ref):
                    raise AssertionError(f"chunk schedule {name!r} changed the embeddings")
        ml.engine.strategy = None
        runners = [pipe.runner for pipe in ml.engine._pipelines.values()]
        graphs, eager = sum(len(r.graphs) for r in runners), sum(r.eager_runs for r in runners)
        print(f"  chunks {wname}: {graphs} CUDA graphs held, {eager} eager batches so far")
        tok_rate = ntok / min(tok_times)
        for name, ts in times.items():
            if ts:
                r, med = ntok / min(ts), ntok / float(np.median(ts))
                rows.append({"workload": wname, "texts": len(texts), "schedule": name, "tok_s": round(r),
                             "tok_s_median": round(med), "share_of_tokenize": round(r / tok_rate, 3),
                             "seconds": [round(t, 4) for t in ts]})
                print(f"  chunks {wname:9} {name:24} {r:>12,.0f} tok/s (median {med:,.0f})  "
                      f"{r / tok_rate:.0%} of tokenize-only")
        rows.append({"workload": wname, "texts": len(texts), "schedule": "tokenize-only", "tok_s": round(tok_rate),
                     "seconds": [round(t, 4) for t in tok_times]})
    res["chunks"] = rows


_STAGES = r"""
import json, sys, time
t0 = time.perf_counter(); import torch; t1 = time.perf_counter()
cuda = torch.cuda.is_available()
if cuda: torch.cuda.init(); torch.empty(1, device="cuda")
t2 = time.perf_counter()
try:
    import triton
except ImportError:
    pass
t2b = time.perf_counter(); import minilm; t3 = time.perf_counter()
m = minilm.SentenceTransformer(sys.argv[1], device=sys.argv[2]); t4 = time.perf_counter()
m.encode(["hello world"])
if cuda: torch.cuda.synchronize()
t5 = time.perf_counter(); m.encode(["hello world"])
if cuda: torch.cuda.synchronize()
t6 = time.perf_counter()
print(json.dumps(dict(import_torch=t1 - t0, cuda_init=t2 - t1, import_triton=t2b - t2, import_minilm=t3 - t2b,
                      load_model=t4 - t3,
                      first_encode=t5 - t4, second_encode=t6 - t5)))
"""


def _run(cmd, env) -> tuple[float, int, str]:
    """(wall seconds, peak RSS of this child in bytes, stdout) of one subprocess."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, cwd=REPO)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage, not the max over all children
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} failed ({p.returncode}): {err.read()[-800:]}")
        return wall, usage.ru_maxrss * 1024, out.read()


def section_coldstart(args, res):
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TRITON_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        cli = [sys.executable, "-m", "minilm.cli", "encode", "hello world", "-m", args.model, "--device", args.device]
        out["cli_empty_cache_s"] = round(_run(cli, env)[0], 2)
        warm_runs = 1 if args.smoke else 2
        out["cli_warm_cache_s"] = round(min(_run(cli, env)[0] for _ in range(warm_runs)), 2)
        stages = json.loads(_run([sys.executable, "-c", _STAGES, args.model, args.device], env)[2].strip().splitlines()[-1])
        out["stages_warm_cache_s"] = {k: round(v, 3) for k, v in stages.items()}
    print(f"  coldstart: {out}")
    res["coldstart"] = out


def section_scale(args, ml, workloads, res):
    texts = distinct_texts(workloads["short"], args.scale_n)
    ntok = sum(map(len, ml.tokenizer.encode(texts)))
    # The first call pays for whatever this process has not compiled or captured yet (all of
    # it when the section runs alone in a fresh process: 7.65 s on an H100, against 1.61 s
    # warm); it is reported apart, and the rate comes from the warm calls after it.
    _, first, _ = best_time(lambda: ml.encode(texts), args.device, 1)
    emb, secs, peak = best_time(lambda: ml.encode(texts), args.device, args.repeats)
    out = {"texts": len(texts), "tokens": ntok, "encode_first_s": round(first, 2), "encode_s": round(secs, 2),
           "encode_tok_s": round(ntok / secs),
           "encode_peak_gpu_mb" if args.device.startswith("cuda") else "encode_peak_rss_mb": round(peak / 2**20, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "texts.txt", Path(tmp) / "emb.npy"
        src.write_text("\n".join(texts) + "\n", encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        wall, rss, _ = _run([sys.executable, "-m", "minilm.cli", "encode", "--input", str(src), "--output", str(dst),
                             "-m", args.model, "--device", args.device, "--no-progress"], env)
        got = np.load(dst)
        out.update(cli_s=round(wall, 2), cli_peak_rss_mb=round(rss / 2**20), cli_rows=int(got.shape[0]),
                   cli_max_abs_vs_encode=float(np.abs(got[:1000].astype(np.float32) - emb[:1000].astype(np.float32)).max()))
    print(f"  scale: {out}")
    res["scale"] = out


# ------------------------------------------------------------------------- summary
def summarize(res) -> list[tuple[str, str, str]]:
    """(goal, measured, PASS/MISS/n/a) lines."""
    lines = []
    sweep = res.get("sweep", [])
    tok = res.get("tokenize", {})

    def verdict(ok):
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    for w in ("short", "long"):
        ml = [r for r in sweep if r["workload"] == w and r["engine"] == "minilm"]
        if not ml:
            continue
        best = max(ml, key=lambda r: r["tok_s"])
        d = next((r for r in ml if r["batch"] == 32), None)
        st = max((r for r in sweep if r["workload"] == w and r["engine"] == "sentence-transformers"),
                 key=lambda r: r["tok_s"], default=None)
        pipe = next((r for r in sweep if r["workload"] == w and r["engine"] == "minilm-pipeline"), None)
        if d:
            share = d["tok_s"] / best["tok_s"]
            lines.append((f"1 defaults fast ({w}): encode b32 >= 90% of best (b{best['batch']})",
                          f"{d['tok_s']:,} vs {best['tok_s']:,} tok/s = {share:.0%}", verdict(share >= GOALS["default_share"])))
            goal = GOALS[f"{w}_tok_s"]
            ceiling = tok.get(w)
            limited = ceiling is not None and ceiling < goal
            ok = d["tok_s"] >= goal or (limited and d["tok_s"] >= GOALS["tokenize_share"] * ceiling)
            msg = f"{d['tok_s']:,} tok/s (goal {goal / 1e6:.1f}M)"
            if ceiling:
                msg += f"; tokenize-only {ceiling:,} -> {d['tok_s'] / ceiling:.0%}" + (" (tokenizer-limited)" if limited else "")
            if st:
                msg += f"; x{d['tok_s'] / st['tok_s']:.1f} vs sentence-transformers b{st['batch']}"
            lines.append((f"3 end to end ({w}), encode defaults", msg, verdict(ok)))
        if pipe:
            lines.append((f"  cuda_pipeline.encode_texts ({w}, b32)", f"{pipe['tok_s']:,} tok/s"
                          + (f" = {pipe['tok_s'] / tok[w]:.0%} of tokenize-only" if tok.get(w) else ""), ""))
        cos = min(r["min_cos"] for r in sweep if r["workload"] == w and r["engine"].startswith("minilm"))
        # The carried model stores float16 weights (the carry is capped at 64 MiB): the
        # reference is then float32 compute on those weights.
        ref_note = " (fp32 compute, fp16-stored weights)" if "fp16" in str(res.get("model", "")) else ""
        lines.append((f"5 fidelity ({w}): min cos vs sentence-transformers fp32 >= 0.9999", f"{cos:.7f}{ref_note}",
                      verdict(cos >= GOALS["min_cos"])))
        diffs = [r.get("max_abs_vs_b32", 0.0) for r in sweep if r["workload"] == w and r["engine"].startswith("minilm")]
        lines.append((f"5 batch invariance ({w}): bitwise over batch sizes and the pipeline", f"max abs {max(diffs)}",
                      verdict(max(diffs) == 0.0)))
        peak = max(r["peak_mb"] for r in ml)
        lines.append((f"5 peak memory ({w}), minilm", f"{peak:,.0f} MiB (budget {cp.DEFAULT_TOKEN_BUDGET} tokens)", ""))
    busy = res.get("busy", {})
    if "pipeline_ids_b32" in busy:
        for k, v in busy.items():
            if isinstance(v, dict):
                ok = v["busy_share"] >= GOALS["busy"] if k == "pipeline_ids_b32" and "note" not in busy else None
                note = f" [{busy['note']}]" if "note" in busy else ""
                lines.append((f"2 GPU busy >= 70%: {k}", f"{v['busy_share']:.0%} ({v['gpu_busy_s']} of {v['wall_s']} s){note}",
                              verdict(ok) if ok is not None else ""))
    elif busy:
        lines.append(("2 GPU busy >= 70%", busy.get("note", "?"), "n/a"))
    cold = res.get("coldstart")
    if cold:
        lines.append(("4 cold start: minilm encode 'hello world', warm Triton cache <= 3 s",
                      f"{cold['cli_warm_cache_s']} s (empty cache {cold['cli_empty_cache_s']} s); "
                      + ", ".join(f"{k} {v}" for k, v in cold["stages_warm_cache_s"].items()),
                      verdict(cold["cli_warm_cache_s"] <= GOALS["cold_warm_s"])))
    sc = res.get("scale")
    if sc:
        lines.append((f"scale: {sc['texts']:,} short texts", f"encode {sc['encode_s']} s warm ({sc['encode_tok_s']:,} tok/s), first call "
                      f"{sc.get('encode_first_s', '?')} s; "
                      f"CLI --output {sc['cli_s']} s, peak RSS {sc['cli_peak_rss_mb']} MB, "
                      f"max abs vs encode {sc['cli_max_abs_vs_encode']}", ""))
    for r in res.get("chunks", []):
        if "share_of_tokenize" in r:
            lines.append((f"  chunk schedule ({r['workload']}, {r['texts']:,} texts): {r['schedule']}",
                          f"{r['tok_s']:,} tok/s = {r['share_of_tokenize']:.0%} of tokenize-only", ""))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sections", default="sweep,busy,tokenize,coldstart,scale",
                    help="comma-separated subset; also: chunks (chunk schedules A/B)")
    ap.add_argument("--short-n", type=int, default=30000, help="short texts (all of STS-B dev+train: ~14.5k)")
    ap.add_argument("--long-n", type=int, default=2101)
    ap.add_argument("--scale-n", type=int, default=200_000)
    ap.add_argument("--batch-sizes", default="32,128,512,2048")
    ap.add_argument("--st-batch-sizes", default="32,128,512")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--chunk-workloads", default=None, help="chunks section: workloads in order (short,long,short_x8)")
    ap.add_argument("--chunk-schedules", default=None, help="chunks section: ';'-separated CHUNK_SCHEDULES names")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the plumbing")
    args = ap.parse_args(argv)
    if args.smoke:
        args.short_n, args.long_n, args.scale_n, args.repeats = 48, 4, 200, 1
        args.batch_sizes, args.st_batch_sizes = "32,64", "32"
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.st_batch_sizes = [int(b) for b in args.st_batch_sizes.split(",")]
    args.model = args.model or default_model()
    sections = set(args.sections.split(","))

    from sentence_transformers import SentenceTransformer as STModel

    print(f"# bench_gpu_pipeline  model={args.model}  device={args.device}  {hardware(args.device)}")
    cuda = args.device.startswith("cuda")
    res: dict = {"device": hardware(args.device), "torch": torch.__version__, "smoke": args.smoke, "model": args.model}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu_pipeline{'_smoke' if args.smoke else ''}.json"
    path.unlink(missing_ok=True)
    ml = minilm.SentenceTransformer(args.model, device=args.device, dtype=torch.float16 if cuda else torch.float32)
    if args.smoke:  # the repository's own text: a smoke run needs no ../shared/data
        short, _, long = load_smoke(args.short_n, args.long_n)
        workloads = {"short": short, "long": long}
    else:
        workloads = {"short": load_short_all(args.short_n), "long": load_long(args.long_n)}

    def sweep():
        st = STModel(args.model, device=args.device)
        st32 = STModel(args.model, device=args.device).float()
        if cuda:
            st.half()
        section_sweep(args, ml, st, st32, workloads, res)

    runs = {"sweep": sweep, "busy": lambda: section_busy(args, ml, workloads, res),
            "tokenize": lambda: section_tokenize(args, ml, workloads, res),
            "coldstart": lambda: section_coldstart(args, res), "scale": lambda: section_scale(args, ml, workloads, res),
            "chunks": lambda: section_chunks(args, ml, workloads, res)}
    for name, run in runs.items():
        if name in sections:
            run()
            # Saved after every section, so a run cut short by the time budget still reports.
            path.write_text(json.dumps(res, indent=1))
    print(f"# wrote {path}")
    print_summary(res)
    return 0


def print_summary(res) -> None:
    lines = summarize(res)
    if not lines:
        print("\n(no goal lines: the sections run have none)")
        return
    print(f"\n== ISSUE 11 GOALS ({res.get('device')}, torch {res.get('torch')}{', SMOKE' if res.get('smoke') else ''})")
    w0 = max(len(g) for g, _, _ in lines)
    for goal, measured, verdict in lines:
        print(f"   {verdict:4}  {goal.ljust(w0)}  {measured}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--summary":  # re-print a saved run: --summary FILE.json
        print_summary(json.loads(Path(sys.argv[2]).read_text()))
        sys.exit(0)
    sys.exit(main())
