"""recommend killed part way (SIGKILL, as an out-of-memory kill or a lost session would) loses
nothing it measured: the rerun keeps every point stored before the kill, measures only what is
missing, and a run after that measures nothing at all."""

import os
import signal
import sqlite3
import subprocess
import time

from conftest import ADVISOR, REPO

ARGS = ["recommend", "--model", "tinynet", "--input", "1x3x32x32", "--budget-ms", "80%", "--threads", "1",
        "--samples", "4", "--repeats", "3", "--db", "r.db"]


def _points(db):
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        try:
            return connection.execute("SELECT id, layer, channels, measured_at FROM points ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the table is being created
            return []


def test_a_killed_recommendation_resumes_and_then_measures_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([*ADVISOR, *ARGS], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(_points(tmp_path / "r.db")) < 6 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    before = _points(tmp_path / "r.db")
    assert process.returncode == -signal.SIGKILL and len(before) >= 6

    rerun = subprocess.run([*ADVISOR, *ARGS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode in (0, 2), rerun.stderr
    after = _points(tmp_path / "r.db")
    assert after[:len(before)] == before  # nothing stored before the kill was measured again
    assert "resuming" in rerun.stderr

    again = subprocess.run([*ADVISOR, *ARGS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == rerun.returncode, again.stderr
    assert _points(tmp_path / "r.db") == after  # no layer measured again
    assert "side by side" not in again.stderr and "read from the journal" in again.stderr
    assert (tmp_path / "out" / "plan.journal.json").is_file()
