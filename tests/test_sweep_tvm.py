"""Real MetaSchedule tuning and TVM compilation of a tiny layer, through the CLI."""

import json
import sqlite3

from conftest import run_advisor

# conv4 has 32 output channels: 40 widens it
SWEEP = ["sweep", "--model", "tinynet", "--layer", "conv4", "--channels", "16,40", "--trials", "4",
         "--repeats", "5"]


def _rows(db):
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM points ORDER BY channels")]


def _records(workdir):
    files = list((workdir / "tuning_logs").glob("*/database_tuning_record.json"))
    assert len(files) == 1
    return files[0].read_text().count("\n")


def test_tuned_sweep_matches_pytorch_then_reuses_schedules(workdir):
    first = run_advisor(*SWEEP, cwd=workdir, check=True)
    rows = _rows(workdir / "advisor.db")
    assert [(r["channels"], r["original_channels"], r["widened"]) for r in rows] == [(16, 32, 0), (40, 32, 1)]
    for row in rows:
        assert row["status"] == "ok" and row["backend"] == "tvm" and row["target"] == "llvm"
        assert row["max_abs_err"] <= 1e-3
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"] and row["repeats"] == 5
        assert row["trials_run"] == 4 and row["schedules_reused"] == 0 and row["tuning_seconds"] > 0
        if row["trap_check"] in ("confirmed", "luck-retune"):  # a trap the replay left: tuned again, another seed
            assert row["trials_spent"] > 4
        elif row["trap_check"] == "luck-replay":  # the faster count's (at most 4) schedules replayed, not retuned
            assert 4 <= row["trials_spent"] <= 8
        else:  # no trap, or the trap's faster count: never retuned
            assert row["trials_spent"] == 4 and row["tuning_stop"] == "cap"  # cap 4: the rule's patience is 16
        assert row["tvm_version"].startswith("0.27") and row["torch_version"] and row["cpu_model"]
        assert json.loads(row["target_config"])["mcpu"]  # tuned for this CPU, not generic x86-64
    assert "2 measured" in first.stderr
    records = _records(workdir)

    # same schedules, new database: nothing is tuned again
    again = run_advisor(*SWEEP, "--db", "second.db", cwd=workdir, check=True)
    assert _records(workdir) == records
    second = _rows(workdir / "second.db")
    assert all(r["schedules_reused"] == 1 and r["trials_run"] == 0 for r in second)
    assert "2 measured" in again.stderr

    # same database: the points are not measured again
    third = run_advisor(*SWEEP, cwd=workdir, check=True)
    assert "0 measured, 2 reused" in third.stderr
    assert _rows(workdir / "advisor.db") == rows


def test_torch_backend_and_widened_depthwise(workdir):
    run_advisor("sweep", "--model", "tinynet", "--layer", "conv2", "--channels", "8,16,24", "--backend", "torch",
                "--repeats", "3", cwd=workdir, check=True)
    rows = _rows(workdir / "advisor.db")
    assert [(r["channels"], r["in_channels"], r["groups"], r["widened"]) for r in rows] == [
        (8, 8, 8, 0), (16, 16, 16, 0), (24, 24, 24, 1)]
    assert all(r["trials"] == 0 and r["median_ms"] > 0 for r in rows)
    shown = run_advisor("show", "--format", "json", cwd=workdir, check=True)
    assert len(json.loads(shown.stdout)) == 3
    csv = run_advisor("show", "--format", "csv", cwd=workdir, check=True)
    assert csv.stdout.count("\n") == 4
    page = run_advisor("plot", "--layer", "conv2", "--output", "p.html", cwd=workdir, check=True)
    assert "wrote p.html" in page.stderr and "plotly" in (workdir / "p.html").read_text()[:100000].lower()
