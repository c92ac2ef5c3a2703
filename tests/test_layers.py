"""The package's layers: imports go downward only, and no module of
``scratchnet`` or ``opencl_ext`` is in an import cycle.

Every ``import`` statement counts, at module level or inside a function
(a function-level import only hides a cycle, it does not break one).  The
layers, bottom up::

    scratchnet.validation, scratchnet.backends, scratchnet.arrays
    scratchnet.nn         layers, networks, costs, optimizers, checkpoints
    scratchnet.engine     epoch runners
    scratchnet.monitors   guard, TensorBoard, checkpointer, progress
    scratchnet.fit        the driver and the front ends sgd, train
    scratchnet            the public namespace

``opencl_ext`` is a plugin beside the backends: it may import the backend
contract and nothing above it, and the core never imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scratchnet", "opencl_ext")

#: Rank of each layer (a module may import its own rank or a lower one).
LAYERS = [
    ("scratchnet.validation", 0), ("scratchnet.backends", 1), ("scratchnet.arrays", 2),
    ("opencl_ext", 2), ("scratchnet.nn", 3), ("scratchnet.engine", 4),
    ("scratchnet.monitors", 5), ("scratchnet.fit", 6), ("scratchnet", 7),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules) -> set[str]:
    """Every module of ours that ``path`` imports, anywhere in the file
    (``from package import module`` counts as the module; the packages a
    module sits in are imported implicitly and are not edges)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            subs = [f"{prefix}.{alias.name}" for alias in node.names]
            targets = [m for m in subs if m in modules] or [prefix]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    edges = {}
    for name, path in modules.items():
        edges[name] = {t for t in imports_of(path, modules) if t in modules and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def rank(module: str) -> int:
    best = max((prefix for prefix, _ in LAYERS
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return dict(LAYERS)[best]


def test_no_module_is_in_an_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_hidden_cycle():
    """The check can fail: a function-level import back up the layers, as
    the guard once made, is a cycle."""
    edges = graph()
    edges["scratchnet.monitors.guard"].add("scratchnet.fit.sgd")
    assert any("scratchnet.monitors.guard" in c and "scratchnet.fit.sgd" in c
               for c in cycles(edges))


def test_imports_go_downward_only():
    upward = [(a, b) for a, targets in graph().items() for b in targets
              if rank(b) > rank(a)]
    assert upward == []


def test_the_core_never_imports_the_plugin():
    leaks = [(a, b) for a, targets in graph().items() for b in targets
             if a.startswith("scratchnet") and b.startswith("opencl_ext")]
    assert leaks == []
