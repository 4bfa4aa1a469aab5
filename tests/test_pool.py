"""A pool of boards behind a tracker: three TVM RPC servers on loopback. Points are measured on
several boards at once; a stopped board and a killed one cost only the points they were on
(recorded as failed, with the reason), none is measured twice or lost, and the sweep resumes."""

import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import REPO, run_advisor
from test_rpc import free_port, start, stop, wait_for

COUNTS = "8,16,24,32,40,48"


def _serving_intervals(log_text: str) -> list[tuple[dt.datetime, dt.datetime]]:
    """(start, end) of each session a server's log shows."""
    stamp = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO"
    starts = [dt.datetime.fromisoformat(s) for s in re.findall(stamp + r" start serving", log_text)]
    ends = [dt.datetime.fromisoformat(s) for s in re.findall(stamp + r" finish serving", log_text)]
    return list(zip(starts, ends))


class Pool:
    def __init__(self, folder, boards: int = 3) -> None:
        self.folder, self.port = folder, free_port()
        with open(folder / "tracker.log", "w") as log:
            self.tracker = start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", self.port,
                                 "--port-end", self.port + 1, log=log)
        wait_for(folder / "tracker.log", "bind to")
        self.servers = [self._server(i) for i in range(boards)]
        self.wait_registered(boards)

    def _server(self, index: int):
        with open(self.folder / f"server{index}.log", "a") as log:
            server = start("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", free_port(), "--port-end",
                           65000, "--tracker", f"127.0.0.1:{self.port}", "--key", "pool", log=log)
        wait_for(self.folder / f"server{index}.log", "bind to")
        return server

    def restart(self, index: int) -> None:
        self.servers[index] = self._server(index)

    def wait_registered(self, boards: int, timeout: float = 60.0) -> None:
        """Until the tracker lists `boards` free boards of the key (an event, not a sleep)."""
        from tvm import rpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = rpc.connect_tracker("127.0.0.1", self.port).summary()["queue_info"]
            if queue.get("pool", {}).get("free", 0) >= boards:
                return
            time.sleep(0.2)
        raise AssertionError(f"the tracker never listed {boards} free boards")

    def log(self, index: int) -> str:
        return (self.folder / f"server{index}.log").read_text()

    def close(self) -> None:
        for server in self.servers:
            try:
                os.killpg(server.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            stop(server)
        stop(self.tracker)


def _rows(db):
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT channels, status, error, measured_at FROM points ORDER BY channels").fetchall()


def _sweep(folder, port, *extra):
    return ["sweep", "--model", "tinynet", "--layer", "conv2", "--channels", COUNTS, "--trials", "0", "--threads",
            "1", "--tracker", f"127.0.0.1:{port}", "--key", "pool", *extra]


def test_a_pool_measures_several_points_at_once(tmp_path):
    pool = Pool(tmp_path)
    try:
        # each point's timing lasts longer than its compiling here, so the boards overlap
        result = run_advisor(*_sweep(tmp_path, pool.port, "--repeats", "60"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        rows = _rows(tmp_path / "advisor.db")
        assert [r[0] for r in rows] == [8, 16, 24, 32, 40, 48] and {r[1] for r in rows} == {"ok"}
        sessions = [(s, e, i) for i in range(3) for s, e in _serving_intervals(pool.log(i))]
        used = {i for _, _, i in sessions}
        assert len(used) >= 2, sessions
        overlapping = [(a, b) for a in sessions for b in sessions
                       if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]]
        assert overlapping, f"no two boards measured at once: {sessions}"
    finally:
        pool.close()


def test_a_stopped_and_a_killed_board_cost_only_their_points(tmp_path):
    pool = Pool(tmp_path)
    try:
        os.killpg(pool.servers[0].pid, signal.SIGSTOP)  # hangs: registered, never answers
        running = subprocess.Popen([sys.executable, "-m", "advisor", *_sweep(tmp_path, pool.port, "--repeats", "40",
                                                                             "--board-timeout", "10")],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for(tmp_path / "server1.log", "start serving", timeout=300, count=1)
        stop(pool.servers[1])  # dies with a point on it (or before its next)
        _, stderr = running.communicate(timeout=600)
        rows = _rows(tmp_path / "advisor.db")
        assert [r[0] for r in rows] == [8, 16, 24, 32, 40, 48]  # every point once: none lost, none twice
        failed = [r for r in rows if r[1] == "failed"]
        assert running.returncode == 1 and failed, stderr
        assert all(re.search(r"^(hung|cannot reach|lost the board|the measuring process crashed)", r[2]) for r in failed), failed
        assert any("hung" in r[2] for r in failed), failed  # the stopped board timed out
        assert any(r[1] == "ok" for r in rows)
        kept = {r[0]: r[3] for r in rows if r[1] == "ok"}

        os.killpg(pool.servers[0].pid, signal.SIGCONT)  # the boards are back: the same command resumes
        pool.restart(1)
        pool.wait_registered(2)
        again = run_advisor(*_sweep(tmp_path, pool.port, "--repeats", "40", "--board-timeout", "60"), cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        final = _rows(tmp_path / "advisor.db")
        assert [r[1] for r in final] == ["ok"] * 6
        assert {r[0]: r[3] for r in final if r[0] in kept} == kept  # not measured again
    finally:
        pool.close()
