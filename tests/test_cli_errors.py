"""Each bad input: a one-line error, exit status 2, no traceback, nothing measured lost."""

import sqlite3

import pytest

from conftest import run_advisor

SWEEP = ["sweep", "--model", "tinynet", "--layer", "conv4", "--backend", "torch", "--repeats", "2"]


@pytest.mark.parametrize("args, words", [
    (["sweep", "--model", "nosuchnet", "--layer", "conv1"], "unknown model"),
    (["sweep", "--model", "tinynet", "--layer", "conv99"], "no layer 'conv99'"),
    ([*SWEEP, "--channels", "abc"], "malformed channel range"),
    ([*SWEEP, "--channels", "64..32"], "reversed"),
    ([*SWEEP, "--channels", "8..16:0"], "step must be at least 1"),
    ([*SWEEP, "--channels", "0..16"], "channels must be at least 1"),
    ([*SWEEP, "--channels", "8", "--target", "tpu"], "unknown target"),
    ([*SWEEP, "--channels", "8", "--target", "cuda"], "no device on this machine"),
    ([*SWEEP, "--channels", "8", "--target", '{"kind": "llvm"'], "does not parse"),
    ([*SWEEP, "--channels", "8", "--backend", "onnx"], "unknown backend"),
    (["show", "--db", "missing.db"], "does not exist"),
    (["show", "--format", "xml"], "unknown format"),
    (["layers", "--model", "nosuch.py:build", "--input", "1x3x8x8"], "does not exist"),
])
def test_bad_input_gives_one_line_error(workdir, args, words):
    result = run_advisor(*args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


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
