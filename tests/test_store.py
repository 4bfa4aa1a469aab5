import sqlite3

import pytest

from advisor.errors import AdvisorError
from advisor.store.results import ResultStore


def _point(channels, **more):
    return {"model": "m", "input_shape": "1x3x8x8", "layer": "conv1", "module_path": "conv1", "backend": "torch",
            "target": "llvm", "target_config": "{}", "dtype": "float32", "trials": 0, "threads": 1,
            "channels": channels, "original_channels": 8, "widened": int(channels > 8), "status": "ok",
            "median_ms": 1.0, **more}


def test_points_persist_and_keys_identify_them(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.save(_point(4))
        store.save(_point(12, status="failed", error="boom"))
    with ResultStore(path) as store:  # reopened: the rows were committed
        keys = store.measured_keys(layer="conv1")
        frame = store.frame()
    assert len(frame) == 2 and set(frame.widened) == {0, 1}
    assert len(keys) == 1 and next(iter(keys))[-1] == 4  # failed points are measured again


def test_refuses_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my precious notes")
    with pytest.raises(AdvisorError, match="not an advisor database"):
        ResultStore(path)
    assert path.read_text() == "my precious notes"


def test_refuses_someone_elses_sqlite(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (name TEXT)")
    with pytest.raises(AdvisorError, match="something else"):
        ResultStore(path)


def test_refuses_a_corrupt_database(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        for channels in range(1, 300):
            store.save(_point(channels, error="x" * 200))
    data = bytearray(path.read_bytes())
    data[4096:12288] = b"\xff" * 8192  # smash pages after the header
    path.write_bytes(bytes(data))
    with pytest.raises(AdvisorError, match="corrupt"):
        ResultStore(path)


def test_missing_folder(tmp_path):
    with pytest.raises(AdvisorError, match="does not exist"):
        ResultStore(tmp_path / "nope" / "r.db")


def _open_and_save(path, channels, barrier, failures) -> None:
    """One process: wait for the others, then open (or create) the database and write one point."""
    barrier.wait()
    try:
        with ResultStore(path) as store:
            store.save(_point(channels))
    except BaseException as error:  # reported to the parent, which fails the test
        failures.put(f"process {channels}: {type(error).__name__}: {error}")


def test_one_fresh_database_opened_by_8_processes_at_once_20_times(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")  # started in milliseconds, so the opens overlap
    failures = context.SimpleQueue()
    for attempt in range(20):
        path = tmp_path / f"fresh{attempt}.db"
        barrier = context.Barrier(8)
        processes = [context.Process(target=_open_and_save, args=(path, channels, barrier, failures))
                     for channels in range(1, 9)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        messages = []
        while not failures.empty():
            messages.append(failures.get())
        assert not messages, f"attempt {attempt}: " + "; ".join(messages)
        assert [process.exitcode for process in processes] == [0] * 8
        with sqlite3.connect(path) as connection:  # every point there once, the schema made once
            channels = [row[0] for row in connection.execute("SELECT channels FROM points ORDER BY channels")]
            meta = connection.execute("SELECT key, value FROM advisor_meta ORDER BY key").fetchall()
        assert channels == list(range(1, 9)), f"attempt {attempt}"
        assert meta == [("format", "advisor-results"), ("schema_version", "1")]
