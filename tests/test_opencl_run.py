"""OpenCL executed: a tuned sweep and a runtime-only bundle on an OpenCL device (PoCL on the CPU),
each output checked against PyTorch. TVM's wheel carries no OpenCL runtime: these run where one
is found beside TVM's or in $ADVISOR_TVM_RUNTIME_PATH (docs/boards.md), and skip elsewhere."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import REPO, run_advisor

TINY = ["--model", "tinynet", "--layer", "conv4", "--target", "opencl", "--threads", "1", "--repeats", "3"]


def _opencl_device() -> str | None:
    code = ("from advisor.board.runtime import device_for, device_words\n"
            "d = device_for('opencl')\nprint(device_words('opencl', d) if d.exist else '')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    return result.stdout.strip() or None


DEVICE = _opencl_device()
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no OpenCL runtime for TVM here (the wheel has none; "
                                "set ADVISOR_TVM_RUNTIME_PATH to a folder holding libtvm_runtime_opencl.so)")


def test_tuned_opencl_sweep_runs_and_matches_pytorch(tmp_path):
    result = run_advisor("sweep", *TINY, "--channels", "8,12", "--trials", "2", "--cost-model", "random",
                         "--no-second-opinion", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "advisor.db") as connection:
        rows = connection.execute("SELECT channels, status, max_abs_err, trials_run, device, median_ms "
                                  "FROM points ORDER BY channels").fetchall()
    assert [r[0] for r in rows] == [8, 12]
    for channels, status, error, trials_run, device, median_ms in rows:
        assert status == "ok" and error <= 1e-3 and trials_run >= 1 and median_ms > 0
        assert device == DEVICE and device.startswith("opencl:")


def test_opencl_bundle_runs_with_the_runtime_alone(tmp_path):
    made = run_advisor("bundle", "b", *TINY, "--channels", "8,16", "--trials", "0", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    measured = run_advisor("measure", "b", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["compiler_loaded"] is False and results["device"] == DEVICE
    assert [r["status"] for r in results["results"]] == ["ok", "ok"]
    assert all(r["max_abs_err"] <= 1e-3 and r["median_ms"] > 0 for r in results["results"])
    # the gate rejects a wrong answer: a reference off by 1 is recorded as a failure
    import numpy as np

    path = tmp_path / "b" / "c16.npz"
    arrays = dict(np.load(path))
    arrays["reference"] = arrays["reference"] + 1.0
    np.savez(path, **arrays)
    run_advisor("measure", "b", cwd=tmp_path, check=True)
    results = json.loads((tmp_path / "b" / "results.json").read_text())["results"]
    assert results[0]["status"] == "ok" and results[1]["status"] == "failed"
    assert "differs from PyTorch" in results[1]["error"]
    assert os.environ.get("TVM_USE_RUNTIME_LIB") is None  # the runtime-only mode was the child's alone
