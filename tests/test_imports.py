"""Dependencies point one way: no import cycles among dereverb's modules, and inference (a model
file in, enhanced audio out) never reaches training code.

Imports are read with ``ast`` from the source, every ``import`` statement wherever it stands
(module level, inside a function, under ``TYPE_CHECKING``), so a lazy import counts as much as
a top-level one.  docs/ARCHITECTURE.md draws the graph these rules keep.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dereverb"

# What `enhance`, `export`, `info` and the Python API need: a model file in, audio out.
INFERENCE = {
    "dereverb", "dereverb.errors", "dereverb.config", "dereverb.audio", "dereverb.spectral", "dereverb.wpe",
    "dereverb.causal", "dereverb.model", "dereverb.checkpoint", "dereverb.chunking", "dereverb.outputs", "dereverb.enhance",
    "dereverb.workers", "dereverb.corpus", "dereverb.export", "dereverb.streaming", "dereverb.cli.enhance",
    "dereverb.cli.export", "dereverb.cli.info", "dereverb.cli.stream",
}
# Only training (and preparing its data) needs these.
TRAINING = {
    "dereverb.train", "dereverb.batches", "dereverb.runlog", "dereverb.validation", "dereverb.losses", "dereverb.data",
    "dereverb.paired", "dereverb.convolver", "dereverb.noise", "dereverb.store", "dereverb.shards",
    "dereverb.cli.train", "dereverb.cli.prepare",
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The dereverb modules ``path`` imports (relative imports resolved; ``from . import x`` is
    module ``x`` when it is one)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import dereverb.x.y` names module dereverb.x.y or a parent
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {name: imports_of(path, set(files), root) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, with the module that imports it."""
    seen, todo = {}, [start]
    while todo:
        v = todo.pop()
        for w in sorted(graph[v]):
            if w not in seen and w != start:
                seen[w] = v
                todo.append(w)
    return seen


def inference_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b"`` for every import by which an inference module reaches a module outside
    :data:`INFERENCE`."""
    bad = set()
    for start in sorted(INFERENCE & set(graph)):
        for target, via in reach(graph, start).items():
            if target not in INFERENCE:
                bad.add(f"{via} -> {target}" + (" (training)" if target in TRAINING else ""))
    return sorted(bad)


def test_every_listed_module_exists():
    graph = import_graph()
    assert INFERENCE <= set(graph) and TRAINING <= set(graph)
    assert not INFERENCE & TRAINING


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_inference_never_imports_training_or_evaluation():
    assert inference_violations(import_graph()) == []


def third_party_importers(name: str, root: Path = PACKAGE) -> set[str]:
    """The dereverb modules that import the top-level package ``name``."""
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == name for n in names):
                found.add(module_name(path, root))
    return found


def test_only_audio_opens_audio_files():
    assert third_party_importers("soundfile") == {"dereverb.audio"}


def test_only_the_entry_point_imports_the_command_line():
    graph = import_graph()
    users = {m for m, deps in graph.items() if any(d == "dereverb.cli" or d.startswith("dereverb.cli.") for d in deps)}
    assert {m for m in users if not m.startswith("dereverb.cli")} == {"dereverb.__main__"}


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package's sources to break on purpose."""
    root = tmp_path / "dereverb"
    for path in PACKAGE.rglob("*.py"):
        target = root / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return root


def test_the_checks_catch_a_cycle_and_an_inference_import_of_training(package_copy):
    assert cycles(import_graph(package_copy)) == [] and inference_violations(import_graph(package_copy)) == []
    with open(package_copy / "config.py", "a") as f:  # lazy, as such imports usually hide
        f.write("\n\ndef _bad():\n    from .checkpoint import load\n")
    assert any({"dereverb.config", "dereverb.checkpoint"} <= set(c) for c in cycles(import_graph(package_copy)))
    with open(package_copy / "enhance.py", "a") as f:
        f.write("\n\nif False:\n    from . import train\n")
    assert "dereverb.enhance -> dereverb.train (training)" in inference_violations(import_graph(package_copy))
