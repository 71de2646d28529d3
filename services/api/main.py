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

Safety rules that every query follows: the api reads InfluxDB as the read-only ``reader``
user, and every value a user sends travels to InfluxDB as a bound parameter, never as query
text (``queries.py``). Beside this file: ``queries.py`` (parameters -> InfluxQL -> JSON),
``live.py`` (the live stream) and ``metrics.py`` (``/metrics``).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import re
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_helpers.config import ConfigError, Settings, csv_list, env_value, load_settings
from lab_helpers.errors import InfluxAuthError, InfluxError
from lab_helpers.influx import InfluxDB
from lab_helpers.service import configure_logging, create_app, log_fields, serve

from live import TickHub, close_streams_on_signal
from metrics import REGISTRY, REQUEST_SECONDS, REQUESTS
from queries import (
    EVERY_PATTERN,
    TIME_HELP,
    Aggregate,
    bad_parameter,
    iso,
    parse_asset,
    parse_assets,
    parse_every,
    parse_range,
    query_assets,
    query_prices,
    query_quarantine,
    query_summary,
)

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


# -- HTTP plumbing -----------------------------------------------------------------------------

# The dashboard runs only its own files: scripts from this server, no inline code, and data
# only from this server. plotly.js adds the style rules of its charts at run time, which CSP
# allows for styles only with 'unsafe-inline' (scripts never get it). Only pages of its own
# address may frame it: a notebook in JupyterLab does, through Jupyter's proxy
# (lab_helpers.dashboard), which serves it from JupyterLab's own address.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "SAMEORIGIN",
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
    title: str = Field(examples=["Bitcoin"])
    kind: str = Field(
        description="crypto, metal, or the kind its catalogue entry names", examples=["crypto"]
    )
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
        description="An asset of the catalogue (data/assets.yaml) such as btc or gold "
        "(aliases such as BTC-USD or XAU work too)",
        examples=["btc"],
    ),
]


# -- the app -----------------------------------------------------------------------------------


def build_app(settings: Settings, api: ApiSettings) -> FastAPI:
    """The api as a FastAPI app: routes, middleware, and the stream's NATS subscription."""
    db = InfluxDB.connect("reader", settings=settings, timeout=10, retries=1, backoff=0.1)
    probe = InfluxDB.connect("reader", settings=settings, timeout=2, retries=0)
    hub = TickHub(SERVICE, settings.require_nats_url(), api.stream_queue, api.heartbeat)

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
        """Every asset of the catalogue (data/assets.yaml, in its order), with its unit, its
        latest stored price and time (null when none is stored yet) and how many prices are
        stored.

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
