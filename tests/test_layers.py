"""The house's layering, checked on every run: imports go one way, from the command line down to ``core``.

The contract, top to bottom (a folder may import from its own floor's folder and any floor below it, never
from above, and the folders named on one floor never import each other)::

    cli
    adapters | listening | demo
    voices
    generate
    training
    evaluation | diffusion | extract
    core

``adapters`` is the top-level ``adapters/`` folder, installed as ``toucan_speakemb.adapters``. Every import
counts, also one placed inside a function: moving an import into a function does not make it legal.
The same check runs from the shell as ``python tests/test_layers.py`` (it prints each forbidden import).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "toucan_speakemb"

LAYERS: List[Tuple[str, ...]] = [
    ("cli",),
    ("adapters", "listening", "demo"),
    ("voices",),
    ("generate",),
    ("training",),
    ("evaluation", "diffusion", "extract"),
    ("core",),
]
FLOOR: Dict[str, int] = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def source_files() -> Iterator[Tuple[str, Path]]:
    """(dotted module name, path) of every module of the installed package, adapters included."""
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        parts = [PACKAGE] + list(path.relative_to(ROOT).with_suffix("").parts)
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported_modules(module: str, path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute dotted name) of every project import in a file, at any depth."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from package import module` imports the module: name it, so that circles through it show
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = target == PACKAGE or (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() \
                    or (ROOT / Path(*sub.split("."))).is_dir()
                yield node.lineno, sub if is_module else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def room_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1]


def violations() -> List[str]:
    found = []
    for module, path in source_files():
        here = room_of(module)
        if here is None:  # the package's own __init__: the public API, re-exporting from every floor
            continue
        if here not in FLOOR:
            found.append(f"{path.relative_to(ROOT)}: the folder '{here}' is on no floor of the contract")
            continue
        for line, target in imported_modules(module, path):
            there = room_of(target)
            if target == PACKAGE:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports the package's public __init__ "
                             f"(import from the module that defines the name)")
            elif there is None or there == here:
                continue
            elif there not in FLOOR:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {target}, on no floor of the contract")
            elif FLOOR[there] < FLOOR[here]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target} from a floor above")
            elif FLOOR[there] == FLOOR[here]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {here} and {there} share a floor and must not "
                             f"import each other ({target})")
    return found


def module_cycles() -> List[List[str]]:
    """Import circles between modules (every import, also inside functions), by depth-first search."""
    graph: Dict[str, Set[str]] = {}
    modules = dict(source_files())
    for module, path in modules.items():
        edges = set()
        for _, target in imported_modules(module, path):
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != module and target != PACKAGE:
                edges.add(target)
        graph[module] = edges
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n.endswith("__init__") or n == PACKAGE:
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state and m != PACKAGE:
            visit(m)
    return cycles


def test_every_import_follows_the_layers():
    bad = violations()
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_module_imports_itself_in_a_circle():
    cycles = [c for c in module_cycles() if not any(PACKAGE + ".__init__" in m for m in c)]
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_a_forbidden_import_is_caught(tmp_path, monkeypatch):
    # The checker itself: a core module that imports the generator must be reported.
    fake_root = tmp_path
    (fake_root / PACKAGE / "core").mkdir(parents=True)
    (fake_root / "adapters").mkdir()
    (fake_root / PACKAGE / "__init__.py").write_text("")
    (fake_root / PACKAGE / "core" / "__init__.py").write_text("")
    (fake_root / PACKAGE / "core" / "bad.py").write_text(
        "def f():\n    from toucan_speakemb.generate.generator import Generator\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    bad = violations()
    assert len(bad) == 1 and "core imports toucan_speakemb.generate.generator from a floor above" in bad[0]


if __name__ == "__main__":
    problems = violations() + [" -> ".join(c) for c in module_cycles()]
    print("\n".join(problems) or "layers: every import follows the contract; no circle")
    sys.exit(1 if problems else 0)
