"""Two sweeps started together on one database, fresh and then existing: both start, and every point
they measured is stored once (the store's open is one write transaction; advisor.store.results)."""

import os
import re
import sqlite3
import subprocess

from conftest import ADVISOR, REPO

SWEEP = [*ADVISOR, "sweep", "--model", "tinynet", "--backend", "torch", "--threads", "1", "--repeats", "2",
         "--strategy", "exhaustive", "--no-second-opinion"]
# one line per finished point when the output is a log: "conv4 torch/llvm c=8: 0.0123 ms (1/3 done ...)"
POINT_LINE = re.compile(r"^conv\d torch/llvm c=(\d+): \d+\.\d+ ms \((\d+)/(\d+) done")


def _together(workdir, *channel_lists, layer):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    running = [subprocess.Popen([*SWEEP, "--layer", layer, "--channels", channels], cwd=workdir, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for channels in channel_lists]
    outputs = [process.communicate(timeout=600)[1] for process in running]
    for process, stderr in zip(running, outputs):
        assert process.returncode == 0, stderr
    return outputs


def _one_line_per_measured_point(stderr, counts):
    """What a sweep printed to a log: one line per point it measured (a point the other sweep stored
    first is reused), numbered as they finished, and its total."""
    lines = [match for match in map(POINT_LINE.match, stderr.splitlines()) if match]
    measured = [int(match.group(1)) for match in lines]
    assert measured == sorted(measured) and set(measured) <= set(counts), stderr
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [(k, len(lines)) for k in range(1, len(lines) + 1)]
    assert f"{len(measured)} measured, {len(counts) - len(measured)} reused" in stderr, stderr


def _rows(db):
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT layer, channels, status FROM points ORDER BY layer, channels").fetchall()


def test_two_sweeps_at_once_on_a_fresh_and_on_an_existing_database(workdir):
    # overlapping counts: both sweeps ask for 8 and 12, and each key is still one row
    fresh = _together(workdir, "4,8,12", "8,12,16", layer="conv4")
    assert _rows(workdir / "advisor.db") == [("conv4", c, "ok") for c in (4, 8, 12, 16)]
    for stderr, counts in zip(fresh, ([4, 8, 12], [8, 12, 16])):
        _one_line_per_measured_point(stderr, counts)

    existing = _together(workdir, "4,8", "8,16", layer="conv3")
    for stderr, counts in zip(existing, ([4, 8], [8, 16])):
        _one_line_per_measured_point(stderr, counts)
    assert _rows(workdir / "advisor.db") == ([("conv3", c, "ok") for c in (4, 8, 16)]
                                             + [("conv4", c, "ok") for c in (4, 8, 12, 16)])
