"""Choose a data store by measuring: the same readings in SQLite and in InfluxDB.

SQLite is a SQL database in one file (Python's standard library has it); InfluxDB is the
lab's time-series database. `Comparison` puts the same table of sensor readings (see
`lab_helpers.sensors`) into both, in a folder of its own, and measures each: the time to
load them, the disk space they take, and the time of one query that computes hourly means.

    with stores.Comparison(folder) as both:
        both.load(readings)                      # a table: load time, bytes on disk
        both.time_queries(influxql, params, sql) # a table: rows, median seconds

The InfluxDB is a server of its own (the same `influxd` as the lab's), started in the
folder and stopped at the end, so that the lab's database stays as it was and the disk space
is measured once the server has settled: a fresh InfluxDB first keeps new points in its
write-ahead log and moves them into its compressed files (TSM) after a quiet moment, which
this server is told to take after one second instead of ten minutes. Disk space is what the
files occupy on the disk (their blocks, as `du` counts them).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import requests

from .config import Credentials
from .errors import DataError, StackError
from .influx import InfluxDB
from .stack import INFLUXDB_CONF, create_first_admin, find_binary, free_port, stop_process
from .wait import wait_for

DATABASE = MEASUREMENT = TABLE = "readings"
"""The name of the readings everywhere: InfluxDB database and measurement, SQLite table."""
SQL_SCHEMA = (
    f"CREATE TABLE {TABLE} (time INTEGER NOT NULL, sensor TEXT NOT NULL, temp_c REAL NOT NULL)"
)
"""The SQLite table: `time` in epoch seconds (UTC), `sensor`, `temp_c`."""
SETTLE_SECONDS = 60.0  # the longest wait for InfluxDB to move the points into its TSM files

# Added to the [data] section of the lab's own InfluxDB configuration (loopback only,
# authentication on): move new points from the write-ahead log into TSM files after one quiet
# second.
_COLD_AFTER_ONE_SECOND = (
    '  cache-snapshot-write-cold-duration = "1s"\n  compact-full-write-cold-duration = "1s"\n'
)


def disk_bytes(path: Path) -> int:
    """The bytes the files under `path` (or the file itself) occupy on the disk: their
    allocated blocks, as `du` counts them (a file reserved but not written takes none)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def _die_with_parent() -> None:
    """In the child, before `exec`: Linux stops it when its parent (the kernel) dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_running: dict[Path, ScratchInfluxDB] = {}  # folder -> the server running there


class ScratchInfluxDB:
    """An InfluxDB server of its own in `folder`, on free loopback ports, with an admin of
    its own (a generated password, never shown). `client` writes and queries it; `stop()`
    stops it and deletes the folder."""

    def __init__(self, folder: Path | str, timeout: float = 30.0):
        self.folder = Path(folder)
        earlier = _running.pop(self.folder.resolve(), None)
        if earlier is not None:  # a cell run again: the server it started goes first
            earlier.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        port, rpc_port = free_port(), free_port()
        conf = self.folder / "influxdb.conf"
        conf.write_text(
                INFLUXDB_CONF.format(dir=self.folder.resolve(), port=port, rpc_port=rpc_port,
                                     data_extra=_COLD_AFTER_ONE_SECOND)
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        with open(self.folder / "influxd.log", "ab") as log:
            self.process = subprocess.Popen(
                [find_binary("influxd"), "-config", str(conf)], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )  # fmt: skip
        atexit.register(self.stop)
        _running[self.folder.resolve()] = self
        try:
            self._wait_ready(timeout)
            password = secrets.token_urlsafe(18)
            if not create_first_admin(self.url, "scratch", password):
                raise StackError("the scratch InfluxDB refused its first user")
            self.client = InfluxDB(self.url, Credentials("scratch", password), DATABASE)
            self.client.create_database(DATABASE)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:  # stops the wait at once
                log = (self.folder / "influxd.log").read_text(errors="replace")[-300:]
                raise StackError(f"the scratch InfluxDB stopped at once; its log says: {log!r}")
            with contextlib.suppress(requests.RequestException):
                return requests.get(self.url + "/ping", timeout=1).status_code == 204
            return False

        if not wait_for(answers, timeout, every=0.02, error=None):
            raise StackError(f"the scratch InfluxDB did not answer within {timeout:.0f} s")

    def _paths(self) -> tuple[Path, Path]:
        return self.folder / "data" / DATABASE, self.folder / "wal" / DATABASE

    def settle(self, timeout: float = SETTLE_SECONDS) -> float:
        """Wait until the server has moved every point of the database from its write-ahead
        log into its compressed TSM files; returns the seconds it took."""
        data, wal = self._paths()
        started = time.monotonic()
        if wait_for(lambda: any(data.rglob("*.tsm")) and disk_bytes(wal) == 0, timeout,
                    error=None):  # fmt: skip
            return time.monotonic() - started
        raise StackError(
            f"the scratch InfluxDB kept its points in its write-ahead log for {timeout:.0f} s: "
            "the machine is very busy; run the cell again"
        )

    def disk_bytes(self) -> int:
        """What the database takes on the disk: its TSM files, index and write-ahead log."""
        return sum(disk_bytes(p) for p in self._paths() if p.exists())

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and delete its folder."""
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
        atexit.unregister(self.stop)
        if _running.get(self.folder.resolve()) is self:
            del _running[self.folder.resolve()]


class SQLiteStore:
    """The readings in a SQLite file (`SQL_SCHEMA`), or in memory with `":memory:"`;
    `query(sql)` runs one statement."""

    def __init__(self, path: Path | str):
        self.path = None if str(path) == ":memory:" else Path(path)  # ":memory:": no file
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.connection = sqlite3.connect(self.path or ":memory:")
        self.connection.execute(SQL_SCHEMA)

    def load(self, readings: pd.DataFrame) -> None:
        """Insert the readings in one transaction."""
        seconds = readings["time"].astype("datetime64[s, UTC]").astype("int64")
        rows = zip(seconds.tolist(), readings["sensor"].tolist(), readings["temp_c"].tolist())
        with self.connection:
            self.connection.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?)", rows)

    def query(self, sql: str) -> list[tuple]:
        """The rows of one SQL statement; a statement SQLite refuses is a `DataError` that
        says why."""
        if not isinstance(sql, str):
            raise DataError(f"the SQL query should be text, not {type(sql).__name__}")
        try:
            return self.connection.execute(sql).fetchall()
        except (sqlite3.Error, sqlite3.Warning) as err:
            raise DataError(f"SQLite refused the query: {err}") from None

    def disk_bytes(self) -> int:
        return 0 if self.path is None else disk_bytes(self.path)

    def close(self) -> None:
        self.connection.close()


def hourly(rows) -> pd.DataFrame:
    """Rows of hourly means as one table, whichever store they come from: `sensor`, `hour`
    (the UTC start of the hour) and `mean`, sorted by sensor and hour. From SQLite, rows of
    (sensor, hour in epoch seconds, mean); from InfluxDB, its `mean` and `sensor` columns by
    time."""
    if isinstance(rows, pd.DataFrame):  # InfluxDB's answer: time index, mean, sensor
        table = pd.DataFrame({"sensor": rows["sensor"].to_numpy(), "hour": rows.index,
                              "mean": rows["mean"].to_numpy()})  # fmt: skip
    else:
        table = pd.DataFrame(list(rows), columns=["sensor", "hour", "mean"])
        table["hour"] = pd.to_datetime(table["hour"], unit="s", utc=True)
    table["hour"] = table["hour"].astype("datetime64[ns, UTC]")
    return table.sort_values(["sensor", "hour"], ignore_index=True)


class Comparison:
    """The same readings in SQLite and in InfluxDB, in `folder` (deleted by `close()`, or
    at the end of a `with` block)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.influx = ScratchInfluxDB(self.folder / "influxdb")
        self.sqlite = SQLiteStore(self.folder / "readings.sqlite")
        self.points = 0

    def load(self, readings: pd.DataFrame) -> pd.DataFrame:
        """Load `readings` (time, sensor, temp_c) into both stores and measure each: a table
        with the seconds to load, the bytes on disk once settled, and the bytes per reading."""
        started = time.perf_counter()
        self.sqlite.load(readings)
        sqlite_seconds = time.perf_counter() - started
        started = time.perf_counter()
        self.influx.client.write(readings, MEASUREMENT, tags=["sensor"], fields=["temp_c"],
                                 time="time", progress=False)  # fmt: skip
        influx_seconds = time.perf_counter() - started
        self.influx.settle()
        self.points = len(readings)
        sizes = {"SQLite": self.sqlite.disk_bytes(), "InfluxDB": self.influx.disk_bytes()}
        table = pd.DataFrame(
            {"readings": self.points, "load (s)": [sqlite_seconds, influx_seconds],
             "disk (MB)": [sizes["SQLite"] / 1e6, sizes["InfluxDB"] / 1e6],
             "bytes per reading": [sizes["SQLite"] / self.points, sizes["InfluxDB"] / self.points]},
            index=pd.Index(["SQLite", "InfluxDB"], name="store"),
        )  # fmt: skip
        return table

    def sql(self, query: str) -> pd.DataFrame:
        """The hourly means of a SQL query on SQLite (see `hourly`)."""
        return hourly(self.sqlite.query(query))

    def influxql(self, query: str, params: dict) -> pd.DataFrame:
        """The hourly means of an InfluxQL query on InfluxDB (see `hourly`)."""
        return hourly(self.influx.client.query(query, params))

    def time_queries(self, influxql: str, params: dict, sql: str, repeat: int = 5) -> pd.DataFrame:
        """Run each query `repeat` times, alternating: a table with the rows each returns and
        its median time in seconds."""
        runs: dict[str, list[float]] = {"SQLite": [], "InfluxDB": []}
        rows = {}
        for _ in range(repeat):
            for store, run in (("SQLite", lambda: self.sql(sql)),
                               ("InfluxDB", lambda: self.influxql(influxql, params))):  # fmt: skip
                started = time.perf_counter()
                rows[store] = len(run())
                runs[store].append(time.perf_counter() - started)
        return pd.DataFrame(
            {"rows": rows, "median (s)": {s: pd.Series(t).median() for s, t in runs.items()}}
        ).rename_axis("store")

    def close(self) -> None:
        """Stop the scratch InfluxDB and delete the folder with both stores."""
        self.sqlite.close()
        self.influx.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Comparison:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
