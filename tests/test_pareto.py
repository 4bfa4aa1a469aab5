"""`advisor pareto` end to end on TinyNet and digits (default TVM schedules, one thread), its resume,
its page in headless Chromium, and its bad inputs."""

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ADVISOR, REPO, run_advisor

FAST = ["--model", "tinynet", "--sparsities", "0.7", "--ratios", "0.5", "--trials", "0", "--repeats", "2",
        "--epochs", "4", "--threads", "1", "--finetune", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pareto")
    env_cache = folder / "models"
    result = _advisor(folder, env_cache, *FAST, "--db", "p.db", "-o", "out/page.html")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, env_cache, result


def _advisor(folder, cache, *args):
    import os

    os.environ["ADVISOR_MODEL_CACHE"] = str(cache)  # trained weights go to the test's folder, not models/
    try:
        return run_advisor("pareto", *args, cwd=folder)
    finally:
        del os.environ["ADVISOR_MODEL_CACHE"]


def test_page_and_table(run):
    folder, _, result = run
    table = pd.read_csv(folder / "out" / "page.csv")
    labels = set(table.label)
    assert labels == {"baseline", "weight-global 70% +ft1", "weight-layer 70% +ft1", "channel-uniform 50% +ft1",
                      "fp16", "int8"}
    assert set(table.backend) == {"tvm", "torch"} and set(table.threads) == {1}
    baseline = table[table.label == "baseline"].accuracy.iloc[0]
    assert baseline > 0.8  # a trained network (chance is 0.1), measured on the held-out images
    assert (table.test_images == 539).all()
    assert f"{baseline:.4f}" in result.stdout
    torch_rows = table[table.backend == "torch"]
    assert (torch_rows.latency_status == "ok").all() and (torch_rows.median_ms > 0).all()
    tvm = table[table.backend == "tvm"].set_index("label")
    assert tvm.loc["baseline", "latency_status"] == "ok" and tvm.loc["baseline", "max_abs_err"] < 1e-3
    assert tvm.loc["int8", "latency_status"] == "unavailable"  # TVM cannot import PyTorch's int8 model
    assert "TVM cannot import" in tvm.loc["int8", "latency_error"]
    sizes = table.drop_duplicates("label").set_index("label").stored_bytes
    assert sizes["int8"] < sizes["fp16"] < sizes["baseline"] and sizes["weight-global 70% +ft1"] < sizes["fp16"]
    assert table.on_latency_front.any() and table.on_memory_front.any()
    html = (folder / "out" / "page.html").read_text()
    assert "Pareto front" in html and "weight-global 70% +ft1" in html and "plotly" in html


LABELS = ["baseline", "weight-global 70% +ft1", "weight-layer 70% +ft1", "channel-uniform 50% +ft1", "fp16", "int8"]


def test_a_log_gets_one_line_per_variant_and_no_third_party_noise(run):
    _, _, result = run
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    finished = [re.match(r"^(.+?): (tvm 1t .+), (torch 1t .+) \((\d)/6 done", line) for line in lines]
    finished = [match for match in finished if match]
    assert [m.group(1) for m in finished] == LABELS, result.stderr  # each as it finished, in order
    assert [int(m.group(4)) for m in finished] == [1, 2, 3, 4, 5, 6]
    assert all(re.fullmatch(r"(tvm|torch) 1t (\d+\.\d{3} ms|unavailable)", part)
               for m in finished for part in m.group(2, 3))
    # nothing else but the training notice and the summary: no profiler or compiler chatter
    others = [line for line in lines if not re.match(r"^(.+?): tvm 1t .+\(\d/6 done", line)]
    assert len(others) == 2 and others[0].startswith("training tinynet on digits"), others
    assert re.fullmatch(r"6 variants measured, 0 reused from p.db, 0 failures; wrote \S+page.html and \S+page.csv",
                        others[1]), others  # one line, however long: a log is not wrapped
    for noise in ("USDT", "profiler_start", "BlockBuilder", "Warning", "warn("):
        assert noise not in result.stderr, result.stderr


def test_killed_after_its_first_variant_resumes_without_measuring_it_again(run, tmp_path):
    """SIGKILL once the first variant is stored (its line is printed after its rows), then the same command."""
    _, cache, _ = run  # the trained network is cached: no training here
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADVISOR_MODEL_CACHE": str(cache)}
    quant = [*FAST, "--techniques", "quant", "--db", "k.db", "-o", "out/k.html"]  # baseline, fp16, int8
    process = subprocess.Popen([*ADVISOR, "pareto", *quant], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = ""
    try:
        for line in process.stderr:
            if "(1/3 done" in line:
                os.killpg(process.pid, signal.SIGKILL)  # the next variant is still being quantised
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert line.startswith("baseline:"), line
    before = _latency_rows(tmp_path / "k.db")
    assert [(variant, backend) for variant, backend, *_ in before] == [("baseline|0||ft0", "torch"),
                                                                      ("baseline|0||ft0", "tvm")], before

    again = _advisor(tmp_path, cache, *quant)
    assert again.returncode == 0, again.stderr
    assert "2 variants measured, 1 reused" in again.stderr, again.stderr
    assert "baseline: reused (1/3 done" in again.stderr
    after = _latency_rows(tmp_path / "k.db")
    assert len(after) == 6 and set(before) <= set(after)  # the baseline's rows as they were stored


def _latency_rows(db):
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT variant, backend, threads, median_ms, measured_at FROM pareto_latency "
                                  "ORDER BY variant, backend").fetchall()


def test_resume_measures_nothing_again(run):
    folder, cache, _ = run
    before = sqlite3.connect(folder / "p.db").execute("SELECT count(*), max(measured_at) FROM pareto_latency").fetchone()
    result = _advisor(folder, cache, *FAST, "--db", "p.db", "-o", "out/again.html")
    assert result.returncode == 0, result.stderr
    assert "0 variants measured, 6 reused" in " ".join(result.stderr.split())
    after = sqlite3.connect(folder / "p.db").execute("SELECT count(*), max(measured_at) FROM pareto_latency").fetchone()
    assert before == after == (12, before[1])
    assert pd.read_csv(folder / "out" / "again.csv").accuracy.equals(pd.read_csv(folder / "out" / "page.csv").accuracy)


def test_page_in_headless_chromium(run):
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    folder, _, _ = run
    png = folder / "out" / "page.png"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "pareto_screenshot.py"), str(folder / "out" / "page.html"),
                    str(png)], check=True, timeout=180)
    from PIL import Image

    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # drawn charts, not a blank or error page
    # the fronts' line colours are on the page (blue and green series of the first chart)
    rgb = {c for _, c in colours}
    assert any(abs(r - 0x1f) < 20 and abs(g - 0x77) < 20 and abs(b - 0xb4) < 20 for r, g, b in rgb)


@pytest.mark.parametrize("args, message", [
    (["--data", "/nowhere/images"], "not found"),
    (["--techniques", "weight,pruning"], "unknown technique"),
    (["--model", "resnet18"], "built-in family"),
    (["--threads", "0"], "--threads"),
    (["--backends", "onnx"], "--backends"),
    (["--plan", "/nowhere/plan.json"], "does not exist"),
])
def test_bad_inputs(tmp_path, args, message):
    result = _advisor(tmp_path, tmp_path / "models", *args, "--db", "x.db")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_bad_npz_and_raising_evaluate(tmp_path):
    import numpy as np

    np.savez(tmp_path / "bad.npz", x=np.zeros((20, 8)), y=np.zeros(20, int))
    result = _advisor(tmp_path, tmp_path / "models", "--data", str(tmp_path / "bad.npz"), "--db", "x.db")
    assert result.returncode == 2 and "expected N x H x W" in result.stderr
    (tmp_path / "ev.py").write_text("def evaluate(model):\n    raise RuntimeError('scorer broke')\n")
    result = _advisor(tmp_path, tmp_path / "models", *FAST, "--techniques", "quant", "--backends", "torch",
                      "--eval", f"{tmp_path}/ev.py:evaluate", "--db", "x.db")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the function raised RuntimeError: scorer broke" in result.stderr and "Traceback" not in result.stderr


def test_database_of_something_else(tmp_path):
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    result = _advisor(tmp_path, tmp_path / "models", "--db", str(tmp_path / "other.db"))
    assert result.returncode == 2 and "refusing to touch it" in result.stderr
