"""Each bad input: a one-line error, exit status 2, no traceback, nothing measured lost."""

import sqlite3

import pytest

from conftest import run_advisor

SWEEP = ["sweep", "--model", "tinynet", "--layer", "conv4", "--backend", "torch", "--repeats", "2",
         "--strategy", "exhaustive"]


@pytest.mark.parametrize("args, words", [
    (["sweep", "--model", "nosuchnet", "--layer", "conv1"], "unknown model"),
    (["sweep", "--model", "tinynet", "--layer", "conv99"], "no layer 'conv99'"),
    ([*SWEEP, "--channels", "abc"], "malformed channel range"),
    ([*SWEEP, "--channels", "64..32"], "reversed"),
    ([*SWEEP, "--channels", "8..16:0"], "step must be at least 1"),
    ([*SWEEP, "--channels", "0..16"], "channels must be at least 1"),
    ([*SWEEP, "--channels", "8", "--target", "tpu"], "unknown target"),
    ([*SWEEP, "--channels", "8", "--threads", "0"], "--threads must be at least 1, not 0"),
    ([*SWEEP, "--channels", "8", "--repeats", "0"], "--repeats must be at least 2"),
    ([*SWEEP, "--channels", "8", "--dtype", "x"], "unknown dtype 'x'"),
    ([*SWEEP, "--channels", "8", "--strategy", "greedy"], "unknown strategy"),
    ([*SWEEP, "--channels", "8", "--cost-model", "gbm"], "unknown cost model"),
    ([*SWEEP, "--channels", "8", "--accuracy", "2"], "--accuracy must be a share"),
    (["plot", "--layer", "conv4", "--db", "missing.db"], "does not exist"),
    (["steps", "--db", "missing.db"], "does not exist"),
    (["fit", "--db", "missing.db"], "does not exist"),
    (["fit", "--statistic", "mean"], "unknown statistic"),
    (["fit", "--test-share", "1.5"], "--test-share must be between 0 and 1"),
    (["bundle", "out", "--model", "tinynet", "--layer", "conv4", "--channels", "x", "--trials", "0"],
     "malformed channel range"),
    (["bundle", "out", "--model", "tinynet", "--layer", "conv4", "--channels", "8", "--trials", "0", "--dtype", "x"],
     "unknown dtype 'x'"),
    (["bundle", "out", "--model", "tinynet", "--layer", "conv4", "--channels", "8", "--target", "tpu"],
     "unknown target"),
    (["measure", "nowhere"], "not a bundle"),
    ([*SWEEP, "--channels", "8", "--target", '{"kind": "llvm"'], "does not parse"),
    ([*SWEEP, "--channels", "8", "--backend", "onnx"], "unknown backend"),
    (["show", "--db", "missing.db"], "does not exist"),
    (["show", "--format", "xml"], "unknown format"),
    (["layers", "--model", "nosuch.py:build", "--input", "1x3x8x8"], "does not exist"),
    # the shared options are checked before the model is loaded (a missing file would say "does not exist")
    (["sweep", "--model", "nosuch.py:build", "--input", "1x3x8x8", "--layer", "conv1", "--repeats", "0"],
     "--repeats must be at least 2"),
    (["recommend", "--budget-ms", "5", "--model", "nosuch.py:build", "--input", "1x3x8x8", "--cost-model", "q"],
     "unknown cost model 'q'"),
])
def test_bad_input_gives_one_line_error(workdir, args, words):
    _one_line_error(run_advisor(*args, cwd=workdir), words)
    assert not (workdir / "out").exists()  # a refused bundle writes nothing


def _one_line_error(result, words):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_a_target_without_its_device_here_is_refused(workdir):
    from advisor.compile.targets import parse_target

    if parse_target("cuda").can_run_here():
        pytest.skip("this machine has a CUDA device: nothing to refuse")
    _one_line_error(run_advisor(*SWEEP, "--channels", "8", "--target", "cuda", cwd=workdir),
                    "no device on this machine")


def test_commands_that_read_points_refuse_a_database_without_them(workdir):
    """plot, steps and fit on a database that holds only a failed point: nothing to draw or learn."""
    from advisor.store.results import ResultStore

    with ResultStore(workdir / "advisor.db") as store:
        store.save({"model": "tinynet", "input_shape": "1x3x16x16", "layer": "conv4", "module_path": "conv4",
                    "backend": "torch", "target": "llvm", "target_config": "{}", "dtype": "float32", "trials": 0,
                    "threads": 1, "channels": 8, "original_channels": 32, "widened": 0, "status": "failed",
                    "error": "boom"})
    _one_line_error(run_advisor("plot", "--layer", "conv4", cwd=workdir), "no measured points for layer 'conv4'")
    _one_line_error(run_advisor("steps", "--layer", "conv4", cwd=workdir), "no measured points for layer 'conv4'")
    _one_line_error(run_advisor("fit", cwd=workdir), "no measured points in advisor.db")


def test_database_not_ours_is_left_untouched(workdir):
    (workdir / "notes.db").write_text("not a database")
    result = run_advisor(*SWEEP, "--channels", "8", "--db", "notes.db", cwd=workdir)
    assert result.returncode == 2 and "not an advisor database" in result.stderr
    assert (workdir / "notes.db").read_text() == "not a database"
    with sqlite3.connect(workdir / "other.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    result = run_advisor(*SWEEP, "--channels", "8", "--db", "other.db", cwd=workdir)
    assert result.returncode == 2 and "something else" in result.stderr


def test_bad_range_after_measuring_keeps_points(workdir):
    run_advisor(*SWEEP, "--channels", "8,16", cwd=workdir, check=True)
    result = run_advisor(*SWEEP, "--channels", "16..8", cwd=workdir)
    assert result.returncode == 2
    with sqlite3.connect(workdir / "advisor.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM points WHERE status='ok'").fetchone()[0] == 2
