"""The import graph: no circles, and the layers below the glue never import it.

Run as a script for the report: ``python -m tests.test_architecture`` prints the circles (module-level imports and
all imports, function-level ones included).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "wiseft_lab"
# Layers that the fine-tuning and the pipeline are built on: they must not import either.
LOWER = ("models", "data", "evaluation", "weight_space")
UPPER = ("wiseft_lab.training", "wiseft_lab.pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(function_level: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``function_level``: imports inside functions count too)."""
    paths = {module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree) if function_level else tree.body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("function_level", [False, True], ids=["module-level", "all"])
def test_no_import_circles(function_level):
    assert circles(import_graph(function_level)) == []


def test_the_lower_layers_never_import_training_or_the_pipeline():
    offending = {module: sorted(t for t in targets if t.startswith(UPPER))
                 for module, targets in import_graph().items() if module.split(".")[1:2] and
                 module.split(".")[1] in LOWER}
    assert {m: t for m, t in offending.items() if t} == {}


def test_data_sets_know_no_models():
    """Data sources name their prompt sets; the registry of templates (models/) resolves them."""
    assert {m: sorted(t for t in targets if t.startswith("wiseft_lab.models"))
            for m, targets in import_graph().items()
            if m.startswith("wiseft_lab.data") and any(t.startswith("wiseft_lab.models") for t in targets)} == {}


def test_the_check_can_fail():
    """A circle and an upward import planted in a toy graph are found."""
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(toy) == [["a", "b", "c"]]


if __name__ == "__main__":
    for level in (False, True):
        found = circles(import_graph(function_level=level))
        print(f"{'all imports' if level else 'module-level imports'}: {len(found)} circles")
        for component in found:
            print("   ", " <-> ".join(component))
    sys.exit(0)
