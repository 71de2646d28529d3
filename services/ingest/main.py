"""The ingest service: JetStream ticks -> validated, cleaned points in InfluxDB.

Run it from the repository root (the same command runs in its container)::

    python services/ingest/main.py

It is configured only through environment variables (see ``services/ingest/README.md``).
The work itself is in :mod:`lab_helpers.ingest`; this file wires it into a web app with
``/healthz``, ``/readyz``, ``/metrics`` and ``/stats``, and runs the worker loop as a
background task for as long as the app runs. On SIGTERM uvicorn stops the app, the worker
finishes and acknowledges the batch in hand, closes NATS, and the process exits with 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from lab_helpers.config import ConfigError, Credentials, env_value, load_settings
from lab_helpers.influx import InfluxDB
from lab_helpers.ingest import (
    DEFAULT_BATCH,
    DEFAULT_MAX_DELIVER,
    DEFAULT_MEMORY,
    DEFAULT_STALL,
    IngestStats,
    IngestWorker,
)
from lab_helpers.service import configure_logging, create_app, serve

NAME = "ingest"
DEFAULT_PORT = 8002


def durable_name(text: str) -> str:
    """A JetStream consumer name: letters, digits, ``-`` and ``_`` (dots would split it)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ValueError(text)
    return text


durable_name.__name__ = "a name of letters, digits, - and _"


@dataclass(frozen=True)
class Config:
    """The service's settings, read from the environment by :func:`read_config`."""

    nats_url: str
    influx_url: str
    database: str
    credentials: Credentials
    batch: int
    max_wait: float
    durable: str
    ack_wait: float
    memory: int
    max_deliver: int
    stall_after: float


def read_config() -> Config:
    """Read and check every setting; :class:`ConfigError` names the first bad one."""
    settings = load_settings()
    user, password = os.environ.get("LAB_INFLUX_USER"), os.environ.get("LAB_INFLUX_PASSWORD")
    # Its own identity (the write-only user) first; else the stack's ingest user.
    credentials = Credentials(user, password) if user and password else settings.credentials(NAME)
    return Config(
        nats_url=settings.require_nats_url(),
        influx_url=settings.require_influx_url(),
        database=settings.influx_database,
        credentials=credentials,
        batch=env_value("INGEST_BATCH", DEFAULT_BATCH, int, minimum=1, maximum=10_000),
        max_wait=env_value("INGEST_MAX_WAIT", 0.2, float, minimum=0.01, maximum=30),
        durable=env_value("INGEST_DURABLE", "ingest", durable_name),
        ack_wait=env_value("INGEST_ACK_WAIT", 30.0, float, minimum=1, maximum=3600),
        memory=env_value("INGEST_DEDUP_SIZE", DEFAULT_MEMORY, int, minimum=0, maximum=10_000_000),
        max_deliver=env_value(
            "INGEST_MAX_DELIVER", DEFAULT_MAX_DELIVER, int, minimum=2, maximum=1000
        ),
        stall_after=env_value(
            "INGEST_STALL_SECONDS", DEFAULT_STALL, float, minimum=1, maximum=86_400
        ),
    )


def build_app(config: Config):
    """The FastAPI app: health, readiness, metrics, ``/stats``, and the worker's lifetime."""
    registry = CollectorRegistry()
    stats = IngestStats(registry)
    # A write must end well within ack_wait (timeout x 3 tries + backoff), or JetStream would
    # hand the batch to another replica while this one is still writing it.
    db = InfluxDB(
        config.influx_url,
        config.credentials,
        config.database,
        timeout=min(10.0, max(1.0, config.ack_wait / 4)),
        retries=2,
        backoff=0.25,
    )
    worker = IngestWorker(
        config.nats_url,
        db,
        batch=config.batch,
        max_wait=config.max_wait,
        durable=config.durable,
        ack_wait=config.ack_wait,
        memory_size=config.memory,
        stats=stats,
        max_deliver=config.max_deliver,
        stall_after=config.stall_after,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        await worker.close()  # SIGTERM: finish the batch in hand, ack it, close NATS

    app = create_app(
        NAME,
        registry=registry,
        ready_checks={
            "nats": worker.nats_problem,
            "influxdb": worker.influx_problem,
            "worker": worker.worker_problem,
        },
        live_checks={"worker": worker.liveness_problem},
        description="Consumes ticks from NATS JetStream, cleans them and stores them in "
        "InfluxDB; bad ones go to the quarantine with the reason.",
        lifespan=lifespan,
    )

    @app.get("/stats", tags=["ingest"], summary="Counts: stored, quarantined by reason, batches")
    async def get_stats():
        return {**stats.snapshot(), "duplicate_memory": len(worker.memory)}

    return app


def main() -> None:
    """Read the settings (exit 2 with one line if one is bad), then serve until SIGTERM."""
    try:
        configure_logging(NAME)
        config = read_config()
    except ConfigError as err:
        # Before logging is set up (a bad LOG_LEVEL) this still prints the one line.
        logging.getLogger(NAME).error(str(err))
        raise SystemExit(2) from None
    serve(build_app(config), "LAB_PORT", DEFAULT_PORT)


if __name__ == "__main__":
    main()
