"""The package's shape: subpackages that import in a fresh interpreter, imports that point one way,
a board package that runs without PyTorch, and backends told apart in one place only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "advisor"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _imported_advisor_modules(path: Path) -> set[str]:
    """Every advisor module a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("advisor"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("advisor")}
    return found


def _unit(module: str) -> str | None:
    """The subpackage (or top-level module) an advisor module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        unit = relative.parts[0].removesuffix(".py")
        if unit in ("__init__", "__main__"):
            continue
        graph.setdefault(unit, set())
        for module in _imported_advisor_modules(path):
            other = _unit(module)
            if other is None or other == unit:
                continue
            if (PACKAGE / other).is_dir() or (PACKAGE / f"{other}.py").is_file():
                graph[unit].add(other)
    return graph


def test_the_package_is_in_subpackages():
    assert {"board", "cli", "compile", "learn", "measure", "model", "pareto", "prune", "report", "store"} <= set(
        SUBPACKAGES)
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "errors.py", "progress.py"]


def test_no_import_circle_among_subpackages():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for other in sorted(graph.get(unit, ())):
            if state.get(other) == "open":
                raise AssertionError(f"import circle: {' -> '.join(path + [unit, other])}")
            if other not in state:
                visit(other, path + [unit])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])
    # the board side sits at the bottom: it imports nothing of advisor but errors
    assert graph["board"] <= {"errors"}, graph["board"]
    assert graph["store"] <= {"errors"} and graph["errors"] == set()


def test_the_circle_check_finds_a_circle(tmp_path, monkeypatch):
    """The check above is able to fail: a planted import of cli from store is a circle."""
    planted = {unit: set(others) for unit, others in import_graph().items()}
    planted["store"].add("cli")
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: planted)
    with pytest.raises(AssertionError, match="import circle"):
        test_no_import_circle_among_subpackages()


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_imports_in_a_fresh_interpreter(name):
    modules = sorted(f"advisor.{name}." + ".".join(p.relative_to(PACKAGE / name).with_suffix("").parts)
                     for p in (PACKAGE / name).rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in [f"advisor.{name}", *modules])
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_board_package_imports_without_pytorch():
    modules = sorted(f"advisor.board.{p.stem}" for p in (PACKAGE / "board").glob("*.py") if p.stem != "__init__")
    code = ("import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
            "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
            + "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_backends_are_told_apart_only_in_their_registry():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(f'{op} "{name}"' in line for op in ("==", "!=") for name in ("tvm", "torch")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
