"""Kill a tuned sweep after its first point lands; the rerun keeps it and measures the rest."""

import os
import signal
import sqlite3
import subprocess
import time

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
            "--repeats", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    db = workdir / "advisor.db"
    deadline = time.time() + 600
    while not _ok_rows(db) and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: MetaSchedule's workers too
    process.wait()
    before = _ok_rows(db)
    assert 1 <= len(before) < 4, "the sweep should have been killed part way"

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
