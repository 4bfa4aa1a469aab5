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
