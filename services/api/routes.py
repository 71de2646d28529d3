"""The api's endpoints, on one `APIRouter`: the prices over REST, the live stream, the
dashboard's files; and how their errors are answered.

- `GET /api/assets`: every asset the lab knows, with its latest stored price;
- `GET /api/prices/{asset}`: a time range, raw or downsampled (`every` and `agg`);
- `GET /api/summary/{asset}`: count, first, last, min, max, mean, stddev over a range;
- `GET /api/quarantine`: how many ticks were quarantined, per reason, and the latest ones;
- `GET /api/stream`: each tick as it is cleaned and stored, pushed as Server-Sent Events;
- `GET /`: the dashboard (its files under `/static/`, plotly.js from the installed `plotly`
  package: the page needs no internet).

A route checks its parameters and calls `queries.py` (parameters -> InfluxQL -> JSON) or the
stream's hub (`live.py`); the answers are the models of `models.py`. What a route needs, the
InfluxDB client, the hub and the settings, `main.build_app` keeps in `app.state`.
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_helpers.errors import InfluxAuthError, InfluxError
from lab_helpers.influx import InfluxDB
from lab_helpers.service import log_fields

from live import TickHub
from models import ERRORS, AssetList, PriceSeries, QuarantineReport, Summary
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
from settings import SERVICE, Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"

log = logging.getLogger(SERVICE)
router = APIRouter()

# -- what a route needs (kept in app.state by main.build_app) ---------------------------------


def database(request: Request) -> InfluxDB:
    """The InfluxDB client, as the read-only user."""
    return request.app.state.db


def tick_hub(request: Request) -> TickHub:
    """The live stream's one NATS subscription, shared by every client."""
    return request.app.state.hub


def api_settings(request: Request) -> Settings:
    return request.app.state.settings


DbDep = Annotated[InfluxDB, Depends(database)]
HubDep = Annotated[TickHub, Depends(tick_hub)]
SettingsDep = Annotated[Settings, Depends(api_settings)]

# -- parameters --------------------------------------------------------------------------------


def time_param(bound: str, side: str, default: str, example: str):
    """The type of a `start` or `end` parameter: a time as `queries.parse_time` reads it."""
    description = f"{bound} of the range ({side}): {TIME_HELP}. Default: {default}."
    return Annotated[str | None, Query(max_length=40, description=description, examples=[example])]


StartParam = time_param("Start", "included", "the first point", "2021-04-14T00:00:00Z")
EndParam = time_param("End", "excluded", "no end", "2021-04-15T00:00:00Z")
AssetParam = Annotated[
    str,
    PathParam(
        max_length=40,
        description="An asset of the catalogue (data/assets.yaml) such as btc or gold "
        "(aliases such as BTC-USD or XAU work too)",
        examples=["btc"],
    ),
]

# -- the endpoints -----------------------------------------------------------------------------


@router.get(
    "/api/assets",
    tags=["prices"],
    summary="The assets and their latest stored price",
    response_model=AssetList,
    responses={503: ERRORS[503]},
)
def assets(db: DbDep):
    """Every asset of the catalogue (data/assets.yaml, in its order), with its unit, its
    latest stored price and time (null when none is stored yet) and how many prices are
    stored.

    Example: `curl http://127.0.0.1:8000/api/assets`
    """
    return {"assets": query_assets(db)}


@router.get(
    "/api/prices/{asset}",
    tags=["prices"],
    summary="Prices of one asset over a time range, raw or downsampled",
    response_model=PriceSeries,
    responses=ERRORS,
)
def prices(
    db: DbDep,
    settings: SettingsDep,
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
    if limit is not None and limit > settings.max_points:
        raise bad_parameter(
            "limit", f"{limit} is more than this server returns at once ({settings.max_points})"
        )
    aggregate = (agg or "mean") if seconds else None
    points, truncated = query_prices(
        db, name, first, last, seconds, aggregate or "mean", limit or settings.max_points
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


@router.get(
    "/api/summary/{asset}",
    tags=["prices"],
    summary="Statistics of one asset's prices over a time range",
    response_model=Summary,
    responses=ERRORS,
)
def summary(db: DbDep, asset: AssetParam, start: StartParam = None, end: EndParam = None):
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


@router.get(
    "/api/quarantine",
    tags=["quality"],
    summary="Quarantined ticks: counts per reason and the latest records",
    response_model=QuarantineReport,
    responses=ERRORS,
)
def quarantine(
    db: DbDep,
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


@router.get(
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
    hub: HubDep,
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


# -- the dashboard -----------------------------------------------------------------------------


def plotly_js() -> Path:
    """The plotly.js bundle shipped inside the installed `plotly` Python package."""
    return Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js"))


# Only these files: a request can never name another path on the disk.
STATIC_FILES = {
    "dashboard.js": STATIC_DIR / "dashboard.js",
    "dashboard.css": STATIC_DIR / "dashboard.css",
    "plotly.min.js": plotly_js(),
}


@router.get("/", include_in_schema=False)
async def dashboard():
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str):
    path = STATIC_FILES.get(name)
    if path is None or not path.is_file():
        raise StarletteHTTPException(404, f"no static file {name[:40]!r}")
    return FileResponse(path, headers={"cache-control": "no-cache"})


# -- errors ------------------------------------------------------------------------------------


async def influx_unavailable(request: Request, exc: InfluxError):
    log.warning("InfluxDB query failed: %s", exc, extra=log_fields(path=request.url.path))
    if isinstance(exc, InfluxAuthError):
        message = "the api may not read the price database: check its InfluxDB user"
    else:
        message = "the price database (InfluxDB) is not reachable right now: try again soon"
    return JSONResponse(status_code=503, content={"error": message})


async def http_error(request: Request, exc: StarletteHTTPException):
    return JSONResponse(
        status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
    )


async def internal_error(request: Request, exc: Exception):
    log.exception("unexpected error", extra=log_fields(path=request.url.path))
    return JSONResponse(status_code=500, content={"error": "internal error (see the log)"})


EXCEPTION_HANDLERS = {
    InfluxError: influx_unavailable,
    StarletteHTTPException: http_error,
    Exception: internal_error,
}
"""How the app answers what a route raises: JSON with one `error` sentence, never a
traceback (bad parameters get their 400 from `lab_helpers.service`)."""


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
