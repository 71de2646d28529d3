"""What every microservice of the lab shares: logs, health, metrics, errors, start and stop.

Each service (`services/<name>/main.py`) builds its FastAPI app with `create_app`
and runs it with `run_service`. That gives it, the same way in every service:

- `GET /healthz`: the process is alive and not stuck (Kubernetes liveness probe); 503 with
  the reason when one of its liveness checks fails, so that Kubernetes restarts it. The
  header `Lab-Pid` names the process, so that whoever started it knows the answer is its
  own;
- `GET /readyz`: its dependencies answer (readiness probe); 503 with the reason if not;
- `GET /metrics`: Prometheus text format;
- structured logs: one JSON object per line on stdout, which `kubectl logs` shows;
- 400 JSON errors for bad parameters (`{"error": "...", "detail": [...]}`);
- a graceful stop on SIGTERM: uvicorn stops accepting, finishes requests, then runs the
  app's shutdown (where workers drain and connections close).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import env_value
from .errors import LabError
from .stack import PID_HEADER

ReadyCheck = Callable[[], "str | None | Awaitable[str | None]"]
S = TypeVar("S")
PID = str(os.getpid())


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, service, logger, message, extra fields."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str) -> logging.Logger:
    """Send every log record to stdout as JSON; level from `LOG_LEVEL` (default info)."""
    level = env_value("LOG_LEVEL", "info", str.lower, choices=("debug", "info", "warning", "error"))
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):  # one line per request would drown the useful ones
        logging.getLogger(noisy).setLevel("WARNING")
    return logging.getLogger(service)


def log_fields(**fields) -> dict:
    """`log.info("msg", extra=log_fields(asset="btc"))` adds fields to the JSON line."""
    return {"fields": fields}


def create_app(
    name: str,
    *,
    registry: CollectorRegistry,
    ready_checks: dict[str, ReadyCheck] | None = None,
    live_checks: dict[str, ReadyCheck] | None = None,
    description: str = "",
    lifespan=None,
) -> FastAPI:
    """A FastAPI app with `/healthz`, `/readyz`, `/metrics` and 400 JSON errors.

    `ready_checks` maps a dependency name to a function returning `None` when it is
    fine, or a short text saying what is wrong; `/readyz` runs them all. `live_checks`
    (same form) say whether the process itself is stuck; `/healthz` runs them. Only a
    problem that a restart would cure belongs there: a database that is down is a readiness
    problem, since restarting the service would not bring it back.
    """
    app = FastAPI(title=f"lab {name}", description=description, lifespan=lifespan)
    checks = dict(ready_checks or {})
    liveness = dict(live_checks or {})

    async def problems_of(to_run: dict[str, ReadyCheck]) -> dict[str, str]:
        problems = {}
        for dep, check in to_run.items():
            result = check()
            if inspect.isawaitable(result):
                try:
                    result = await asyncio.wait_for(result, timeout=2.0)
                except TimeoutError:
                    result = "no answer within 2 s"
            if result:
                problems[dep] = result
        return problems

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        detail = [
            {
                "parameter": ".".join(str(p) for p in err.get("loc", ())[1:]),
                "problem": err.get("msg"),
            }
            for err in exc.errors()
        ]
        first = detail[0] if detail else {"parameter": "?", "problem": "invalid"}
        return JSONResponse(
            status_code=400,
            content={"error": f"{first['parameter']}: {first['problem']}", "detail": detail},
        )

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers, not stuck")
    async def healthz():
        problems = await problems_of(liveness)
        if problems:
            return JSONResponse(status_code=503, content={"status": "stuck", "problems": problems})
        # The pid tells whoever started the process that the answer is its own, not another
        # program's on the same port.
        return JSONResponse({"status": "ok", "service": name}, headers={PID_HEADER: PID})

    @app.get("/readyz", tags=["health"], summary="Readiness: every dependency answers")
    async def readyz():
        problems = await problems_of(checks)
        if problems:
            return JSONResponse(
                status_code=503, content={"status": "not ready", "problems": problems}
            )
        return {"status": "ready", "service": name}

    @app.get(
        "/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse
    )
    async def metrics():
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _serve(app: FastAPI, host: str, port: int) -> None:
    """Run the app with uvicorn on `host` and `port` until SIGTERM or Ctrl-C."""
    import uvicorn

    # uvicorn stops gracefully on SIGTERM (or Ctrl-C), then raises the signal again once it
    # is done; handling that with a normal exit makes the exit code 0, which Kubernetes and
    # the stack read as a clean stop rather than a crash.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=10)


def run_service(
    name: str,
    read_settings: Callable[[], S],
    build_app: Callable[[S], FastAPI],
    default_port: int,
) -> None:
    """The `main()` of every service: JSON logs (`LOG_LEVEL`), its settings read and its app
    built, then served on `LAB_HOST` (default 127.0.0.1) and `LAB_PORT` (default
    `default_port`) until SIGTERM. A `LabError` on the way (a bad setting, a data file that
    is missing) is one log line and exit code 2, which Kubernetes shows as the container's
    last words."""
    try:
        configure_logging(name)
        app = build_app(read_settings())
        host = env_value("LAB_HOST", "127.0.0.1")
        port = env_value("LAB_PORT", default_port, int, minimum=1, maximum=65535)
    except LabError as err:
        # Before logging is set up (a bad LOG_LEVEL), Python still prints the one line.
        logging.getLogger(name).error(str(err))
        raise SystemExit(2) from None
    _serve(app, host, port)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)
