"""The package's module graph has no cycles, and the layers point one way."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minilm"


def _graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PKG.glob("*.py")}
    graph = {}
    for p in PKG.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps.update(n for n in names if n in mods)
        graph[p.stem] = deps
    return graph


def _find_cycle(graph: dict[str, set[str]]):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles():
    assert _find_cycle(_graph()) is None, _find_cycle(_graph())


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layers_point_one_way():
    g = _graph()
    # Execution and model code never reach back to the facade or the front ends.
    for low in ("engine", "model", "varlen", "pooling", "weights", "model_folder", "multiprocess", "streaming"):
        assert not g[low] & {"sentence_transformer", "cli", "ray"}, (low, g[low])
    assert g["varlen"] == set()
