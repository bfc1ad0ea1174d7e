"""The package's folders are its layers: imports run one way, down, and never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bloodcells"
# Bottom to top: a module may import its own layer and the layers before it, never one after.
LAYERS = (
    "errors",
    "_version",
    "utils",
    "stats",
    "data",
    "cells",
    "ops",
    "models",
    "evaluation",
    "training",
    "runs",
    "analysis",
    "inference",
    "experiments",
    "viz",
    "report",
    "lab",
    "cli",
)


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("bloodcells", *parts)).removesuffix(".__init__")


def imports(file: Path, modules: set[str]) -> set[str]:
    """The bloodcells modules `file` imports, anywhere in it (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bloodcells"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bloodcells"))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = {module_name(f): f for f in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for module, file in FILES.items():
        if module == "bloodcells":  # the public API, imported lazily, names every layer
            continue
        mine = LAYERS.index(layer_of(module))
        for target in imports(file, set(FILES)):
            if target != "bloodcells" and LAYERS.index(layer_of(target)) > mine:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_circles_between_modules():
    # package __init__ files only re-export what their modules define: left out of the graph
    graph = {
        m: imports(f, set(FILES)) & set(FILES) if f.name != "__init__.py" else set()
        for m, f in FILES.items()
    }
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles)))


def test_every_module_sits_in_a_layer_folder():
    top = sorted(f.name for f in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert {layer_of(m) for m in FILES} - {"__init__"} <= set(LAYERS)
