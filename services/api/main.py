"""The api service: the stored prices over REST, live ticks over Server-Sent Events, and the
browser dashboard.

Run it from the repository root (configuration comes only from environment variables)::

    python services/api/main.py

Endpoints (all JSON; the schema is at ``/openapi.json``):

- ``GET /api/assets``: every asset the lab knows, with its latest stored price;
- ``GET /api/prices/{asset}``: a time range, raw or downsampled (``every`` and ``agg``);
- ``GET /api/summary/{asset}``: count, first, last, min, max, mean, stddev over a range;
- ``GET /api/quarantine``: how many ticks were quarantined, per reason, and the latest ones;
- ``GET /api/stream``: each tick as it is cleaned and stored, pushed as Server-Sent Events;
- ``GET /``: the dashboard (its files under ``/static/``, plotly.js from the installed
  ``plotly`` package: the page needs no internet).

Safety rules that every query here follows: the api reads InfluxDB as the read-only
``reader`` user; every value a user sends (asset, times, limits) travels to InfluxDB as a
bound parameter (``$name``), never as query text; the only words put into InfluxQL are
fixed names from this file (the aggregate functions) and numbers this file computed.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_helpers import broker
from lab_helpers.config import ConfigError, Settings, csv_list, env_value, load_settings
from lab_helpers.data import ASSET_KIND, ASSETS, UNITS, normalize_asset
from lab_helpers.errors import InfluxAuthError, InfluxError
from lab_helpers.influx import InfluxDB
from lab_helpers.service import configure_logging, create_app, log_fields, serve

SERVICE = "api"
DEFAULT_PORT = 8000
STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(SERVICE)

# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """The api's own settings (the shared ``LAB_*`` ones are in :class:`Settings`)."""

    cors_origins: tuple[str, ...] = ()
    max_points: int = 10_000
    stream_queue: int = 1_000
    heartbeat: float = 15.0


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def read_api_settings(env: dict[str, str] | None = None) -> ApiSettings:
    """Read ``API_*`` from the environment; :class:`ConfigError` (one sentence) if invalid."""
    origins = env_value("API_CORS_ORIGINS", (), csv_list, env=env)
    for origin in origins:
        # "*" would let every web page read the api from a visitor's browser: origins are
        # listed one by one, and an origin is a scheme and a host, without a path.
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"API_CORS_ORIGINS entry {origin!r} is not valid: list origins such as "
                "https://lab.example.org,http://localhost:3000 (no '*', no path)"
            )
    return ApiSettings(
        cors_origins=origins,
        max_points=env_value("API_MAX_POINTS", 10_000, int, env=env, minimum=1, maximum=100_000),
        stream_queue=env_value("API_STREAM_QUEUE", 1_000, int, env=env, minimum=1, maximum=100_000),
        heartbeat=env_value("API_STREAM_HEARTBEAT", 15.0, float, env=env, minimum=0.1, maximum=300),
    )


# -- metrics -----------------------------------------------------------------------------------

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "api_requests_total", "HTTP requests answered", ["route", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "api_request_seconds",
    "Time from receiving a request to starting the response",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
STREAM_CLIENTS = Gauge("api_stream_clients", "Open /api/stream connections", registry=REGISTRY)
STREAM_TICKS = Counter(
    "api_stream_ticks_total", "Ticks received on clean.> for the live stream", registry=REGISTRY
)
STREAM_DROPPED = Counter(
    "api_stream_dropped_clients_total",
    "Stream clients disconnected because they did not keep up",
    registry=REGISTRY,
)
STREAM_BAD = Counter(
    "api_stream_bad_messages_total",
    "Messages on clean.> that were not a JSON tick (skipped)",
    registry=REGISTRY,
)

# -- parameters --------------------------------------------------------------------------------

AGGREGATES = ("mean", "median", "first", "last", "min", "max")
# The aggregate's name in InfluxQL comes from this table, never from the request.
AGG_FUNCTION = {name: f"{name}(price)" for name in AGGREGATES}
Aggregate = Literal["mean", "median", "first", "last", "min", "max"]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
EVERY_PATTERN = r"^[1-9][0-9]{0,6}[smhdw]$"
EVERY_MAX_SECONDS = 365 * 86_400
RELATIVE_TIME = re.compile(r"-([1-9][0-9]{0,6})([smhdw])")
# ISO-8601 date or date-time, with optional fraction (up to nanoseconds) and zone.
ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}:?\d{2})?)?"
)
# The instants InfluxDB can store (signed 64-bit nanoseconds since 1970), in whole years.
EARLIEST = pd.Timestamp("1678-01-01", tz="UTC")
LATEST = pd.Timestamp("2262-01-01", tz="UTC")
TIME_HELP = (
    "ISO-8601 (2021-04-14, 2021-04-14T06:13:00Z, 2021-04-14T08:13:00+02:00; no zone = UTC), "
    "'now', or relative to now: -30m, -12h, -7d, -2w"
)


def bad_parameter(parameter: str, problem: str) -> RequestValidationError:
    """A 400 answer in the shared error format: ``{"error": "<parameter>: <problem>", ...}``."""
    return RequestValidationError(
        [{"loc": ("query", parameter), "msg": problem, "type": "value_error"}]
    )


def parse_asset(text: str, parameter: str = "asset") -> str:
    """The lab's asset name for ``text`` (``BTC``, ``bitcoin``, ``btc-usd`` -> ``btc``)."""
    asset = normalize_asset(text)
    if asset is None:
        raise bad_parameter(
            parameter, f"unknown asset {text[:40]!r}: use one of {', '.join(ASSETS)}"
        )
    return asset


def parse_assets(text: str | None) -> frozenset[str] | None:
    """``"btc,eth"`` -> ``{"btc", "eth"}``; nothing -> ``None`` (every asset)."""
    if text is None or not text.strip():
        return None
    return frozenset(parse_asset(name, "assets") for name in csv_list(text))


def parse_time(text: str | None, parameter: str, now: pd.Timestamp) -> pd.Timestamp | None:
    """A UTC timestamp from ISO-8601 text, ``now`` or a relative time such as ``-7d``."""
    if text is None or text == "":
        return None
    text = text.strip()
    relative = RELATIVE_TIME.fullmatch(text)
    if text.lower() == "now":
        value = now
    elif relative:
        seconds = int(relative[1]) * UNIT_SECONDS[relative[2]]
        if seconds > (now - EARLIEST).total_seconds():
            raise bad_parameter(parameter, f"{text!r} reaches back before the year 1678")
        value = now - pd.Timedelta(seconds=seconds)
    elif ISO_TIME.fullmatch(text):
        try:
            value = pd.Timestamp(text)
        except (ValueError, OverflowError):  # e.g. month 13, or outside pandas' range
            raise bad_parameter(parameter, f"{text!r} is not a valid date or time") from None
        value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    else:
        raise bad_parameter(parameter, f"{text[:40]!r} is not a time: use {TIME_HELP}")
    if not EARLIEST <= value < LATEST:
        raise bad_parameter(parameter, f"{text!r} is out of range: use a time from 1678 to 2261")
    return value


def parse_range(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, ...]:
    """``start`` and ``end`` parsed; ``start`` must come before ``end``."""
    now = pd.Timestamp.now(tz="UTC")
    first, last = parse_time(start, "start", now), parse_time(end, "end", now)
    if first is not None and last is not None and first >= last:
        raise bad_parameter("end", f"end ({end}) must be after start ({start})")
    return first, last


def parse_every(text: str) -> int:
    """``every`` in whole seconds (``"5m"`` -> 300); 1 s to 365 days."""
    if not re.fullmatch(EVERY_PATTERN, text):
        raise bad_parameter(
            "every",
            f"{text[:40]!r} is not a duration: use a whole number and a unit s, m, h, d or w, "
            "such as 30s, 5m, 1h, 1d",
        )
    seconds = int(text[:-1]) * UNIT_SECONDS[text[-1]]
    if seconds > EVERY_MAX_SECONDS:
        raise bad_parameter("every", f"{text!r} is too long: use at most 365d")
    return seconds


def time_filter(asset: str | None, start, end) -> tuple[str, dict]:
    """A WHERE clause with bound parameters for an asset and a time range."""
    clauses, params = [], {}
    if asset is not None:
        clauses.append("asset = $asset")
        params["asset"] = asset
    if start is not None:
        clauses.append("time >= $start")
        params["start"] = start
    if end is not None:
        clauses.append("time < $end")
        params["end"] = end
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# -- formatting --------------------------------------------------------------------------------


def iso(ts: pd.Timestamp | None) -> str | None:
    """``2021-04-14T06:13:00Z``, with a fraction only when there is one."""
    return None if ts is None else iso_times(pd.DatetimeIndex([ts]))[0]


def iso_times(index: pd.DatetimeIndex) -> list[str]:
    """ISO-8601 UTC texts for a whole index at once (nanoseconds kept, trailing zeros not)."""
    index = index.as_unit("ns")  # pandas may keep a coarser unit, e.g. seconds for a date
    # numpy formats whole seconds in C, about ten times faster than strftime.
    base = np.datetime_as_string(index.tz_convert(None).to_numpy(), unit="s").tolist()
    nanos = (index.asi8 % 1_000_000_000).tolist()
    return [f"{b}Z" if not n else f"{b}.{n:09d}".rstrip("0") + "Z" for b, n in zip(base, nanos)]


def number(value) -> float | None:
    """A JSON-safe number: NaN (InfluxDB's "no value") becomes null."""
    if value is None or pd.isna(value):
        return None
    return float(value)


# -- queries -----------------------------------------------------------------------------------


def query_assets(db: InfluxDB) -> list[dict]:
    """Every known asset with its latest stored price and time and its number of points."""
    latest = db.query("SELECT last(price) AS price FROM price GROUP BY asset")
    counts = db.query("SELECT count(price) AS points FROM price GROUP BY asset")
    newest = {}
    if len(latest):
        for asset, t, price in zip(latest["asset"], iso_times(latest.index), latest["price"]):
            newest[asset] = (t, number(price))
    points = dict(zip(counts["asset"], counts["points"])) if len(counts) else {}
    out = []
    for asset in ASSETS:
        latest_time, latest_price = newest.get(asset, (None, None))
        out.append(
            {
                "asset": asset,
                "kind": ASSET_KIND[asset],
                "unit": UNITS[ASSET_KIND[asset]],
                "latest_time": latest_time,
                "latest_price": latest_price,
                "points": int(points.get(asset, 0)),
            }
        )
    return out


def query_prices(
    db: InfluxDB, asset: str, start, end, every: int | None, agg: str, limit: int
) -> tuple[list[dict], bool]:
    """Points of one asset in time order, and whether more than ``limit`` matched.

    With ``every`` (seconds) the points are ``agg`` of each time bucket, stamped with the
    bucket's start. When more points match than ``limit``, the most recent ones are kept.
    """
    where, params = time_filter(asset, start, end)
    params["limit"] = limit + 1  # one more than asked tells whether the answer is cut short
    if every is None:
        q = f"SELECT price FROM price{where} ORDER BY time DESC LIMIT $limit"
    else:
        # `every` is an int computed by parse_every: a number, not user text. (InfluxDB 1.x
        # only binds a duration given as {"duration": ...}, which the shared client does not
        # send.) fill(none) skips empty buckets instead of returning nulls for them.
        q = (
            f"SELECT {AGG_FUNCTION[agg]} AS price FROM price{where} "
            f"GROUP BY time({int(every)}s) fill(none) ORDER BY time DESC LIMIT $limit"
        )
    df = db.query(q, params=params)
    if not len(df):
        return [], False
    truncated = len(df) > limit
    df = df.iloc[:limit].iloc[::-1]  # newest first from InfluxDB -> time order
    times, prices = iso_times(df.index), df["price"].tolist()
    return [{"time": t, "price": p} for t, p in zip(times, prices)], truncated


SUMMARY_FIELDS = ("count", "first", "last", "min", "max", "mean", "stddev")


def query_summary(db: InfluxDB, asset: str, start, end) -> dict:
    """Count, first, last, min, max, mean and stddev of the prices, and the first/last times."""
    where, params = time_filter(asset, start, end)
    columns = ", ".join(f"{name}(price) AS {name}" for name in SUMMARY_FIELDS)
    stats = db.query(f"SELECT {columns} FROM price{where}", params=params)
    # With several functions InfluxDB stamps the row with the range start; a single first()
    # or last() returns the time of that point.
    first = db.query(f"SELECT first(price) FROM price{where}", params=params)
    last = db.query(f"SELECT last(price) FROM price{where}", params=params)
    row = stats.iloc[0].to_dict() if len(stats) else {}
    out = {name: number(row.get(name)) for name in SUMMARY_FIELDS}
    out["count"] = int(out["count"] or 0)  # no point in the range: 0, and the rest null
    out["first_time"] = iso(first.index[0]) if len(first) else None
    out["last_time"] = iso(last.index[0]) if len(last) else None
    return out


def query_quarantine(db: InfluxDB, start, end, latest: int) -> dict:
    """Quarantined ticks per reason, and the ``latest`` records (newest first).

    These use the JSON answer (:meth:`InfluxDB.execute`) rather than a DataFrame: ``raw`` is
    text that must come back exactly as stored, even when it looks like a number.
    """
    where, params = time_filter(None, start, end)
    counts = db.execute(
        f"SELECT count(raw) AS count FROM quarantine{where} GROUP BY reason", params=params
    )
    # LIMIT 0 would mean "no limit" to InfluxDB: ask for no records by not asking at all.
    records = [{}]
    if latest:
        records = db.execute(
            f"SELECT raw, asset, reason FROM quarantine{where} ORDER BY time DESC LIMIT $latest",
            params={**params, "latest": latest},
        )
    reasons = [
        {"reason": series.get("tags", {}).get("reason", ""), "count": int(series["values"][0][1])}
        for series in counts[0].get("series", [])
    ]
    reasons.sort(key=lambda r: (-r["count"], r["reason"]))
    rows = []
    for series in records[0].get("series", []):
        columns = series["columns"]
        rows += [dict(zip(columns, values)) for values in series["values"]]
    return {
        "total": sum(r["count"] for r in reasons),
        "reasons": reasons,
        "latest": [
            {
                "time": r["time"],
                "reason": r.get("reason") or "",
                "asset": r.get("asset") or "",
                "raw": r.get("raw") or "",
            }
            for r in rows
        ],
    }


# -- the live stream ---------------------------------------------------------------------------


@dataclass(eq=False)
class StreamClient:
    """One open ``/api/stream`` connection: its asset filter and its bounded queue."""

    assets: frozenset[str] | None
    queue: asyncio.Queue
    closed: bool = False

    def wants(self, asset: str) -> bool:
        return self.assets is None or asset in self.assets


@dataclass(eq=False)
class TickHub:
    """One NATS subscription to ``clean.>`` shared by every stream client (fan-out).

    Each client has a bounded queue. A client whose queue is full is too slow: it is
    disconnected (its browser reconnects by itself) instead of holding memory or slowing
    the others down.
    """

    nats_url: str
    queue_size: int
    heartbeat: float
    clients: set[StreamClient] = field(default_factory=set)
    nc: object | None = None
    _task: asyncio.Task | None = None
    _closing: bool = False

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def start(self) -> None:
        """Connect and subscribe in the background: the REST endpoints work without NATS."""
        self._task = asyncio.create_task(self._subscribe())

    async def _subscribe(self) -> None:
        # broker.connect keeps retrying until the server answers, and then reconnects and
        # re-subscribes by itself after any outage.
        self.nc = await broker.connect(self.nats_url, name=SERVICE)
        await self.nc.subscribe(f"{broker.CLEAN_PREFIX}.>", cb=self._on_message)
        log.info("subscribed to clean ticks", extra=log_fields(nats=self.nats_url))

    async def _on_message(self, msg) -> None:
        asset = msg.subject.partition(".")[2]
        try:
            tick = broker.decode(msg.data)
            # Re-encoded: one line (SSE data cannot hold a newline) and no NaN (not JSON).
            data = json.dumps(tick, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as err:  # BadMessage is a ValueError too
            STREAM_BAD.inc()
            log.debug("skipped a message on %s: %s", msg.subject, err)
            return
        STREAM_TICKS.inc()
        for client in list(self.clients):
            if client.wants(asset):
                try:
                    client.queue.put_nowait(data)
                except asyncio.QueueFull:
                    self._drop(client)

    def _drop(self, client: StreamClient) -> None:
        STREAM_DROPPED.inc()
        log.warning("dropped a stream client that did not keep up")
        self._close_client(client)

    def _close_client(self, client: StreamClient) -> None:
        client.closed = True
        self.clients.discard(client)
        with suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)  # wakes the client's loop; if full, it is awake

    async def events(self, assets: frozenset[str] | None) -> AsyncIterator[bytes]:
        """The SSE byte stream of one client: ticks, and a comment line as a heartbeat."""
        client = StreamClient(assets, asyncio.Queue(maxsize=self.queue_size))
        if self._closing:
            return
        self.clients.add(client)
        STREAM_CLIENTS.inc()
        try:
            # `retry`: how long a browser waits before it reconnects. The comment tells a
            # client that it is subscribed.
            yield b"retry: 3000\n: connected\n\n"
            while not client.closed:
                try:
                    data = await asyncio.wait_for(client.queue.get(), timeout=self.heartbeat)
                except TimeoutError:
                    # Keeps proxies from closing an idle connection, and finds dead clients.
                    yield b": heartbeat\n\n"
                    continue
                if data is None or client.closed:
                    break
                yield b"event: tick\ndata: " + data + b"\n\n"
        finally:
            self.clients.discard(client)
            STREAM_CLIENTS.dec()

    def close_streams(self) -> None:
        """End every open stream (on shutdown); new ones end at once."""
        self._closing = True
        for client in list(self.clients):
            self._close_client(client)

    async def stop(self) -> None:
        """Close the streams and the NATS connection."""
        self.close_streams()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.nc is not None and not self.nc.is_closed:
            with suppress(Exception):  # already gone: nothing left to close
                await asyncio.wait_for(self.nc.close(), timeout=2)


def close_streams_on_signal(hub: TickHub) -> None:
    """End the SSE streams as soon as SIGTERM or SIGINT arrives.

    uvicorn waits for every open response to finish before it runs the app's shutdown, and
    an SSE stream never finishes by itself; so the streams are closed from the signal
    handler, and then uvicorn's own handler runs as before. Call this during startup, once
    uvicorn has installed its handlers.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(hub.close_streams)
            previous(signum, frame)

        signal.signal(sig, handler)


# -- HTTP plumbing -----------------------------------------------------------------------------

# The dashboard runs only its own files: scripts from this server, no inline code, and data
# only from this server. plotly.js adds the style rules of its charts at run time, which CSP
# allows for styles only with 'unsafe-inline' (scripts never get it).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class HttpMetrics:
    """ASGI middleware: counts and times every request, and adds the security headers.

    Plain ASGI (not BaseHTTPMiddleware) so that a long SSE response streams through
    untouched. The time measured is until the response starts, which for the stream is
    the time to subscribe, not the length of the connection.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        answered = False

        async def send_with_headers(message):
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                route = route_name(scope)
                REQUESTS.labels(route, str(message["status"])).inc()
                REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not answered:  # the app failed before answering: the client gets a 500
                REQUESTS.labels(route_name(scope), "500").inc()


def route_name(scope) -> str:
    """The route's path template (``/api/prices/{asset}``): one label value per endpoint."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def plotly_js() -> Path:
    """The plotly.js bundle shipped inside the installed ``plotly`` Python package."""
    return Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js"))


# -- response schemas (for /openapi.json) ------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(examples=["every: '1h);DROP' is not a duration: use ..."])
    detail: list[dict] | None = None


class AssetInfo(BaseModel):
    asset: str = Field(examples=["btc"])
    kind: str = Field(description="crypto or metal", examples=["crypto"])
    unit: str = Field(examples=["USD/coin"])
    latest_time: str | None = Field(description="time of the latest stored price")
    latest_price: float | None = Field(examples=[63000.5])
    points: int = Field(description="number of stored prices", examples=[54949])


class AssetList(BaseModel):
    assets: list[AssetInfo]


class Point(BaseModel):
    time: str = Field(description="ISO-8601 UTC", examples=["2021-04-14T06:13:00Z"])
    price: float = Field(examples=[63000.5])


class PriceSeries(BaseModel):
    asset: str = Field(examples=["btc"])
    start: str | None = Field(examples=["2021-04-14T00:00:00Z"])
    end: str | None = Field(examples=["2021-04-15T00:00:00Z"])
    every: str | None = Field(description="bucket length, when downsampled", examples=["1h"])
    agg: str | None = Field(description="aggregate of each bucket", examples=["mean"])
    count: int = Field(description="number of points returned", examples=[24])
    truncated: bool = Field(description="more points matched than `limit`; the latest are kept")
    points: list[Point]


class Summary(BaseModel):
    asset: str = Field(examples=["btc"])
    start: str | None = None
    end: str | None = None
    count: int = Field(examples=[1440])
    first: float | None = Field(description="the earliest price in the range")
    last: float | None = Field(description="the latest price in the range")
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stddev: float | None = Field(description="sample standard deviation (null below 2 points)")
    first_time: str | None = None
    last_time: str | None = None


class ReasonCount(BaseModel):
    reason: str = Field(examples=["price not a number"])
    count: int = Field(examples=[12])


class QuarantineRecord(BaseModel):
    time: str = Field(description="when the message reached the broker")
    reason: str = Field(examples=["invalid JSON"])
    asset: str = Field(description="the asset, when the message named one")
    raw: str = Field(description="the message as received (at most 1,000 characters)")


class QuarantineReport(BaseModel):
    start: str | None = None
    end: str | None = None
    total: int = Field(examples=[17])
    reasons: list[ReasonCount]
    latest: list[QuarantineRecord]


ERRORS = {
    400: {"model": ErrorBody, "description": "A parameter is not valid (the error says which)"},
    503: {"model": ErrorBody, "description": "InfluxDB is not reachable right now"},
}

StartParam = Annotated[
    str | None,
    Query(
        max_length=40,
        description=f"Start of the range (included): {TIME_HELP}. Default: the first point.",
        examples=["2021-04-14T00:00:00Z"],
    ),
]
EndParam = Annotated[
    str | None,
    Query(
        max_length=40,
        description=f"End of the range (excluded): {TIME_HELP}. Default: no end.",
        examples=["2021-04-15T00:00:00Z"],
    ),
]
AssetParam = Annotated[
    str,
    PathParam(
        max_length=40,
        description=f"One of {', '.join(ASSETS)} (aliases such as BTC-USD or XAU work too)",
        examples=["btc"],
    ),
]


# -- the app -----------------------------------------------------------------------------------


def build_app(settings: Settings, api: ApiSettings) -> FastAPI:
    """The api as a FastAPI app: routes, middleware, and the stream's NATS subscription."""
    db = InfluxDB.connect("reader", settings=settings, timeout=10, retries=1, backoff=0.1)
    probe = InfluxDB.connect("reader", settings=settings, timeout=2, retries=0)
    hub = TickHub(settings.require_nats_url(), api.stream_queue, api.heartbeat)

    async def influx_ready() -> str | None:
        try:
            await asyncio.to_thread(probe.execute, "SHOW MEASUREMENTS LIMIT 1")
        except InfluxError as err:
            return str(err)
        return None

    def nats_ready() -> str | None:
        return None if hub.connected else f"not connected to NATS at {hub.nats_url}"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        hub.start()
        close_streams_on_signal(hub)
        yield
        await hub.stop()

    app = create_app(
        SERVICE,
        registry=REGISTRY,
        ready_checks={"influxdb": influx_ready, "nats": nats_ready},
        description="Prices stored in InfluxDB, over REST and as a live stream, and a dashboard.",
        lifespan=lifespan,
    )
    # Swagger UI and ReDoc load their code from a CDN; the lab works offline, so only the
    # schema itself (/openapi.json) is served.
    app.router.routes = [
        r for r in app.router.routes if not getattr(r, "path", "").startswith(("/docs", "/redoc"))
    ]

    @app.exception_handler(InfluxError)
    async def influx_unavailable(request: Request, exc: InfluxError):
        log.warning("InfluxDB query failed: %s", exc, extra=log_fields(path=request.url.path))
        if isinstance(exc, InfluxAuthError):
            message = "the api may not read the price database: check its InfluxDB user"
        else:
            message = "the price database (InfluxDB) is not reachable right now: try again soon"
        return JSONResponse(status_code=503, content={"error": message})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(
            status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unexpected error", extra=log_fields(path=request.url.path))
        return JSONResponse(status_code=500, content={"error": "internal error (see the log)"})

    @app.get(
        "/api/assets",
        tags=["prices"],
        summary="The assets and their latest stored price",
        response_model=AssetList,
        responses={503: ERRORS[503]},
    )
    def assets():
        """Every asset the lab knows (crypto first), with its unit, its latest stored price
        and time (null when none is stored yet) and how many prices are stored.

        Example: `curl http://127.0.0.1:8000/api/assets`
        """
        return {"assets": query_assets(db)}

    @app.get(
        "/api/prices/{asset}",
        tags=["prices"],
        summary="Prices of one asset over a time range, raw or downsampled",
        response_model=PriceSeries,
        responses=ERRORS,
    )
    def prices(
        asset: AssetParam,
        start: StartParam = None,
        end: EndParam = None,
        every: Annotated[
            str | None,
            Query(
                max_length=12,
                description="Downsample into buckets of this length: a whole number and a "
                "unit s, m, h, d or w, from 1s to 365d. Each point is then `agg` of its "
                "bucket, stamped with the bucket's start.",
                examples=["1h"],
                json_schema_extra={"pattern": EVERY_PATTERN},
            ),
        ] = None,
        agg: Annotated[
            Aggregate | None,
            Query(description="How a bucket is summarised (only with `every`; default mean)"),
        ] = None,
        limit: Annotated[
            int | None,
            Query(
                ge=1,
                le=100_000,
                description="At most this many points (default and maximum: API_MAX_POINTS). "
                "When more match, the most recent are returned and `truncated` is true.",
                examples=[500],
            ),
        ] = None,
    ):
        """Stored prices of one asset in time order.

        Examples:
        `curl 'http://127.0.0.1:8000/api/prices/btc?start=2021-04-14&end=2021-04-15'`,
        `curl 'http://127.0.0.1:8000/api/prices/gold?every=30d&agg=max'`
        """
        name = parse_asset(asset)
        first, last = parse_range(start, end)
        seconds = parse_every(every) if every is not None else None
        if agg is not None and seconds is None:
            raise bad_parameter("agg", "agg only applies to downsampled prices: add every=1h")
        if limit is not None and limit > api.max_points:
            raise bad_parameter(
                "limit", f"{limit} is more than this server returns at once ({api.max_points})"
            )
        aggregate = (agg or "mean") if seconds else None
        points, truncated = query_prices(
            db, name, first, last, seconds, aggregate or "mean", limit or api.max_points
        )
        # A JSONResponse skips re-validating up to 100,000 points against PriceSeries (which
        # would take longer than the query); the schema still documents the answer.
        return JSONResponse(
            {
                "asset": name,
                "start": iso(first),
                "end": iso(last),
                "every": every,
                "agg": aggregate,
                "count": len(points),
                "truncated": truncated,
                "points": points,
            }
        )

    @app.get(
        "/api/summary/{asset}",
        tags=["prices"],
        summary="Statistics of one asset's prices over a time range",
        response_model=Summary,
        responses=ERRORS,
    )
    def summary(asset: AssetParam, start: StartParam = None, end: EndParam = None):
        """Count, first, last, min, max, mean and standard deviation of the stored prices, and
        the times of the first and last of them. With no price in the range, count is 0 and
        the rest null.

        Example: `curl 'http://127.0.0.1:8000/api/summary/eth?start=-30d'`
        """
        name = parse_asset(asset)
        first, last = parse_range(start, end)
        return {"asset": name, "start": iso(first), "end": iso(last)} | query_summary(
            db, name, first, last
        )

    @app.get(
        "/api/quarantine",
        tags=["quality"],
        summary="Quarantined ticks: counts per reason and the latest records",
        response_model=QuarantineReport,
        responses=ERRORS,
    )
    def quarantine(
        start: StartParam = None,
        end: EndParam = None,
        latest: Annotated[
            int, Query(ge=0, le=100, description="How many of the latest records to list")
        ] = 10,
    ):
        """What the ingest workers set aside instead of storing, and why (see docs/etl.md).

        Example: `curl 'http://127.0.0.1:8000/api/quarantine?start=-1h&latest=5'`
        """
        first, last = parse_range(start, end)
        return {"start": iso(first), "end": iso(last)} | query_quarantine(db, first, last, latest)

    @app.get(
        "/api/stream",
        tags=["live"],
        summary="Live ticks as Server-Sent Events",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "An endless text/event-stream: each tick is an event `tick` "
                "whose data is the tick's JSON; a comment line every ~15 s keeps it open.",
                "content": {
                    "text/event-stream": {
                        "example": 'event: tick\ndata: {"asset":"btc","price":63000.5,'
                        '"time":"2021-04-14T06:13:00Z","source":"replay","seq":7}\n\n'
                    }
                },
            },
            400: ERRORS[400],
        },
    )
    async def stream(
        assets: Annotated[
            str | None,
            Query(
                max_length=200,
                description="Comma-separated assets to receive (default: all)",
                examples=["btc,eth"],
            ),
        ] = None,
    ):
        """Each tick once it is cleaned and stored (NATS subject `clean.<asset>`), pushed to
        the client as it happens. In a browser: `new EventSource("/api/stream?assets=btc")`.

        Example: `curl -N 'http://127.0.0.1:8000/api/stream?assets=btc,eth'`
        """
        wanted = parse_assets(assets)
        return StreamingResponse(
            hub.events(wanted),
            media_type="text/event-stream",
            # no-cache and no proxy buffering (nginx ingress): each event goes out at once.
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    static_files = {
        "dashboard.js": STATIC_DIR / "dashboard.js",
        "dashboard.css": STATIC_DIR / "dashboard.css",
        "plotly.min.js": plotly_js(),
    }

    @app.get("/", include_in_schema=False)
    async def dashboard():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        # Only the listed files: a request can never name another path on the disk.
        path = static_files.get(name)
        if path is None or not path.is_file():
            raise StarletteHTTPException(404, f"no static file {name[:40]!r}")
        return FileResponse(path, headers={"cache-control": "no-cache"})

    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(api.cors_origins), allow_methods=["GET"]
        )
    app.add_middleware(HttpMetrics)
    hide_validation_errors(app)
    return app


def hide_validation_errors(app: FastAPI) -> None:
    """Drop FastAPI's default 422 answers from the schema: bad parameters get a 400 here."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi


def main() -> None:
    configure_logging(SERVICE)
    try:
        settings = load_settings()
        settings.require_influx_url()
        api = read_api_settings()
        app = build_app(settings, api)
    except ConfigError as err:
        log.error(str(err))
        raise SystemExit(2) from None
    serve(app, "LAB_PORT", DEFAULT_PORT)


if __name__ == "__main__":
    sys.exit(main())
