"""recommend on trained networks with a data set: the built-in network trained on images resized to
its input, every network fine-tuned alike and scored on held-out images, a user's network with
grouped and depthwise convolutions and a residual add compiled by TVM, and its artifact run by a
process that has only TVM's runtime. A slice of digits and one epoch keep it short."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from advisor.errors import AdvisorError
from advisor.model.datasets import fit_to_input, load_digits, split
from conftest import REPO, run_advisor

FAST = ["--threads", "1", "--samples", "3", "--repeats", "3", "--epochs", "1", "--finetune", "1"]
GROUPED = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        """groups=4 between odd widths, a depthwise convolution, a residual add."""
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Conv2d(1, 12, 3, 1, 1, bias=False); self.bn0 = nn.BatchNorm2d(12)
            self.grouped = nn.Conv2d(12, 20, 3, 1, 1, groups=4, bias=False); self.bn1 = nn.BatchNorm2d(20)
            self.dw = nn.Conv2d(20, 20, 3, 2, 1, groups=20, bias=False); self.bn2 = nn.BatchNorm2d(20)
            self.pw = nn.Conv2d(20, 20, 1, bias=False); self.bn3 = nn.BatchNorm2d(20)
            self.fc = nn.Linear(20, classes)

        def forward(self, x):
            x = torch.relu(self.bn0(self.stem(x)))
            x = torch.relu(self.bn1(self.grouped(x)))
            x = torch.relu(self.bn2(self.dw(x)))
            x = x + torch.relu(self.bn3(self.pw(x)))
            return self.fc(x.mean((2, 3)))

    def factory():
        torch.manual_seed(1)
        return Net()

    def three_classes():
        return Net(classes=3)
''')


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A slice of digits (400 images) as an .npz, the user's network file, and a model cache."""
    root = tmp_path_factory.mktemp("recommend-data")
    digits = load_digits()
    x = torch.cat([digits.x_train, digits.x_test])[:400, 0].numpy()
    y = torch.cat([digits.y_train, digits.y_test])[:400].numpy()
    np.savez(root / "slice.npz", x=x, y=y)
    np.savez(root / "three.npz", x=x[y < 3], y=y[y < 3])
    (root / "net.py").write_text(GROUPED)
    return root


def _points(db):
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT id, measured_at FROM points ORDER BY id").fetchall()


def _advisor(folder, *args):
    os.environ["ADVISOR_MODEL_CACHE"] = str(folder / "models")  # trained weights stay in the test's folder
    try:
        return run_advisor("recommend", *args, cwd=folder)
    finally:
        del os.environ["ADVISOR_MODEL_CACHE"]


def test_fit_to_input_resizes_after_the_split():
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)[:, None]
    data = split(x, np.arange(40) % 4, ["a", "b", "c", "d"], "toy", 0.25, 0)
    fitted = fit_to_input(data, (1, 3, 16, 16))
    assert fitted.image_shape == (3, 16, 16) and fitted.name == "toy@3x16x16"
    assert torch.equal(fitted.y_test, data.y_test) and torch.equal(fitted.x_train[:, 0], fitted.x_train[:, 2])
    # bilinear: the mean of each image is kept
    assert torch.allclose(fitted.x_test.mean((1, 2, 3)), data.x_test.mean((1, 2, 3)), atol=1e-5)
    with pytest.raises(AdvisorError, match="takes 2 channels"):
        fit_to_input(fit_to_input(data, (1, 3, 8, 8)), (1, 2, 8, 8))


def test_built_in_network_trained_and_compared_with_accuracy(folder):
    """tinynet trained on the slice resized to its 32x32 input; four networks fine-tuned alike and
    scored on the held-out images; a rerun reads every timing back and measures nothing new."""
    args = ["--model", "tinynet", "--input", "1x3x32x32", "--data", "slice.npz", "--budget-ms", "80%", *FAST,
            "--db", "built-in.db", "-o", "out/built-in.json", "--page", "out/built-in.html"]
    first = _advisor(folder, *args)
    assert first.returncode in (0, 2), first.stdout + first.stderr
    assert "training tinynet on npz:slice.npz@3x32x32 for 1 epochs" in first.stderr
    plan = json.loads((folder / "out" / "built-in.json").read_text())
    assert set(plan["networks"]) == {"unpruned", "recommended", "uniform", "uniform-r8"}
    scoring = plan["scoring"]
    assert scoring["test_images"] + scoring["train_images"] == 400 and 110 <= scoring["test_images"] <= 130
    assert scoring["finetune_epochs"] == 1
    for network in plan["networks"].values():
        assert 0 <= network["score_before_finetune"] <= 1 and 0 <= network["score"] <= 1
        assert network["measured_ms"] > 0 and network["flops"] > 0
    assert plan["networks"]["recommended"]["parameters"] < plan["networks"]["unpruned"]["parameters"]
    assert "acc % after" in first.stdout and "uniform-r8" in first.stdout
    page = (folder / "out" / "built-in.html").read_text()
    assert "plotly" in page and "on its latency curve" in page
    # the fine-tuned recommended network is what was saved
    program = torch.export.load(str(folder / "out" / "pruned.pt2"))
    assert program.module()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    points = _points(folder / "built-in.db")
    second = _advisor(folder, *args)
    assert second.returncode == first.returncode
    assert "read from the journal" in second.stderr and "side by side" not in second.stderr
    assert "training tinynet" not in second.stderr and _points(folder / "built-in.db") == points
    again = json.loads((folder / "out" / "built-in.json").read_text())
    assert again["networks"] == plan["networks"] and again["units"] == plan["units"]


def test_classes_that_do_not_match_the_head_are_one_line(folder):
    result = _advisor(folder, "--model", "net.py:factory", "--input", "1x1x16x16", "--data", "three.npz",
                      "--budget-ms", "1", *FAST)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "has 3 classes but net.py:factory gives 10" in errors[0]


def test_grouped_user_network_through_tvm_and_its_artifact_on_the_runtime_alone(folder):
    """The user's network (its own weights) with TVM's default schedules (--trials 0, to stay short):
    pruned, fine-tuned, compiled and exported; the artifact then checked against PyTorch's output and
    timed by a process where only TVM's runtime loads and PyTorch cannot be imported."""
    result = _advisor(folder, "--model", "net.py:three_classes", "--input", "1x1x16x16", "--data", "three.npz",
                      "--budget-ms", "85%", "--backend", "tvm", "--trials", "0", *FAST, "--db", "tvm.db",
                      "--tuning-dir", "tl", "-o", "out/tvm.json", "--artifact", "out/tvm-artifact")
    assert result.returncode in (0, 2), result.stdout + result.stderr
    plan = json.loads((folder / "out" / "tvm.json").read_text())
    units = {u["root"]: u for u in plan["units"]}
    assert all(u["keep"] % u["multiple"] == 0 for u in units.values()) and units["stem"]["multiple"] == 4
    assert plan["backend"] == "tvm" and plan["artifact"].endswith("manifest.json")
    manifest = json.loads((folder / "out" / "tvm-artifact" / "manifest.json").read_text())
    assert manifest["format"] == "advisor-network" and len(manifest["points"]) == 4
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['measure', 'out/tvm-artifact']\n"
            "runpy.run_module('advisor.board.measure', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    measured = json.loads((folder / "out" / "tvm-artifact" / "results.json").read_text())
    assert measured["compiler_loaded"] is False
    rows = {row["key"]["network"]: row for row in measured["results"]}
    assert set(rows) == {"unpruned", "recommended", "uniform", "uniform-r8"}
    assert all(row["status"] == "ok" and row["max_abs_err"] <= 1e-3 and row["median_ms"] > 0 for row in rows.values())
