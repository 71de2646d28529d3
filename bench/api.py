"""Benchmark 4, the api under load: REST range queries and live-stream fan-out.

**Range queries.** The api (`services/api/main.py`, as the read-only user) serves a year of
one-minute BTC prices (525,600 points). 20 clients, each with one connection, ask again and
again for a downsampled range (`/api/prices/btc?start=...&end=...&every=...&agg=...`, a
random window of 1 to 30 days, buckets of 5 minutes to 1 day) for 30 seconds: latency p50
and p99, requests per second, and errors (anything but a 200 with points).

**Live fan-out.** 50 clients hold `/api/stream` open; the real source sends a burst of
ticks through ingest; every client must receive every tick.

Target: zero errors; every stream client receives every tick of the burst.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import numpy as np
import pandas as pd

from .common import (
    Result,
    admin,
    bench_stack,
    cpu_seconds,
    percentile,
    run_service,
    server_pid,
    wait_idle,
)

NAME = "api"
TITLE = "API: range queries under load, live-stream fan-out"
# query clients, seconds, stream clients, ticks in the burst, points stored
SIZES = {
    "full": (20, 30.0, 50, 1_000, 525_600),
    "quick": (20, 8.0, 50, 300, 100_000),
    "tiny": (4, 2.0, 5, 50, 10_000),
}
EVERY = ("5m", "15m", "1h", "6h", "1d")
AGGS = ("mean", "median", "first", "last", "min", "max")


def minute_prices(points: int, start: str = "2023-01-01") -> pd.DataFrame:
    """One-minute BTC prices (a random walk in cents), indexed by UTC time."""
    rng = np.random.default_rng(3)
    index = pd.date_range(start, periods=points, freq="min", tz="UTC")
    price = np.round(20_000 * np.exp(np.cumsum(rng.normal(0, 0.0008, points))), 2)
    return pd.DataFrame({"asset": "btc", "source": "replay", "price": price}, index=index)


async def query_load(url: str, clients: int, seconds: float, first, last) -> dict:
    """`clients` concurrent clients asking for random downsampled ranges for `seconds`."""
    latencies: list[float] = []
    errors: list[str] = []
    span_minutes = int((last - first) / pd.Timedelta("1min"))
    rng = random.Random(5)

    async def client(http: httpx.AsyncClient, deadline: float) -> None:
        while time.perf_counter() < deadline:
            days = rng.randint(1, 30)
            offset = rng.randint(0, max(0, span_minutes - days * 1440))
            start = first + pd.Timedelta(minutes=offset)
            params = {
                "start": start.isoformat(),
                "end": (start + pd.Timedelta(days=days)).isoformat(),
                "every": rng.choice(EVERY),
                "agg": rng.choice(AGGS),
            }
            started = time.perf_counter()
            try:
                resp = await http.get("/api/prices/btc", params=params)
                ok = resp.status_code == 200 and resp.json()["points"]
                if not ok:
                    errors.append(f"{resp.status_code}: {resp.text[:200]}")
            except httpx.HTTPError as err:
                errors.append(repr(err))
            latencies.append(time.perf_counter() - started)

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            await asyncio.gather(*(client(http, deadline) for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = await main()
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


async def stream_clients(url: str, clients: int, expected: int, start_burst, timeout: float):
    """`clients` open `/api/stream`; once all are connected `start_burst()` runs (in a
    thread); each collects the `seq` of the ticks it receives until it has `expected`."""
    received: list[list[int]] = [[] for _ in range(clients)]
    moments: list[float] = []  # when each event arrived
    connected = 0
    all_connected = asyncio.Event()

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal connected
        async with http.stream("GET", "/api/stream") as resp:
            async for line in resp.aiter_lines():
                if line.startswith(": connected"):
                    connected += 1
                    if connected == clients:
                        all_connected.set()
                elif line.startswith("data:"):
                    received[i].append(json.loads(line[5:])["seq"])
                    moments.append(time.perf_counter())
                    if len(received[i]) >= expected:
                        return

    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(clients)]
        await asyncio.wait_for(all_connected.wait(), 30)
        await asyncio.sleep(0.3)  # the api subscribes to NATS when a stream opens
        burst = asyncio.create_task(asyncio.to_thread(start_burst))
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await burst
    return received, moments


def run(size: str = "full") -> Result:
    clients, seconds, stream_n, burst, points = SIZES[size]
    result = Result(NAME, TITLE, size)
    with bench_stack(NAME) as stack:
        prices = minute_prices(points)
        admin(stack).write(prices, "price", tags=["asset", "source"], progress=False)
        influxd = server_pid(stack, "influxdb")
        wait_idle(influxd)
        with run_service(stack, "api") as api:
            cpu0 = cpu_seconds(api.pid), cpu_seconds(influxd)
            load = asyncio.run(
                query_load(api.url, clients, seconds, prices.index[0], prices.index[-1])
            )
            cpu1 = cpu_seconds(api.pid), cpu_seconds(influxd)
        lat = [1000 * x for x in load["latencies"]]
        result.figure(
            "range queries answered", len(lat), "", f"{clients} clients, {load['seconds']:.0f} s"
        )
        result.figure("requests per second", len(lat) / load["seconds"], "req/s")
        result.figure(
            "latency p50 / p99 / max",
            f"{percentile(lat, 50):.0f} / {percentile(lat, 99):.0f} / {max(lat):.0f} ms",
        )
        result.figure(
            "errors", len(load["errors"]), "", load["errors"][0] if load["errors"] else ""
        )
        for name, before, after in zip(("api process", "influxd"), cpu0, cpu1):
            busy = 100 * (after - before) / load["seconds"]
            result.figure(f"{name} CPU during the load", busy, "% of a core")
        result.target("errors under load", len(load["errors"]), 0, "<=")
        result.check("the load ran (at least one answer per client)", len(lat) >= clients)

        # Live fan-out: a burst through the real pipeline to many stream clients.
        source_env = {
            "SOURCE_DATASET": "btc_usd_1min",
            "SOURCE_LIMIT": str(burst),
            "SOURCE_RATE": "1000000",
            "SOURCE_BAD_SHARE": "0",
        }
        with run_service(stack, "ingest"), run_service(stack, "api") as api:

            def start_burst() -> None:
                with run_service(stack, "source", source_env) as source:
                    while source.stats()["state"] != "finished":
                        time.sleep(0.05)

            received, moments = asyncio.run(
                stream_clients(api.url, stream_n, burst, start_burst, timeout=60 + burst / 50)
            )
    complete = sum(sorted(r) == list(range(burst)) for r in received)
    in_order = sum(r == list(range(burst)) for r in received)
    result.figure("stream clients", stream_n)
    result.figure("ticks in the burst", burst)
    result.figure("clients that received every tick exactly once", complete)
    result.figure("... and in the order sent", in_order)
    if moments:
        result.figure(
            "first tick received -> last tick received by the last client",
            max(moments) - min(moments),
            "s",
        )
    result.target("stream clients with every tick", complete, stream_n, ">=")
    result.check(
        "every stream client received every tick exactly once",
        complete == stream_n,
        f"{complete} of {stream_n}; fewest received: {min(len(r) for r in received)}",
    )
    result.note(
        f"{points:,} one-minute points stored; {clients} query clients for {seconds:.0f} s "
        f"(random 1-30 day windows, every {', '.join(EVERY)}, agg {', '.join(AGGS)}); "
        f"{stream_n} SSE clients and a burst of {burst:,} ticks from the real source "
        "(as fast as it publishes) through one ingest worker."
    )
    return result
