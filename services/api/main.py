"""The api service: the stored prices over REST, live ticks over Server-Sent Events, and the
browser dashboard.

Run it from the repository root (the same command runs in its container):

    python services/api/main.py

It is configured only through environment variables (`settings.py`, listed in
`services/api/README.md`). This file wires the service together: the InfluxDB client (as
the read-only `reader` user), the stream's NATS subscription (`live.py`), the endpoints
(`routes.py`, answering with the models of `models.py` what `queries.py` asks InfluxDB:
every value a user sends travels as a bound parameter, never as query text) and what wraps
every request (`middleware.py`: metrics, security headers).
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from lab_helpers.errors import InfluxError
from lab_helpers.influx import InfluxDB
from lab_helpers.service import create_app, run_service

from live import TickHub, close_streams_on_signal
from metrics import REGISTRY
from middleware import HttpMetrics
from routes import EXCEPTION_HANDLERS, hide_validation_errors, router
from settings import DEFAULT_PORT, SERVICE, Settings, read_settings


def build_app(settings: Settings) -> FastAPI:
    """The api as a FastAPI app: routes, middleware, and the stream's NATS subscription."""
    where = (settings.influx_url, settings.credentials, settings.database)
    db = InfluxDB(*where, timeout=10, retries=1, backoff=0.1)
    probe = InfluxDB(*where, timeout=2, retries=0)
    hub = TickHub(SERVICE, settings.nats_url, settings.stream_queue, settings.heartbeat)

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
    app.state.db, app.state.hub, app.state.settings = db, hub, settings
    app.include_router(router)
    for error, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error, handler)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET"]
        )
    app.add_middleware(HttpMetrics)
    hide_validation_errors(app)
    return app


def main() -> None:
    """Read the settings (exit 2 with one line if one is bad), then serve until SIGTERM."""
    run_service(SERVICE, read_settings, build_app, DEFAULT_PORT)


if __name__ == "__main__":
    sys.exit(main())
