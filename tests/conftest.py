import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ADVISOR = [sys.executable, "-m", "advisor"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch directory as the working directory: its own advisor.db and tuning_logs/."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_advisor(*args, cwd, timeout=900, check=False):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([*ADVISOR, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"advisor {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result
