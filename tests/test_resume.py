"""Kill a tuned sweep right after its first point lands; the rerun keeps it and measures the rest."""

import os
import signal
import sqlite3
import subprocess

from conftest import ADVISOR, REPO


def _ok_rows(db):
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute(
                "SELECT channels, measured_at, median_ms FROM points WHERE status='ok' ORDER BY channels").fetchall()
    except sqlite3.OperationalError:  # the table is not created yet
        return []


def test_killed_sweep_resumes_without_losing_or_remeasuring(workdir):
    args = [*ADVISOR, "sweep", "--model", "tinynet", "--layer", "conv4", "--channels", "4..16:4", "--trials", "2",
            "--strategy", "exhaustive", "--repeats", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    line = ""
    try:
        for line in process.stderr:  # a point's line is printed once its row is committed
            if "c=4: " in line:
                break  # the next point is being tuned: seconds before its row can land
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: MetaSchedule's workers too
        process.wait()
    assert "(1/4 done" in line, line
    db = workdir / "advisor.db"
    before = _ok_rows(db)
    assert [row[0] for row in before] == [4], "the sweep should have been killed after its first point"

    rerun = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    after = _ok_rows(db)
    assert [row[0] for row in after] == [4, 8, 12, 16]
    # the finished points are kept as they were, not re-measured by the sweep; only a second
    # opinion (a suspect measured again in a fresh process, runs = 2) may replace a timing
    with sqlite3.connect(db) as connection:
        runs = dict(connection.execute("SELECT channels, runs FROM points WHERE status='ok'").fetchall())
    assert all(row in after or runs[row[0]] == 2 for row in before)
    assert f"{len(before)} of 4 points already in" in rerun.stderr
