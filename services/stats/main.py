"""The stats service: statistics of the daily returns of an asset, computed from the api.

Run it from the repository root (configuration comes only from environment variables):

    python services/stats/main.py

- `GET /stats/{asset}?days=30`: how many daily log returns, the last price, their mean and
  standard deviation (the daily volatility), from the api's `GET /api/prices/{asset}`;
- `GET /healthz`, `/readyz` (ready when the api answers its `/healthz`), `/metrics`.

A small service of its own: it owns no data and speaks to the rest of the lab only through
the api's HTTP contract. Notebook 01 has the learner write its Dockerfile, notebook 02 its
Deployment and Service.
"""

import logging
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import FastAPI, HTTPException, Query
from prometheus_client import CollectorRegistry, Counter

from lab_helpers.service import create_app, run_service

# This folder's own modules (Python puts the script's folder first on its path).
from returns import ApiError, daily_closes, summarize
from settings import DEFAULT_PORT, SERVICE, Settings, read_settings

log = logging.getLogger(SERVICE)


def build_app(settings: Settings) -> FastAPI:
    """The web app: the shared /healthz, /readyz and /metrics, and `GET /stats/{asset}`."""
    registry = CollectorRegistry()
    requests_total = Counter(
        "stats_requests", "Answers of GET /stats/{asset}, by outcome", ["outcome"],
        registry=registry,
    )  # fmt: skip
    client = httpx.Client(base_url=settings.api_url, timeout=settings.timeout)

    def api_answers() -> str | None:
        try:
            client.get("/healthz").raise_for_status()
        except httpx.HTTPError as err:
            return f"the api at {settings.api_url} does not answer ({type(err).__name__})"
        return None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("reading the api at %s", settings.api_url)
        yield
        client.close()

    app = create_app(
        SERVICE, registry=registry, ready_checks={"api": api_answers}, lifespan=lifespan,
        description="Statistics of an asset's daily returns, read from the api",
    )  # fmt: skip

    @app.get("/stats/{asset}", tags=["stats"], summary="Daily log returns of an asset")
    def stats(
        asset: str,
        days: Annotated[int, Query(ge=2, le=settings.max_days, description="returns")] = 30,
    ):
        """The statistics of the last `days` daily log returns of `asset`.

        Example: `curl http://127.0.0.1:8003/stats/btc?days=90`
        """
        try:
            closes = daily_closes(client, asset, days)
        except LookupError as err:
            requests_total.labels("unknown asset").inc()
            raise HTTPException(404, str(err)) from None
        except ApiError as err:
            requests_total.labels("api unavailable").inc()
            raise HTTPException(503, str(err)) from None
        requests_total.labels("ok").inc()
        return summarize(asset, closes)

    return app


def main() -> None:
    """Read the settings (exit 2 with one line if one is bad), then serve until SIGTERM."""
    run_service(SERVICE, read_settings, build_app, DEFAULT_PORT)


if __name__ == "__main__":
    main()
