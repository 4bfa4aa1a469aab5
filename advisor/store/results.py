"""The results database: one SQLite row per measurement, committed as it lands.

Any number of processes may open, create and write one database at once: the check of what the
file holds and its creation are one IMMEDIATE transaction (SQLite's write lock, waited for up to
the busy timeout), so a second process sees either nothing or the whole schema.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pandas as pd

from advisor.errors import AdvisorError
from advisor.store.schema import COLUMNS, FORMAT, KEY_COLUMNS, POINTS, SCHEMA_VERSION, TABLES

_SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 120  # how long a writer waits for another process's transaction


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection = _open_checked(self.path)
        self._tables = {"points"}

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _ensure(self, table: str) -> None:
        if table not in self._tables:
            ensure_table(self._connection, table)
            self._tables.add(table)

    def measured_keys(self, **fixed) -> set[tuple]:
        """Keys of points already measured successfully (optionally filtered by column)."""
        return self.keys("points", KEY_COLUMNS, statuses=("ok",), **fixed)

    def keys(self, table: str, columns, statuses: tuple[str, ...] = (), **fixed) -> set[tuple]:
        """The `columns` of a table's rows matching `fixed` (and one of `statuses`, if given)."""
        self._ensure(table)
        where, values = _where(fixed)
        if statuses:
            where += (" AND " if where else "WHERE ") + f"status IN ({', '.join('?' for _ in statuses)})"
            values += list(statuses)
        rows = self._connection.execute(f"SELECT {', '.join(columns)} FROM {table} {where}", values)
        return {tuple(row) for row in rows}

    def save(self, point: dict, table: str = "points") -> None:
        """Insert or replace one row and commit at once: a kill never loses it."""
        self._ensure(table)
        unknown = set(point) - set(TABLES[table].columns)
        if unknown:
            raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
        row = {**point, "measured_at": point.get("measured_at") or _now()}
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connection:
            self._connection.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})",
                                     list(row.values()))

    def frame(self, table: str = "points", **fixed) -> pd.DataFrame:
        self._ensure(table)
        where, values = _where(fixed)
        order = " ORDER BY model, layer, backend, target, channels" if table == "points" else ""
        return pd.read_sql_query(f"SELECT * FROM {table} {where}{order}", self._connection, params=values)


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of successful measurements with a positive latency."""
    return frame[(frame.status == "ok") & frame.median_ms.notna() & (frame.median_ms > 0) & (frame.min_ms > 0)]


def _where(fixed: dict) -> tuple[str, list]:
    conditions = {k: v for k, v in fixed.items() if v is not None}
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
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            _check_or_create(connection, path)
        except BaseException:
            connection.close()
            raise
        connection.isolation_level = ""  # from here on, `with connection:` commits each write
        problem = connection.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            connection.close()
            raise AdvisorError(f"{path} is corrupt ({problem}); copy out what you can with sqlite3 .recover")
    except sqlite3.DatabaseError as error:
        raise AdvisorError(f"{path} is corrupt or unreadable: {error}") from None
    return connection


def _check_or_create(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse a database of something else; create a new one's tables and add the columns later
    versions brought, in one write transaction (a database that needs neither is only read)."""
    for locked in (False, True):
        if locked:
            connection.execute("BEGIN IMMEDIATE")  # the write lock: creation is seen whole or not at all
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "advisor_meta" not in tables:
                raise AdvisorError(f"{path} is an SQLite database of something else (tables: "
                                   f"{', '.join(sorted(tables))}); refusing to touch it")
            if tables:
                _check_meta(connection, path)
                present = {row[1] for row in connection.execute("PRAGMA table_info(points)")}
                if not locked and set(POINTS.columns) <= present:
                    return
            if locked:
                if not tables:
                    connection.execute("CREATE TABLE advisor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    connection.executemany("INSERT INTO advisor_meta VALUES (?, ?)",
                                           [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))])
                connection.execute(POINTS.create_sql())
                _add_missing_columns(connection)
                connection.execute("COMMIT")
        except BaseException:
            if locked:
                connection.execute("ROLLBACK")
            raise


def ensure_table(connection: sqlite3.Connection, name: str) -> None:
    """Create one of the other tables on first use (CREATE ... IF NOT EXISTS is atomic)."""
    connection.execute(TABLES[name].create_sql())


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Columns added since a database was created (older rows read as NULL or the default)."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(points)")}
    for name, kind in POINTS.columns.items():
        if name not in present:
            connection.execute(f"ALTER TABLE points ADD COLUMN {name} {kind.replace(' NOT NULL', '')}")


def _check_meta(connection: sqlite3.Connection, path: Path) -> None:
    meta = dict(connection.execute("SELECT key, value FROM advisor_meta"))
    if meta.get("format") != FORMAT:
        raise AdvisorError(f"{path} is not an advisor results database")
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
        raise AdvisorError(f"{path} was written by a newer advisor (schema {meta['schema_version']})")


__all__ = ["COLUMNS", "KEY_COLUMNS", "ResultStore", "usable"]
