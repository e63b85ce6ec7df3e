"""The library imports cleanly module by module, and its data areas form no import cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "workbench"


def library_modules() -> list[str]:
    """Every module of the library, in a fixed (sorted) order (``__main__`` runs the CLI)."""
    names = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def imports_of(module: str, known: set[str]) -> set[str]:
    """The library modules ``module`` imports, at its top or inside functions."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts).with_suffix(".py")
    if not path.is_file():
        path = ROOT.joinpath(*parts, "__init__.py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return (found & known) - {module}


def cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A chain of imports from ``start`` back to itself, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        module, chain = stack.pop()
        for dep in sorted(graph[module]):
            if dep == start:
                return chain + [start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, chain + [dep]))
    return None


def test_each_library_module_imports_first_in_a_fresh_interpreter() -> None:
    # One interpreter for all (third-party packages stay loaded), but every library module is
    # imported with no other workbench module loaded, so a cycle at import time shows here
    # whatever module a user (or a spawned worker) happens to import first.
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {library_modules()!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'workbench' or m.startswith('workbench.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=-3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_datasets_and_the_areas_that_use_it_form_no_import_cycle() -> None:
    known = set(library_modules())
    graph = {module: imports_of(module, known) for module in known}
    areas = ["workbench.datasets", "workbench.export", "workbench.pipeline",
             "workbench.people.queue"] + sorted(m for m in known if m.startswith("workbench.captions."))
    cycles = {m: cycle_through(m, graph) for m in areas}
    assert {m: c for m, c in cycles.items() if c} == {}
    assert not [m for m in known if "workbench.pipeline" in graph[m]], "only Home uses the overview"
