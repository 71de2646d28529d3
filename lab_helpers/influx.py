"""Write to and query InfluxDB through its v1 HTTP API.

The v1 API (`POST /write` with line protocol, `/query` with InfluxQL) is served by every
InfluxDB generation: 1.x natively, 2.x and 3 Core through their v1 compatibility endpoints.
So the same code runs against the lab's local `influxd` 1.6 and a managed service.

Why it is fast: lines are built from whole columns and sent 50,000 at a time by two
writers in parallel, while the next batch is being built; queries ask for CSV without
compression and parse it with `pandas.read_csv`.

Example:

    db = InfluxDB.connect()                       # admin user of the local stack
    db.create_database("prices")
    db.write(frame, measurement="price", tags=["asset"])
    df = db.query("SELECT price FROM price WHERE asset = $asset", params={"asset": "btc"})
"""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import requests

from .config import Credentials, Settings, load_settings
from .errors import (
    DataError,
    InfluxAuthError,
    InfluxConnectionError,
    InfluxError,
    PartialWriteError,
)
from .etl import QUARANTINED_ATTR
from .lineprotocol import EncodedBatch, encode_point, frame_batches

# Loads above this many points show a progress bar unless progress=False.
PROGRESS_THRESHOLD = 100_000


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier (database, measurement, user) safely.

    Identifiers cannot be bound parameters, so they are quoted and escaped instead.
    """
    name = str(name)
    if not name or "\n" in name or "\r" in name:
        raise DataError(f"{name!r} is not a valid InfluxDB name: use letters, digits and _")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _param(value):
    """A bound-parameter value as JSON: times become RFC3339 strings with nanoseconds."""
    if isinstance(value, (pd.Timestamp, np.datetime64)) or hasattr(value, "isoformat"):
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond * 1000 + ts.nanosecond:09d}Z"
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise DataError(
        f"cannot bind a parameter of type {type(value).__name__}: use str, number or time"
    )


@dataclass
class WriteReport:
    """What a write did: points stored, rows skipped (no field), lines rejected, time taken,
    and a `note` when there was nothing to write (why, and where to look)."""

    written: int = 0
    skipped: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def points_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        text = f"{self.written:,} points written in {self.seconds:.2f} s"
        if self.skipped:
            text += f", {self.skipped:,} rows without any value skipped"
        if self.rejected:
            text += f", {len(self.rejected):,} lines rejected"
        if self.note:
            text += f": {self.note}"
        return text


class InfluxDB:
    """A client for one InfluxDB server and database, over the v1 HTTP API.

    Parameters: `url` (e.g. `http://127.0.0.1:8086`), `credentials` (user and
    password; None only for a server without auth), `database` (default for writes
    and queries), `timeout` in seconds, `retries` on connection errors and 5xx answers
    with exponential backoff starting at `backoff` seconds. Use `connect` to
    build one from the lab's settings.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        database: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.25,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DataError(f"InfluxDB url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.database = database
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._local = threading.local()  # one requests.Session per thread

    @classmethod
    def connect(
        cls,
        role: str = "admin",
        settings: Settings | None = None,
        database: str | None = None,
        **kw,
    ) -> InfluxDB:
        """A client for the lab's InfluxDB as `role` (`admin`, `ingest` or `reader`)."""
        settings = settings or load_settings()
        return cls(
            settings.require_influx_url(),
            settings.credentials(role),
            database or settings.influx_database,
            **kw,
        )

    def __repr__(self) -> str:
        user = self.credentials.username if self.credentials else None
        return f"InfluxDB(url={self.url!r}, user={user!r}, database={self.database!r})"

    # -- HTTP plumbing ---------------------------------------------------------------------
    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self.credentials:
                session.auth = (self.credentials.username, self.credentials.password)
            self._local.session = session
        return session

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        """Send a request, retrying connection errors and 5xx answers with backoff."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 8.0))
            try:
                resp = self._session.request(method, self.url + path, timeout=self.timeout, **kw)
            except (requests.ConnectionError, requests.Timeout) as err:
                last = err
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = InfluxError(f"InfluxDB answered {resp.status_code}: {_error_text(resp)}")
                continue
            self._raise_for_auth(resp)
            return resp
        if isinstance(last, InfluxError):
            raise InfluxError(f"{last} (after {self.retries + 1} tries); check `make stack-logs`")
        raise InfluxConnectionError(
            f"InfluxDB at {self.url} does not answer (after {self.retries + 1} tries): start it "
            "with `python -m lab_helpers.stack up` or check LAB_INFLUX_URL"
        )

    def _raise_for_auth(self, resp: requests.Response) -> None:
        user = self.credentials.username if self.credentials else None
        if resp.status_code == 401:
            raise InfluxAuthError(
                f"InfluxDB rejected the credentials of user {user!r}: use the ones in "
                ".lab/credentials.json (`python -m lab_helpers.stack status` shows the users) "
                "or set LAB_INFLUX_USER and LAB_INFLUX_PASSWORD"
            )
        if resp.status_code == 403:
            raise InfluxAuthError(
                f"user {user!r} may not do this ({_error_text(resp)}): the ingest user can only "
                "write, the reader can only read, the admin can do everything"
            )

    def ping(self) -> str:
        """Check that the server answers; returns its version (`/ping` needs no login)."""
        resp = self._request("GET", "/ping")
        return resp.headers.get("X-Influxdb-Version", "unknown")

    def check_write(self, database: str | None = None) -> None:
        """Check that this user may write to the database, without writing anything.

        An empty write is authenticated and authorised like any other, so it proves the
        credentials of a write-only user, which cannot run a query to prove them.
        """
        db = database or self._db()
        resp = self._request("POST", "/write", params={"db": db}, data=b"")
        if resp.status_code == 404:
            raise InfluxError(f"database {db!r} does not exist: create it first")
        if resp.status_code != 204:
            raise InfluxError(f"InfluxDB answered {resp.status_code}: {_error_text(resp)}")

    # -- administration --------------------------------------------------------------------
    def execute(
        self, statement: str, params: dict | None = None, database: str | None = None
    ) -> list:
        """Run InfluxQL statements (e.g. `SHOW DATABASES`) and return the JSON results."""
        data = {"q": statement}
        db = database or self.database
        if db:
            data["db"] = db
        if params:
            data["params"] = json.dumps({k: _param(v) for k, v in params.items()})
        resp = self._request("POST", "/query", data=data)
        try:
            body = resp.json()
        except ValueError:
            raise InfluxError(f"InfluxDB answered {resp.status_code} with no JSON") from None
        if "error" in body:
            raise InfluxError(f"InfluxDB refused the query: {body['error']}")
        results = body.get("results", [])
        for result in results:
            if "error" in result:
                raise InfluxError(f"InfluxDB refused the query: {result['error']}")
        return results

    def databases(self) -> list[str]:
        """Names of the databases on the server."""
        series = self.execute("SHOW DATABASES")[0].get("series", [{}])
        return [row[0] for row in series[0].get("values", [])]

    def create_database(self, name: str | None = None, *, shard_duration: str = "52w") -> None:
        """Create a database (no error if it exists). Needs the admin user.

        InfluxDB stores data in *shards*, one per time span (7 days by default). Price history
        spans decades, and one-week shards would mean thousands of shards and very slow
        writes; so the lab's default is one shard per 52 weeks.
        """
        if not _is_duration(shard_duration):
            raise DataError(f"shard duration {shard_duration!r} is not valid: use e.g. '52w'")
        name = quote_ident(name or self._db())
        self.execute(f"CREATE DATABASE {name} WITH SHARD DURATION {shard_duration}")

    def drop_database(self, name: str) -> None:
        """Delete a database and all its data. Needs the admin user."""
        self.execute(f"DROP DATABASE {quote_ident(name)}")

    def create_retention_policy(
        self,
        name: str,
        duration: str,
        *,
        database: str | None = None,
        replication: int = 1,
        shard_duration: str | None = None,
        default: bool = False,
    ) -> None:
        """Create a retention policy: keep data for `duration` (e.g. `'30d'`, `'INF'`)."""
        if not _is_duration(duration):
            raise DataError(
                f"duration {duration!r} is not valid: use e.g. '1h', '30d', '52w' or 'INF'"
            )
        if shard_duration and not _is_duration(shard_duration):
            raise DataError(f"shard duration {shard_duration!r} is not valid: use e.g. '1d'")
        q = (
            f"CREATE RETENTION POLICY {quote_ident(name)} ON {quote_ident(database or self._db())} "
            f"DURATION {duration} REPLICATION {int(replication)}"
        )
        if shard_duration:
            q += f" SHARD DURATION {shard_duration}"
        if default:
            q += " DEFAULT"
        self.execute(q)

    def _db(self) -> str:
        if not self.database:
            raise DataError("no database given: pass database='prices' or set LAB_INFLUX_DB")
        return self.database

    # -- writing ---------------------------------------------------------------------------
    def write(
        self,
        data,
        measurement: str | None = None,
        *,
        tags: Iterable[str] = (),
        fields: Iterable[str] | None = None,
        time: str | None = None,
        database: str | None = None,
        retention_policy: str | None = None,
        batch_size: int = 50_000,
        writers: int = 2,
        progress: bool | None = None,
        raise_on_rejected: bool = True,
    ) -> WriteReport:
        """Write a DataFrame, or an iterable of point dicts, and report what was stored.

        DataFrame: rows become points of `measurement`; `tags` name the tag columns,
        `fields` the field columns (default: all other columns); the time is the
        DatetimeIndex or the column named by `time`. Naive times are taken as UTC.
        Points: dicts `{"measurement", "tags", "fields", "time"}`.

        Lines go out in batches of `batch_size` with `writers` requests in flight (a
        write that fits in one batch is sent from the calling thread). A batch too large for
        the server is split. Lines that InfluxDB rejects are found and collected; every other
        line is stored. Then, unless `raise_on_rejected` is False, a
        `PartialWriteError` lists the rejected lines and why.
        """
        db = database or self._db()
        if isinstance(data, pd.DataFrame):
            if not measurement:
                raise DataError("pass measurement='name' to write a DataFrame")
            if data.empty:
                report = WriteReport(note=_why_empty(data))
                warnings.warn(str(report), EmptyWriteWarning, stacklevel=2)
                return report
            batches: Iterator[EncodedBatch] = frame_batches(
                data, measurement, tags=tags, fields=fields, time=time, batch_size=batch_size
            )
            total = len(data)
        elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise DataError(
                "write() takes a DataFrame or an iterable of point dicts, "
                f"not {type(data).__name__}"
            )
        else:
            batches = _point_batches(data, batch_size)
            total = len(data) if hasattr(data, "__len__") else None
        show = progress if progress is not None else (total or 0) >= PROGRESS_THRESHOLD
        return self._write_batches(
            batches, db, retention_policy, total, show, writers, raise_on_rejected
        )

    def _write_batches(
        self, batches, db, rp, total, show, writers, raise_on_rejected
    ) -> WriteReport:
        report = WriteReport()
        started = time.perf_counter()
        bar = _progress_bar(total, show)
        pending: set[Future] = set()

        def add(outcome: tuple[int, list, int]) -> None:
            written, rejected, calls = outcome
            report.written += written
            report.rejected.extend(rejected)
            report.requests += calls
            if bar is not None:
                bar.update(written + len(rejected))

        def to_send(batches: Iterable[EncodedBatch]) -> Iterator[EncodedBatch]:
            for batch in batches:
                report.skipped += batch.skipped
                if bar is not None and batch.skipped:
                    bar.update(batch.skipped)
                if batch.count:
                    yield batch

        try:
            batches = to_send(batches)
            first = next(batches, None)
            second = next(batches, None) if first is not None else None
            if second is None:
                # One request (a streaming write, a small frame): sent from this thread on its
                # kept-alive connection, without starting writer threads.
                if first is not None:
                    add(self._send(first, db, rp))
            else:
                with ThreadPoolExecutor(max_workers=max(1, writers)) as pool:
                    for batch in itertools.chain((first, second), batches):
                        # Bounded in-flight work: build the next batch while these are sent.
                        while len(pending) >= max(1, writers):
                            done, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in done:
                                add(fut.result())
                        pending.add(pool.submit(self._send, batch, db, rp))
                    for fut in wait(pending)[0]:
                        add(fut.result())
        finally:
            if bar is not None:
                bar.close()
        report.seconds = time.perf_counter() - started
        if report.rejected and raise_on_rejected:
            line, reason = report.rejected[0]
            raise PartialWriteError(
                f"InfluxDB rejected {len(report.rejected):,} line(s) and stored the other "
                f"{report.written:,}; first: {line[:120]!r}: {reason}. "
                "The error's .rejected lists them all",
                report.rejected,
                report.written,
            )
        return report

    def _send(self, batch: EncodedBatch, db: str, rp: str | None):
        """POST a batch; returns (stored, rejected[(line, reason)], requests made).

        On a partial write the server stores the good lines but names only the first bad
        one, so the batch is split in halves until every rejected line is known. Sending
        a good line again is harmless: a point with the same series and time is replaced.
        """
        params = {"db": db, "precision": batch.precision}
        if rp:
            params["rp"] = rp
        resp = self._request("POST", "/write", params=params, data=batch.body)
        if resp.status_code == 204:
            return batch.count, [], 1
        if resp.status_code == 404:
            raise InfluxError(
                f"database {db!r} does not exist: create it first with "
                f"InfluxDB.connect().create_database({db!r})"
            )
        lines = batch.lines
        if resp.status_code == 413 or (resp.status_code == 400 and len(lines) > 1):
            if len(lines) == 1:
                return 0, [(lines[0], "line larger than the server accepts")], 1
            mid = len(lines) // 2
            a = self._send(EncodedBatch.from_lines(lines[:mid], batch.precision), db, rp)
            b = self._send(EncodedBatch.from_lines(lines[mid:], batch.precision), db, rp)
            return a[0] + b[0], a[1] + b[1], 1 + a[2] + b[2]
        if resp.status_code == 400:
            return 0, [(lines[0], _error_text(resp))], 1
        raise InfluxError(f"InfluxDB answered {resp.status_code} to a write: {_error_text(resp)}")

    # -- querying --------------------------------------------------------------------------
    def query(
        self, q: str, params: dict | None = None, *, database: str | None = None
    ) -> pd.DataFrame:
        """Run one InfluxQL SELECT and return a DataFrame indexed by UTC time.

        Put user input in `params` and refer to it as `$name` in the query: the
        server binds it, so it is never read as InfluxQL. Numeric columns come back as
        float64 (exactly the stored floats); tags as text columns. With `GROUP BY`
        tags, each tag becomes a column. Times can be passed as datetimes or Timestamps.
        """
        data = {"q": q, "db": database or self._db(), "epoch": "ns"}
        if params:
            data["params"] = json.dumps({k: _param(v) for k, v in params.items()})
        # CSV without gzip is the fastest path (gzip only costs CPU on loopback).
        headers = {"Accept": "application/csv", "Accept-Encoding": "identity"}
        resp = self._request("POST", "/query", data=data, headers=headers)
        if resp.status_code == 404:
            raise InfluxError(f"database {data['db']!r} does not exist: create it first")
        if resp.status_code != 200 or resp.content.startswith(b"error"):
            raise InfluxError(f"InfluxDB refused the query: {_error_text(resp)}")
        if _blank(resp.content):
            # The CSV format drops a statement's error and answers an empty 200; ask again in
            # JSON, which carries the error (cheap: an empty result costs the server nothing).
            self.execute(q, params, database=data["db"])
        return _frame_from_csv(resp.content)

    def count(self, measurement: str, field: str = "price", *, database: str | None = None) -> int:
        """Number of stored values of `field` in `measurement` (0 when there are none)."""
        df = self.query(
            f"SELECT count({quote_ident(field)}) FROM {quote_ident(measurement)}", database=database
        )
        return int(df.iloc[0, -1]) if len(df) else 0


class EmptyWriteWarning(UserWarning):
    """A table with no rows was written: nothing was stored (the message says why)."""


def _why_empty(frame: pd.DataFrame) -> str:
    """Why a table to write has no rows, in one sentence, from what `etl.clean` noted."""
    made_by = frame.attrs.get(QUARANTINED_ATTR)
    if not made_by:
        return "the table has no rows"
    counts = made_by["quarantined"]
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in counts.items())
    total = sum(counts.values())
    if made_by["clean"] == 0 and total:
        return (
            f"the table is empty because etl.clean quarantined all {total:,} rows it was "
            f"given ({reasons}): see result.quarantine for each row and its reason"
        )
    if made_by["clean"] == 0:
        return "the table is empty: etl.clean was given no rows"
    kept = made_by["clean"]
    return (
        f"the table is empty, though etl.clean kept {kept:,} row{'s' * (kept != 1)}"
        + (f" and quarantined {total:,} ({reasons})" if total else "")
        + ": the rows were filtered out after cleaning"
    )


def _blank(content: bytes) -> bool:
    """True for an empty answer (without copying a large one, as `strip()` would)."""
    return not content or content.isspace()


def _frame_from_csv(content: bytes) -> pd.DataFrame:
    if _blank(content):
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="time"))
    df = pd.read_csv(io.BytesIO(content))
    if "tags" in df.columns:
        tags = df.pop("tags")
        if tags.notna().any():
            # Each distinct tag set is parsed once: a GROUP BY has few of them.
            parsed = {t: _parse_tags(t) for t in tags.dropna().unique()}
            rows = [parsed.get(t, {}) for t in tags]
            df = pd.concat([df, pd.DataFrame(rows, index=df.index)], axis=1)
    if "name" in df.columns and df["name"].nunique() <= 1:
        df = df.drop(columns="name")
    index = pd.to_datetime(df.pop("time").to_numpy(dtype="int64"), unit="ns", utc=True)
    df.index = pd.DatetimeIndex(index, name="time")
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype("float64")
    return df


_TAG_PAIR = re.compile(r"((?:[^\\,=]|\\.)+)=((?:[^\\,]|\\.)*)")


def _parse_tags(text: str) -> dict[str, str]:
    """`reason=bad\\ timestamp,asset=btc` (the CSV `tags` column, escaped as in line
    protocol) -> `{"reason": "bad timestamp", "asset": "btc"}`."""
    return {
        _UNESCAPE.sub(r"\1", key): _UNESCAPE.sub(r"\1", value)
        for key, value in _TAG_PAIR.findall(str(text))
    }


_UNESCAPE = re.compile(r"\\([ ,=])")


def _point_batches(points: Iterable[dict], batch_size: int) -> Iterator[EncodedBatch]:
    lines: list[str] = []
    for point in points:
        lines.append(encode_point(point))
        if len(lines) >= batch_size:
            yield EncodedBatch.from_lines(lines, "ns")
            lines = []
    if lines:
        yield EncodedBatch.from_lines(lines, "ns")


def _is_duration(text: str) -> bool:
    return bool(re.fullmatch(r"INF|(\d+(ns|u|µ|ms|s|m|h|d|w))+", str(text)))


def _error_text(resp: requests.Response) -> str:
    text = resp.text.strip()
    try:
        return json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        pass
    if text.startswith("error"):  # CSV error body: error\n"message"
        return text.split("\n", 1)[-1].strip().strip('"')
    return text[:300] or resp.reason


def _progress_bar(total: int | None, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pt", unit_scale=True, desc="writing to InfluxDB")
