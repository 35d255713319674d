"""CPU peers: minilm (fp32, bf16, int8) against the engines CPU users pick for speed.

One process, the same texts for every engine, runs alternating between engines (repeat 1 of
every engine, then repeat 2, ...), median of the repeats:

- sentence-transformers, torch backend, fp32 and bf16;
- sentence-transformers ``backend="onnx"``: fp32 and dynamic int8 (avx512_vnni);
- sentence-transformers ``backend="openvino"``: default (bf16 on a CPU with bf16 units),
  forced f32, and static int8 calibrated on STS-train sentences with sentence-transformers'
  own defaults (300 samples, padded to 384, ``OVQuantizationConfig()``) -- its export would
  download glue/sst2 from the hub, which this benchmark never does;
- minilm fp32, bf16, int8.

Workloads: "short" = STS-dev sentences (fidelity: STS Spearman x100), "long" = SciFact
abstracts truncated at 256 tokens. Fidelity is the cosine to sentence-transformers fp32 on
the same texts. Peers whose packages are missing are skipped with a message. The peer
packages are the benchmark-only extra ``minilm[bench]`` (sentence-transformers 6.2 cannot
install both of its extras; 5.1.2 can, with older transformers and huggingface-hub), so they
get a venv of their own:

    python3 -m venv ../peers-venv && ../peers-venv/bin/pip install torch==2.13.0
    ../peers-venv/bin/pip install -e ".[bench]"
    ../peers-venv/bin/python benchmarks/bench_cpu_peers.py
    python benchmarks/bench_cpu_peers.py --smoke    # minilm only, tiny, no data needed

An AVX2-only CPU can be emulated on a newer one by capping the libraries' instruction sets
(see ``minilm.cpu_features.ISA_CAP_VARIABLES``); the table then says so:

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        ../peers-venv/bin/python benchmarks/bench_cpu_peers.py --engines "ST torch fp32,minilm"
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import minilm  # noqa: E402
from _common import cpu_flag_set, cpu_model_name  # noqa: E402
from minilm.cpu_features import isa_caps  # noqa: E402
from bench_encode import PeakMemory, cosines, data_dir, load_long, load_short, spearman  # noqa: E402

SMOKE_TEXTS = ["A man is playing a guitar.", "Two dogs run across a snowy field.", "ok",
               "The committee will meet again after the summer holidays to review the budget. " * 6,
               "How do I reset my password?", "Heavy rain flooded the valley overnight."]


def cpu_flags() -> dict[str, bool]:
    flags = cpu_flag_set()
    return {"AVX2": "avx2" in flags, "AVX512F": "avx512f" in flags, "AVX512_BF16": "avx512_bf16" in flags,
            "AVX512_VNNI": "avx512_vnni" in flags, "AVX_VNNI": "avx_vnni" in flags,
            "AMX_INT8": "amx_int8" in flags, "AMX_BF16": "amx_bf16" in flags}


def cpu_name() -> str:
    return cpu_model_name() or platform.processor() or "cpu"


# --------------------------------------------------------------------------- engines
def _st(path, **kw):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", **kw)


def st_torch(path, dtype):
    m = _st(path)
    return m.to(dtype) if dtype != torch.float32 else m


def st_onnx_int8(path, work: Path):
    from sentence_transformers import export_dynamic_quantized_onnx_model

    folder = work / "onnx_int8"
    shutil.copytree(path, folder, dirs_exist_ok=True)
    export_dynamic_quantized_onnx_model(_st(str(folder), backend="onnx"), "avx512_vnni", str(folder))
    return _st(str(folder), backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"})


def st_openvino_int8(path, work: Path, calib: list[str]):
    """sentence-transformers' export_static_quantized_openvino_model, with local text instead
    of the hub's glue/sst2: same quantizer, config, sample count and padding."""
    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    folder = work / "openvino_int8"
    shutil.copytree(path, folder, dirs_exist_ok=True)
    model = _st(str(folder), backend="openvino")
    qcfg = OVQuantizationConfig()
    texts = calib[: qcfg.num_samples or 300]
    ds = Dataset.from_dict({"sentence": texts}).map(
        lambda ex: model.tokenizer(ex["sentence"], padding="max_length", max_length=384, truncation=True),
        batched=True, remove_columns=["sentence"])
    out = work / "ov_q"
    OVQuantizer.from_pretrained(model[0].auto_model).quantize(ds, save_directory=str(out),
                                                              ov_config=OVConfig(quantization_config=qcfg))
    (folder / "openvino").mkdir(exist_ok=True)
    xml = next(out.rglob("*.xml"))  # where optimum puts it varies between versions
    shutil.copy(xml, folder / "openvino" / "openvino_model_qint8_quantized.xml")
    shutil.copy(xml.with_suffix(".bin"), folder / "openvino" / "openvino_model_qint8_quantized.bin")
    return _st(str(folder), backend="openvino",
               model_kwargs={"file_name": "openvino/openvino_model_qint8_quantized.xml"})


def engine_factories(path: str, smoke: bool, work: Path, calib: list[str]):
    """(name, precision, factory) in table order; peers only outside --smoke."""
    ml = lambda **kw: (lambda: minilm.SentenceTransformer(path, device="cpu", **kw))  # noqa: E731
    peers = [
        ("ST torch", "fp32", lambda: st_torch(path, torch.float32)),
        ("ST torch", "bf16", lambda: st_torch(path, torch.bfloat16)),
        ("ST onnx", "fp32", lambda: _st(path, backend="onnx")),
        ("ST onnx", "int8 dynamic (avx512_vnni)", lambda: st_onnx_int8(path, work)),
        ("ST openvino", "default (bf16 on bf16 CPUs)", lambda: _st(path, backend="openvino")),
        ("ST openvino", "f32", lambda: _st(path, backend="openvino",
                                           model_kwargs={"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}})),
        ("ST openvino", "int8 static (calibrated)", lambda: st_openvino_int8(path, work, calib)),
    ]
    mine = [("minilm", "fp32", ml()), ("minilm", "bf16", ml(dtype="bfloat16")), ("minilm", "int8", ml(quantize="int8"))]
    return mine if smoke else peers + mine


def load_engines(path, smoke, work, calib, only: list[str] | None = None):
    engines = []
    for name, prec, factory in engine_factories(path, smoke, work, calib):
        if only and not any(o.lower() in f"{name} {prec}".lower() for o in only):
            continue
        try:
            t = time.perf_counter()
            eng = factory()
            engines.append((name, prec, eng, time.perf_counter() - t))
        except ImportError as e:
            print(f"# skipped {name} {prec}: missing package ({e})", flush=True)
        except Exception as e:  # a peer's export failing should not end the comparison
            print(f"# skipped {name} {prec}: {type(e).__name__}: {e}", flush=True)
    return engines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="minilm only, a few texts, no data files needed")
    ap.add_argument("--short-n", type=int, default=3000, help="STS-dev sentences (3000 = every pair)")
    ap.add_argument("--long-n", type=int, default=300, help="SciFact abstracts")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--engines", default=None,
                    help="comma-separated parts of 'engine precision' names to run, e.g. 'ST torch fp32,minilm'")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from minilm.hub import bundled_model_path

    path = args.model or str(bundled_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    if args.smoke:
        workloads, gold, calib, repeats = {"short": SMOKE_TEXTS, "long": SMOKE_TEXTS[::-1]}, None, [], 1
    else:
        short, gold = load_short(args.short_n)
        workloads = {"short": short, "long": load_long(args.long_n)}
        calib_rows, _ = load_short_train(300)
        calib, repeats = calib_rows, args.repeats

    flags = cpu_flags()
    print(f"# bench_cpu_peers  {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print("# CPU flags: " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()))
    caps = isa_caps()
    if caps:  # an older CPU emulated on this one: the libraries were told to use less
        print("# instruction sets capped by: " + " ".join(f"{k}={v}" for k, v in caps.items()))
    print(f"# python {platform.python_version()}  torch {torch.__version__}  minilm {minilm.__version__}"
          + _peer_versions())
    with tempfile.TemporaryDirectory() as tmp:
        engines = load_engines(path, args.smoke, Path(tmp), calib,
                               args.engines.split(",") if args.engines else None)
        times = {(n, p, w): [] for n, p, _, _ in engines for w in workloads}
        rss = {(n, p): 0.0 for n, p, _, _ in engines}
        outs = {}
        tokenizer = minilm.SentenceTransformer(path).tokenizer  # one load, not one per workload
        ntok = {w: sum(len(s) for s in tokenizer.encode(t)) for w, t in workloads.items()}
        for n, p, eng, _ in engines:  # warm-up: allocators, kernel selection, OpenVINO compilation
            eng.encode(SMOKE_TEXTS, batch_size=args.batch_size)
        for r in range(repeats):
            for w, texts in workloads.items():
                for n, p, eng, _ in engines:
                    gc.collect()
                    with PeakMemory("cpu") as mem:
                        t = time.perf_counter()
                        emb = eng.encode(texts, batch_size=args.batch_size)
                        times[(n, p, w)].append(time.perf_counter() - t)
                    rss[(n, p)] = max(rss[(n, p)], (mem.base + mem.peak) / 2**20)  # the whole process
                    outs[(n, p, w)] = np.asarray(emb, dtype=np.float32)
            print(f"# repeat {r + 1}/{repeats} done", flush=True)
    ref_key = ("ST torch", "fp32") if ("ST torch", "fp32") in rss else ("minilm", "fp32")
    rows = []
    for n, p, _, load_s in engines:
        row = {"engine": n, "precision": p, "load_s": load_s, "peak_rss_mb": rss[(n, p)]}
        for w, texts in workloads.items():
            secs = statistics.median(times[(n, p, w)])
            cos = cosines(outs[(n, p, w)], outs[ref_key + (w,)])
            row.update({f"{w}_texts_s": len(texts) / secs, f"{w}_tokens_s": ntok[w] / secs, f"{w}_s": secs,
                        f"{w}_min_cos": float(cos.min()), f"{w}_mean_cos": float(cos.mean())})
        if gold is not None:
            e = outs[(n, p, "short")]
            row["sts_spearman"] = spearman(cosines(e[0::2], e[1::2]), gold[: len(e) // 2])
        rows.append(row)
    report(rows, list(workloads), ref_key)
    return 0


def load_short_train(n: int):
    """Calibration sentences for OpenVINO's static int8: STS-train, disjoint from STS-dev."""
    sents = []
    with open(data_dir() / "sts-train.tsv", encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) >= 7:
                sents += [p[5], p[6]]
            if len(sents) >= n:
                break
    return sents[:n], None


def _peer_versions() -> str:
    out = []
    for mod in ("sentence_transformers", "onnxruntime", "openvino", "optimum.intel"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            out.append(f"{mod} missing")
    return "  " + "  ".join(out)


def report(rows, workloads, ref_key):
    print(f"\n(fidelity: cosine to {ref_key[0]} {ref_key[1]} on the same texts; speed: median of the repeats)")
    head = ["engine", "precision"] + [f"{w} texts/s" for w in workloads] + [f"{w} tok/s" for w in workloads] \
        + [f"min / mean cos {w}" for w in workloads] + ["STS Spearman x100", "peak RSS MB", "load s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["engine"], r["precision"]] + [f"{r[f'{w}_texts_s']:.1f}" for w in workloads] \
            + [f"{r[f'{w}_tokens_s']:.0f}" for w in workloads] \
            + [f"{r[f'{w}_min_cos']:.5f} / {r[f'{w}_mean_cos']:.5f}" for w in workloads] \
            + [f"{r['sts_spearman']:.3f}" if "sts_spearman" in r else "-", f"{r['peak_rss_mb']:.0f}",
               f"{r['load_s']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    # each minilm mode's speed ratio to every engine, per workload
    mine = [r for r in rows if r["engine"] == "minilm"]
    print("\nspeed ratio, minilm mode / engine (" + " / ".join(workloads) + ")")
    print("| engine | " + " | ".join(f"minilm {r['precision']}" for r in mine) + " |\n|" + "---|" * (len(mine) + 1))
    for r in rows:
        ratios = [" / ".join(f"{m[f'{w}_texts_s'] / r[f'{w}_texts_s']:.2f}" for w in workloads) for m in mine]
        print(f"| {r['engine']} {r['precision']} | " + " | ".join(ratios) + " |")
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_peers.json").write_text(json.dumps({"cpu": cpu_name(), "flags": cpu_flags(), "rows": rows,
                                                    "reference": list(ref_key)}, indent=1))
    print(f"# wrote {out / 'cpu_peers.json'}")


if __name__ == "__main__":
    sys.exit(main())
