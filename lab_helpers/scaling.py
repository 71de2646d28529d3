"""The scaling experiment of notebook 02, on the local stack: publish a real price history as
ticks, read each ingest worker's counters, wait until InfluxDB holds every tick:

    from lab_helpers import scaling

    ticks = scaling.ticks_of("eth")                      # the daily history, as tick messages
    before = scaling.worker_stats(stack)                 # {"ingest": {"received": ...}, ...}
    await scaling.publish(stack, ticks)                  # into JetStream, in bursts
    scaling.wait_until(lambda: scaling.stored(db, "eth") == len(ticks))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import requests

from . import data
from .broker import encode, ensure_stream, subject
from .wait import wait_for

SOURCE = "notebook-02"  # the `source` tag of the ticks published here


def wait_until(condition: Callable, timeout: float = 30.0, every: float = 0.1):
    """Call `condition()` until it returns something true; that value, or the last (false)
    one after `timeout` seconds (`lab_helpers.wait.wait_for` without the error)."""
    return wait_for(condition, timeout, every=every, error=None)


def status_code(url: str) -> int:
    """The HTTP status of GET `url`, or 0 when nothing answers."""
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def worker_stats(stack) -> dict[str, dict]:
    """Each running ingest worker's counters (its GET /stats), by worker name."""
    return {
        w.name: requests.get(w.url + "/stats", timeout=5).json()
        for w in stack.status()
        if w.name.startswith("ingest") and w.healthy
    }


def ticks_of(asset: str) -> list[dict]:
    """The bundled daily history of `asset` as tick messages (docs/architecture.md)."""
    history = data.load_prices(asset)
    return [
        {"asset": asset, "price": float(price), "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "source": SOURCE, "seq": seq}
        for seq, (when, price) in enumerate(zip(history["time"], history["price"]))
    ]  # fmt: skip


async def publish(stack, ticks: list[dict], burst: int = 100, pause: float = 0.02,
                  after_burst: Callable[[int], None] | None = None) -> None:  # fmt: skip
    """Publish `ticks` to JetStream in bursts, each stored by the broker before the next;
    `after_burst(n)` runs after burst `n`."""
    import nats

    nc = await nats.connect(stack.settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    for n, start in enumerate(range(0, len(ticks), burst)):
        for tick in ticks[start : start + burst]:
            await js.publish(subject("ticks", tick["asset"]), encode({**tick, "sent": time.time()}))
        if after_burst:
            after_burst(n)
        await asyncio.sleep(pause)
    await nc.close()


def stored(db, asset: str) -> int:
    """How many of the ticks published here for `asset` InfluxDB holds."""
    found = db.query(
        f"SELECT count(price) FROM price WHERE asset = $asset AND source = '{SOURCE}'",
        params={"asset": asset},
    )
    return int(found["count"].iloc[0]) if len(found) else 0
