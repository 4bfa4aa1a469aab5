"""The results database: one SQLite row per measured point, committed as it lands."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pandas as pd

from advisor.errors import AdvisorError

FORMAT = "advisor-results"
SCHEMA_VERSION = 1

# What makes two points the same measurement: a sweep skips a point whose key is stored.
KEY_COLUMNS = ("model", "input_shape", "layer", "backend", "target", "dtype", "trials", "threads", "channels")

_COLUMNS = {
    "model": "TEXT NOT NULL", "input_shape": "TEXT NOT NULL", "layer": "TEXT NOT NULL",
    "module_path": "TEXT NOT NULL", "backend": "TEXT NOT NULL", "target": "TEXT NOT NULL",
    "target_config": "TEXT NOT NULL", "dtype": "TEXT NOT NULL", "trials": "INTEGER NOT NULL",
    "threads": "INTEGER NOT NULL", "channels": "INTEGER NOT NULL",
    "original_channels": "INTEGER NOT NULL", "widened": "INTEGER NOT NULL",
    # the layer's geometry at this width: what a cost model learns from
    "batch": "INTEGER", "in_channels": "INTEGER", "in_h": "INTEGER", "in_w": "INTEGER",
    "out_h": "INTEGER", "out_w": "INTEGER", "kernel_h": "INTEGER", "kernel_w": "INTEGER",
    "stride_h": "INTEGER", "stride_w": "INTEGER", "pad_h": "INTEGER", "pad_w": "INTEGER",
    "dilation_h": "INTEGER", "dilation_w": "INTEGER", "groups": "INTEGER", "bias": "INTEGER",
    "flops": "INTEGER",
    "status": "TEXT NOT NULL",  # ok | failed
    "error": "TEXT",
    "median_ms": "REAL", "mean_ms": "REAL", "std_ms": "REAL", "min_ms": "REAL", "max_ms": "REAL",
    "p25_ms": "REAL", "p75_ms": "REAL", "repeats": "INTEGER", "number": "INTEGER",
    "max_abs_err": "REAL", "trials_run": "INTEGER", "tuning_seconds": "REAL", "schedules_reused": "INTEGER",
    # processes that measured the point (a suspect gets a second opinion; the faster run is kept)
    "runs": "INTEGER DEFAULT 1", "slower_run_ms": "REAL",
    "cpu_model": "TEXT", "device": "TEXT", "hostname": "TEXT", "tvm_version": "TEXT", "torch_version": "TEXT",
    "measured_at": "TEXT NOT NULL",
}
COLUMNS = tuple(_COLUMNS)
_SQLITE_MAGIC = b"SQLite format 3\x00"


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection = _open_checked(self.path)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The open, checked connection, for modules that keep their own tables in this file."""
        return self._connection

    def measured_keys(self, **fixed) -> set[tuple]:
        """Keys of points already measured successfully (optionally filtered by column)."""
        where, values = _where(fixed, status="ok")
        rows = self._connection.execute(f"SELECT {', '.join(KEY_COLUMNS)} FROM points {where}", values)
        return {tuple(row) for row in rows}

    def save(self, point: dict) -> None:
        """Insert or replace one point and commit at once: a kill never loses it."""
        unknown = set(point) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns: {sorted(unknown)}")
        row = {**point, "measured_at": point.get("measured_at") or _now()}
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connection:
            self._connection.execute(f"INSERT OR REPLACE INTO points ({names}) VALUES ({marks})",
                                     list(row.values()))

    def frame(self, **fixed) -> pd.DataFrame:
        where, values = _where(fixed)
        return pd.read_sql_query(f"SELECT * FROM points {where} ORDER BY model, layer, backend, target, "
                                 "channels", self._connection, params=values)


def _where(fixed: dict, **more) -> tuple[str, list]:
    conditions = {**{k: v for k, v in fixed.items() if v is not None}, **more}
    if not conditions:
        return "", []
    return "WHERE " + " AND ".join(f"{column} = ?" for column in conditions), list(conditions.values())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _open_checked(path: Path) -> sqlite3.Connection:
    if path.exists():
        if path.is_dir():
            raise AdvisorError(f"{path} is a directory, not a results database")
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise AdvisorError(f"{path} is not an advisor database (not SQLite); refusing to touch it")
    elif not path.parent.exists():
        raise AdvisorError(f"cannot create {path}: folder {path.parent} does not exist")
    try:
        connection = sqlite3.connect(path, timeout=30)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "advisor_meta" not in tables:
            connection.close()
            raise AdvisorError(f"{path} is an SQLite database of something else (tables: "
                               f"{', '.join(sorted(tables))}); refusing to touch it")
        if not tables:
            _create(connection)
        _check_meta(connection, path)
        _add_missing_columns(connection)
        problem = connection.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise AdvisorError(f"{path} is corrupt ({problem}); copy out what you can with sqlite3 .recover")
    except sqlite3.DatabaseError as error:
        raise AdvisorError(f"{path} is corrupt or unreadable: {error}") from None
    return connection


def _create(connection: sqlite3.Connection) -> None:
    columns = ",\n  ".join(f"{name} {kind}" for name, kind in _COLUMNS.items())
    with connection:
        connection.execute("CREATE TABLE advisor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        connection.executemany("INSERT INTO advisor_meta VALUES (?, ?)",
                               [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))])
        connection.execute(f"CREATE TABLE points (\n  id INTEGER PRIMARY KEY,\n  {columns},\n"
                           f"  UNIQUE ({', '.join(KEY_COLUMNS)}))")


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Columns added since a database was created (older rows read as NULL or the default)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(points)")}
    with connection:
        for name, kind in _COLUMNS.items():
            if name not in present:
                connection.execute(f"ALTER TABLE points ADD COLUMN {name} {kind.replace(' NOT NULL', '')}")


def _check_meta(connection: sqlite3.Connection, path: Path) -> None:
    meta = dict(connection.execute("SELECT key, value FROM advisor_meta"))
    if meta.get("format") != FORMAT:
        raise AdvisorError(f"{path} is not an advisor results database")
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
        raise AdvisorError(f"{path} was written by a newer advisor (schema {meta['schema_version']})")
