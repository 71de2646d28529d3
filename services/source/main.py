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
import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lab_helpers.config import ConfigError
from lab_helpers.errors import LabError
from lab_helpers.service import configure_logging, create_app, serve

from producer import Producer
from routes import router
from settings import DEFAULT_PORT, SERVICE, read_settings

log = logging.getLogger(SERVICE)


def build_app(producer: Producer) -> FastAPI:
    """The web app: the shared endpoints, the source's own, and the producer's lifetime."""

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
    """Read the settings and the data (exit 2 with one line if anything is wrong), then
    serve until SIGTERM."""
    try:
        configure_logging(SERVICE)
    except ConfigError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None
    try:
        producer = Producer(read_settings())
    except LabError as err:  # a bad setting, an unknown data set, a missing data file
        log.error(str(err))
        raise SystemExit(2) from None
    serve(build_app(producer), "LAB_PORT", DEFAULT_PORT)


if __name__ == "__main__":
    main()
