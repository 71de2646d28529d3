"""The source service: emits price ticks to NATS JetStream, one message per tick.

Run it from the repository root (the same command runs in its container):

    python services/source/main.py

It is configured only through environment variables (`settings.py`, listed in
`services/source/README.md`). This file wires the service together: the producer
(`producer.py`: replay or live, paced, published) runs as a background task for as long as
the web app runs, which answers `/latest`, `/latest/{asset}`, `/ticks` and `/stats`
(`routes.py`), plus `/healthz`, `/readyz` and `/metrics`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lab_helpers.service import create_app, run_service

from producer import Producer
from routes import router
from settings import DEFAULT_PORT, SERVICE, Settings, read_settings


def build_app(settings: Settings) -> FastAPI:
    """The web app: the shared endpoints, the source's own, and the producer's lifetime.

    The producer reads its data (or plans its live endpoints) now: a data set that is
    missing stops the start-up with one sentence."""
    producer = Producer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(producer.run(), name="producer")
        yield
        await producer.stop(task)

    app = create_app(
        SERVICE,
        registry=producer.registry,
        ready_checks={"nats": producer.ready_problem},
        description="Emits price ticks to NATS JetStream (subjects ticks.<asset>).",
        lifespan=lifespan,
    )
    app.state.producer = producer
    app.include_router(router)
    return app


def main() -> None:
    """Read the settings (exit 2 with one line if one is bad), then serve until SIGTERM."""
    run_service(SERVICE, read_settings, build_app, DEFAULT_PORT)


if __name__ == "__main__":
    main()
