"""The source's own HTTP endpoints: what it published, for clients that poll (`/latest`,
`/ticks`, to compare with the broker's push), and its counts (`/stats`).

They only read the `Producer` that `main.build_app` keeps in `app.state.producer`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from lab_helpers import catalogue

from producer import Producer, strict_json

ASSET_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"

router = APIRouter()


def producer(request: Request) -> Producer:
    """The app's producer."""
    return request.app.state.producer


ProducerDep = Annotated[Producer, Depends(producer)]


@router.get("/latest", summary="The latest valid tick of each asset seen so far")
async def latest_all(source: ProducerDep):
    return strict_json({asset: tick for asset, (_, tick) in sorted(source.latest.items())})


@router.get(
    "/latest/{asset}",
    summary="The latest valid tick of one asset",
    responses={404: {"description": "Unknown asset, or no tick of it yet"}},
)
async def latest_one(
    source: ProducerDep,
    asset: str = Path(pattern=ASSET_PATTERN, description="e.g. btc, XBT"),
):
    known = catalogue.load()
    name = known.normalize(asset)
    if name is None:
        return JSONResponse(
            status_code=404,
            content={"error": f"unknown asset {asset!r}: choose one of {', '.join(known)}"},
        )
    if name not in source.latest:
        seen = ", ".join(sorted(source.latest)) or "none yet"
        return JSONResponse(
            status_code=404,
            content={"error": f"no tick of {name!r} so far (assets seen: {seen})"},
        )
    return strict_json(source.latest[name][1])


@router.get("/ticks", summary="Polling: the ticks published after a sequence number")
async def ticks(
    source: ProducerDep,
    after: int = Query(-1, ge=-1, description="return ticks with seq > after"),
    limit: int = Query(100, ge=1, le=1000, description="at most this many ticks"),
):
    return source.ticks_after(after, limit)


@router.get("/stats", summary="Counts per kind, state (starting, running, finished)")
async def stats(source: ProducerDep):
    return source.stats()
