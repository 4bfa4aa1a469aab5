import os
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.board.timing import TimingPolicy

REPO = Path(__file__).resolve().parents[1]
ADVISOR = [sys.executable, "-m", "advisor"]
# for tests whose checks depend on a curve's shape: many samples shorter than a scheduler's time
# slice, whose minimum is an uninterrupted run even where other processes load every core (5
# samples of 5 ms each missed the active sweep's stop rule on a loaded machine)
STEADY_TIMING = TimingPolicy(repeats=50, min_sample_ms=0.1)


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
