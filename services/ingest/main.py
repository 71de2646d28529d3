"""The ingest service: JetStream ticks -> validated, cleaned points in InfluxDB.

Run it from the repository root (the same command runs in its container):

    python services/ingest/main.py

It is configured only through environment variables (`settings.py`, listed in
`services/ingest/README.md`). This file wires the service together: the worker loop
(`worker.py`, around the shared `lab_helpers.ingest`) runs as a background task for as long
as the web app runs, which answers `/healthz`, `/readyz`, `/metrics` and `/stats`. On SIGTERM
uvicorn stops the app, the worker finishes and acknowledges the batch in hand, closes NATS,
and the process exits with 0.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from lab_helpers.service import create_app, run_service

from settings import DEFAULT_PORT, SERVICE, Settings, read_settings
from worker import IngestStats, IngestWorker


def build_app(settings: Settings) -> FastAPI:
    """The web app: health, readiness, metrics, `/stats`, and the worker's lifetime."""
    registry = CollectorRegistry()
    stats = IngestStats(registry)
    worker = IngestWorker.from_settings(settings, stats)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        await worker.close()  # SIGTERM: finish the batch in hand, ack it, close NATS

    app = create_app(
        SERVICE,
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
    run_service(SERVICE, read_settings, build_app, DEFAULT_PORT)


if __name__ == "__main__":
    main()
