"""Sweeps and MetaSchedule tuning through a real TVM RPC server (and tracker) on loopback."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_advisor

TINY = ["--model", "tinynet", "--layer", "conv2", "--threads", "1", "--repeats", "3", "--strategy",
        "exhaustive"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(module: str, *args, log) -> subprocess.Popen:
    """A TVM server or tracker in its own process group (the server forks its workers)."""
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(path, text: str, timeout: float = 60.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.read_text().count(text) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}:\n{path.read_text()}")


def wait_for_board(tracker_port: int, key: str = "board", timeout: float = 60.0) -> None:
    """Until the tracker lists a free board of `key` (the server registers after it binds)."""
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = rpc.connect_tracker("127.0.0.1", tracker_port).summary()["queue_info"]
        if queue.get(key, {}).get("free", 0) >= 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"no board of key {key!r} registered with the tracker within {timeout:g} s")


def stop(process: subprocess.Popen) -> None:
    """End the process and the workers it forked (its own process group, by its id)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture
def rpc_server(tmp_path):
    port, log_path = free_port(), tmp_path / "server.log"
    with open(log_path, "w") as log:
        server = start("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", port, "--port-end", port + 1,
                       log=log)
    wait_for(log_path, "bind to")
    yield port, log_path
    stop(server)


def rows(db):
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM points ORDER BY channels")]


def test_sweep_and_tuning_run_on_the_rpc_server(tmp_path, rpc_server):
    port, log = rpc_server
    result = run_advisor("sweep", *TINY, "--channels", "8", "--trials", "2", "--cost-model", "random",
                         "--rpc", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = rows(tmp_path / "advisor.db")
    assert row["status"] == "ok" and row["median_ms"] > 0 and row["max_abs_err"] <= 1e-3
    assert row["device"] == f"llvm over rpc 127.0.0.1:{port}"
    assert row["trials_run"] == 2 and not row["schedules_reused"]
    # the tuner's candidates were measured by the server: 2 candidates, then the final variant
    assert log.read_text().count("load_module") >= 3
    records = (tmp_path / "tuning_logs" / "llvm" / "database_tuning_record.json").read_text().splitlines()
    run_seconds = [json.loads(line)[1][1][0] for line in records]
    assert len(run_seconds) == 2 and all(0 < s < 1 for s in run_seconds)  # real times, not failures


def test_tracker_pool_board_dropping_mid_sweep_costs_only_unfinished_points(tmp_path):
    tracker_port, server_log = free_port(), tmp_path / "server.log"
    with open(tmp_path / "tracker.log", "w") as log:
        tracker = start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", tracker_port,
                        "--port-end", tracker_port + 1, log=log)
    wait_for(tmp_path / "tracker.log", "bind to")
    server_args = ("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", free_port(), "--port-end", 65000,
                   "--tracker", f"127.0.0.1:{tracker_port}", "--key", "board")
    sweep = ["sweep", *TINY, "--channels", "8,16,24", "--trials", "0", "--tracker", f"127.0.0.1:{tracker_port}",
             "--key", "board"]
    running = None
    try:
        with open(server_log, "w") as log:
            server = start(*server_args, log=log)
        wait_for(server_log, "bind to")
        wait_for_board(tracker_port)
        running = subprocess.Popen(
            [sys.executable, "-m", "advisor", *sweep], cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        line = ""
        for line in running.stderr:  # printed once the first point's row is committed
            if "c=8: " in line:
                break
        assert "c=8: " in line and "(1/3 done" in line, line
        os.killpg(running.pid, signal.SIGSTOP)  # the second point cannot reach the board before it drops
        stop(server)  # the board drops
        os.killpg(running.pid, signal.SIGCONT)
        _, stderr = running.communicate(timeout=300)
        stderr = line + stderr
        assert running.returncode == 1, stderr
        first = rows(tmp_path / "advisor.db")
        assert first[0]["status"] == "ok" and first[0]["device"].endswith("key board")
        assert all(row["status"] == "failed" and "cannot reach" in row["error"] for row in first[1:])
        assert "failed" in stderr

        with open(server_log, "a") as log:  # the board is back: the same command resumes
            server = start(*server_args, log=log)
        wait_for_board(tracker_port)
        again = run_advisor(*sweep, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "resuming: 1 of 3" in again.stderr
        final = rows(tmp_path / "advisor.db")
        assert [row["status"] for row in final] == ["ok"] * 3
        assert final[0]["measured_at"] == first[0]["measured_at"]  # not measured again
    finally:
        if running is not None and running.poll() is None:
            stop(running)
        stop(server)
        stop(tracker)


def test_unreachable_board_is_a_one_line_error(tmp_path):
    result = run_advisor("sweep", *TINY, "--channels", "8", "--rpc", f"127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: cannot reach rpc 127.0.0.1:")
    result = run_advisor("sweep", *TINY, "--tracker", "127.0.0.1:9190", cwd=tmp_path)
    assert result.returncode == 2 and "--tracker needs --key" in result.stderr
