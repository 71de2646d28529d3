"""Benchmark 3, streaming: source -> NATS JetStream -> ingest -> InfluxDB, with real processes.

**Throughput.** A backlog of ticks waits in the stream `TICKS` (published beforehand in the
source's exact wire format: subject `ticks.<asset>`, JSON body with `seq` and `sent`,
`Nats-Msg-Id` and `Source-Kind` headers; unique times, so every tick is stored). Then 1,
and in a second fresh stack 2, ingest workers (`services/ingest/main.py`, started as the stack
starts them) drain it. Their rate is ticks stored per second while every worker is busy (from
their `/stats`), and all must end up in InfluxDB. The reference is the broker's own rate,
measured in the same run on the same server: `publish_async` of the same messages, then a
pull consumer doing `fetch(1000)` + `ack()` over the backlog (what a worker does, minus
the work).

**Latency.** The real source publishes 100 ticks per second; one ingest worker and the api
run. For every tick: publish (its `sent` time) -> queryable in InfluxDB (a poller queries
for new points every ~10 ms) and publish -> received on the api's live SSE stream.

Targets: one worker >= 0.5x the broker's consume rate; two workers faster than one; at 100
ticks/s, p99 publish -> queryable < 250 ms and publish -> live stream < 100 ms.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable, Iterator

import httpx
import nats
import numpy as np
import pandas as pd
import requests
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from lab_helpers import broker, catalogue, replay
from lab_helpers.ingest import DEFAULT_BATCH
from lab_helpers.wait import wait_for

from .common import (
    Result,
    admin,
    bench_stack,
    cpu_seconds,
    median,
    percentile,
    run_service,
    server_pid,
    start_service,
    stored_so_far,
)

NAME = "streaming"
TITLE = "Streaming: source -> NATS -> ingest -> InfluxDB"
# backlog ticks, latency ticks (at LATENCY_RATE per second)
SIZES = {"full": (100_000, 3_000), "quick": (30_000, 600), "tiny": (3_000, 200)}
LATENCY_RATE = 100
ASSETS = ("btc", "eth", "sol", "xrp", "ltc")
START_PRICES = {"btc": 60_000.0, "eth": 2_000.0, "sol": 20.0, "xrp": 0.5, "ltc": 150.0}


# ---------------------------------------------------------------------- ticks and the broker


def synthetic_ticks(n: int, start: str | None = None, seed: int = 1) -> Iterator[dict]:
    """`n` valid ticks as the source sends them: assets in turn, one minute apart per asset,
    prices a random walk in cents. Every (asset, time) is unique, so every tick is stored.

    `start` defaults to the latest of the assets' earliest plausible dates in the catalogue:
    an older tick would be quarantined as `timestamp too early`."""
    rng = np.random.default_rng(seed)
    first_day = start or max(catalogue.load().earliest[a] for a in ASSETS)
    t0 = pd.Timestamp(first_day).tz_localize(None).tz_localize("UTC").value // 10**9
    prices = dict(START_PRICES)
    chunk = 50_000
    for first in range(0, n, chunk):
        steps = rng.normal(0, 0.0005, min(chunk, n - first)).tolist()
        for i, step in enumerate(steps, start=first):
            asset = ASSETS[i % len(ASSETS)]
            prices[asset] *= 1 + step
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 60 * (i // len(ASSETS))))
            yield {
                "asset": asset,
                "price": round(prices[asset], 2),
                "time": stamp,
                "source": replay.SOURCE,
                "seq": i,
            }


def wire(tick: dict) -> tuple[str, bytes, dict]:
    """(subject, body, headers) of a tick, exactly as the source publishes it."""
    headers = {"Nats-Msg-Id": replay.message_id(tick), "Source-Kind": "valid"}
    body = broker.encode({**tick, "sent": round(time.time(), 6)})
    return broker.subject(broker.TICK_PREFIX, tick["asset"]), body, headers


async def publish(
    nats_url: str, messages: Iterable[tuple[str, bytes, dict]], *, prefix: str | None = None
) -> tuple[int, float]:
    """Publish with `publish_async` and wait for every acknowledgement; (count, seconds).

    `prefix` replaces the subject's first token (another stream's subjects)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await broker.ensure_stream(js)
        count, started = 0, time.perf_counter()
        for subject, body, headers in messages:
            if prefix:
                subject = prefix + subject[subject.index(".") :]
            await js.publish_async(subject, body, headers=headers)
            count += 1
        await asyncio.wait_for(js.publish_async_completed(), timeout=120)
        return count, time.perf_counter() - started
    finally:
        await nc.close()


async def broker_rates(nats_url: str, messages: list[tuple[str, bytes, dict]]) -> dict:
    """The broker's own rates on a stream of its own (`BENCH`): publish, then drain with a
    pull consumer (`fetch(1000)` + `ack()`) configured like the ingest workers'."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE)
        )
        count, pub_seconds = await publish(nats_url, messages, prefix="bench")
        config = ConsumerConfig(
            durable_name="bench", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000, ack_wait=30
        )
        sub = await js.pull_subscribe("bench.>", durable="bench", stream="BENCH", config=config)
        got, started = 0, time.perf_counter()
        while got < count:
            for msg in await sub.fetch(1000, timeout=5):
                await msg.ack()
                got += 1
        consume_seconds = time.perf_counter() - started
        await js.delete_stream("BENCH")
        return {
            "published": count,
            "publish_rate": count / pub_seconds,
            "consumed": got,
            "consume_rate": got / consume_seconds,
        }
    finally:
        await nc.close()


# ---------------------------------------------------------------------- throughput


def drain_rate(stack, workers: int, n: int, result: Result, env: dict | None = None) -> float:
    """Start `workers` ingest processes on a backlog of `n` ticks; ticks stored per second
    while all of them are busy. `env`: extra environment variables of the workers."""
    influxd = server_pid(stack, "influxdb")
    count, seconds = asyncio.run(publish(stack.settings.nats_url, map(wire, synthetic_ticks(n))))
    result.figure(f"{workers} worker(s): backlog published", count / seconds, "ticks/s")
    # Started together, so that they compete for the backlog from the start.
    running = [start_service(stack, "ingest", env) for _ in range(workers)]
    samples = []  # (time, ticks stored by each worker)
    try:

        def progress():
            samples.append((time.perf_counter(), [stored_so_far(s) for s in running]))
            return sum(samples[-1][1]) >= n

        samples.append((time.perf_counter(), [0] * workers))
        cpu0 = [cpu_seconds(s.pid) for s in running] + [cpu_seconds(influxd)]
        # Every 0.5 s: each /stats request interrupts a worker that is busy in its cleaning
        # thread (the GIL): polling every 0.1 s took ~10 % off the rate it measured
        # (8,500-8,900 against 9,400-9,800 ticks/s, two runs each).
        wait_for(progress, 300, f"{workers} ingest worker(s) to store {n:,} ticks", every=0.5)
        cpu1 = [cpu_seconds(s.pid) for s in running] + [cpu_seconds(influxd)]
    finally:
        for s in running:
            s.stop()
    # The busy window: from the first sample where every worker has stored something to the
    # first where 90% are stored (the tail, one batch at a time, is not the sustained rate).
    # With a backlog too small for that, the whole run from the start of the processes.
    busy = [i for i, (_, st) in enumerate(samples) if all(st)]
    last = next(i for i, (_, st) in enumerate(samples) if sum(st) >= 0.9 * n)
    first = busy[0] if busy and last - busy[0] >= 3 else 0
    (t0, s0), (t1, s1) = samples[first], samples[last]
    rate = (sum(s1) - sum(s0)) / (t1 - t0)
    db = admin(stack)
    stored = db.count("price")
    quarantined = db.count("quarantine", "raw")
    result.check(
        f"{workers} worker(s): every tick stored once, none quarantined",
        stored == n and quarantined == 0,
        f"{stored:,} points of {n:,}, {quarantined} quarantined",
    )
    per_worker = ", ".join(f"{st:,}" for st in samples[-1][1])
    result.figure(
        f"{workers} worker(s): ticks stored per second",
        rate,
        "ticks/s",
        f"while all were busy; stored per worker {per_worker}",
    )
    ingest_cpu = sum(cpu1[:-1]) - sum(cpu0[:-1])
    result.figure(f"{workers} worker(s): ingest CPU per 1,000 ticks", 1000 * ingest_cpu / n, "s")
    result.figure(
        f"{workers} worker(s): influxd CPU per 1,000 ticks", 1000 * (cpu1[-1] - cpu0[-1]) / n, "s"
    )
    return rate


def worker_profile(stack, n: int) -> tuple[dict[str, float], str]:
    """Where an ingest worker's CPU goes: its stages run in this process on `n` ticks, in
    batches of the worker's default size, writing to the stack's InfluxDB as the ingest user.

    Returns microseconds of CPU per tick for each stage, and a pyinstrument profile (the
    worker runs these stages in threads, which a sampling profiler attached to the service
    would not show apart). Fetching, acknowledging and publishing are NATS client calls: the
    broker figures measure them.
    """
    from pyinstrument import Profiler

    from lab_helpers.influx import InfluxDB
    from lab_helpers.ingest import DuplicateMemory, Incoming, process, write_batch

    db = InfluxDB.connect("ingest", settings=stack.settings)
    stamp = time.time_ns()
    messages = [
        Incoming(body, seq, stamp + seq)
        for seq, (_, body, _) in enumerate(map(wire, synthetic_ticks(n, start="2021-01-01")), 1)
    ]
    memory = DuplicateMemory()
    cpu = {
        "decode + clean (process)": 0.0,
        "write to InfluxDB (write_batch)": 0.0,
        "duplicate memory": 0.0,
        "JSON of the clean.<asset> messages": 0.0,
    }
    profiler = Profiler(interval=0.001)
    profiler.start()
    for first in range(0, n, DEFAULT_BATCH):
        marks = [time.process_time()]
        batch = process(messages[first : first + DEFAULT_BATCH], memory)
        marks.append(time.process_time())
        batch = write_batch(db, batch)
        marks.append(time.process_time())
        for tick in batch.ticks:
            memory.remember(tick.series, tick.time_ns, tick.price, tick.message.stream_seq)
        marks.append(time.process_time())
        for tick in batch.ticks:
            broker.encode(tick.payload)
        marks.append(time.process_time())
        for name, start, end in zip(cpu, marks, marks[1:]):
            cpu[name] += end - start
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "process" in line and "ingest" in line), 0)
    return {k: 1e6 * v / n for k, v in cpu.items()}, "\n".join(lines[start : start + 40])


# ---------------------------------------------------------------------- latency


class SseListener(threading.Thread):
    """Reads the api's live stream; records (receive time, tick) for each event."""

    def __init__(self, url: str, expected: int):
        super().__init__(daemon=True)
        self.url, self.expected = url, expected
        self.events: list[tuple[float, dict]] = []
        self.connected = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url + "/api/stream", timeout=60) as resp:
                for line in resp.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("data:"):
                        self.events.append((time.time(), json.loads(line[5:])))
                        if len(self.events) >= self.expected:
                            return
        except Exception as err:  # reported as a failed check, not a crash of the thread
            self.error = repr(err)
            self.connected.set()


class InfluxPoller(threading.Thread):
    """Asks InfluxDB for new points every `every` seconds; records when each time showed."""

    def __init__(self, db, every: float = 0.01):
        super().__init__(daemon=True)
        self.db, self.every = db, every
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.query_seconds: list[float] = []

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            started = time.perf_counter()
            if last is None:
                df = self.db.query("SELECT price FROM price")
            else:
                df = self.db.query("SELECT price FROM price WHERE time > $t", params={"t": last})
            now = time.time()
            self.query_seconds.append(time.perf_counter() - started)
            for stamp in df.index.asi8.tolist():
                self.seen.setdefault(stamp, now)
            if len(df):
                last = df.index.max()
            self.stop.wait(self.every)


def latencies(stack, n: int, result: Result, env: dict | None = None, label: str = "") -> dict:
    """Publish -> queryable and publish -> live stream at LATENCY_RATE ticks/s, in ms."""
    db = admin(stack)
    with run_service(stack, "ingest", env) as ingest, run_service(stack, "api") as api:
        listener = SseListener(api.url, n)
        listener.start()
        listener.connected.wait(10)
        time.sleep(0.2)  # the api subscribes when the stream opens: let it settle
        poller = InfluxPoller(db)
        poller.start()
        source_env = {
            "SOURCE_DATASET": "btc_usd_1min",
            "SOURCE_RATE": str(LATENCY_RATE),
            "SOURCE_LIMIT": str(n),
            "SOURCE_BAD_SHARE": "0",
        }
        with run_service(stack, "source", source_env) as source:
            cpu0, started = cpu_seconds(ingest.pid), time.perf_counter()
            wait_for(
                lambda: source.stats()["state"] == "finished",
                n / LATENCY_RATE + 60,
                "the source to send its ticks",
                every=0.2,
            )
            busy = (cpu_seconds(ingest.pid) - cpu0) / (time.perf_counter() - started)
            ticks = source_ticks(source.url)
        times = {pd.Timestamp(t["time"]).value: t for t in ticks}
        wait_for(lambda: len(poller.seen) >= len(times), 30, "every tick to be queryable")
        listener.join(timeout=30)
        poller.stop.set()
        poller.join()
    queryable = [1000 * (poller.seen[k] - t["sent"]) for k, t in times.items() if k in poller.seen]
    live = [1000 * (at - tick["sent"]) for at, tick in listener.events]
    result.check(
        f"{label}every tick queryable and received live",
        len(queryable) == n and len(live) == n and listener.error is None,
        f"{len(queryable)} queryable, {len(live)} live of {n}"
        + (f"; stream error {listener.error}" if listener.error else ""),
    )
    out = {"queryable": queryable, "live": live, "poll_ms": 1000 * median(poller.query_seconds)}
    result.figure(f"{label}ingest worker CPU at {LATENCY_RATE} ticks/s", 100 * busy, "% of a core")
    for what, values in (("publish -> queryable", queryable), ("publish -> live stream", live)):
        if values:
            result.figure(
                f"{label}{what}: p50 / p99 / max",
                f"{percentile(values, 50):.0f} / {percentile(values, 99):.0f} / "
                f"{max(values):.0f} ms",
            )
    return out


def source_ticks(url: str) -> list[dict]:
    """Every tick the source published (from its `/ticks` buffer), with `sent`."""
    ticks, after = [], -1
    while True:
        page = requests.get(url + "/ticks", params={"after": after, "limit": 1000}, timeout=10)
        page = page.json()
        ticks += page["ticks"]
        if not page["ticks"]:
            return ticks
        after = page["next_after"]


# ---------------------------------------------------------------------- the benchmark


def run(size: str = "full") -> Result:
    backlog, latency_ticks = SIZES[size]
    result = Result(NAME, TITLE, size)
    with bench_stack(NAME) as stack:
        messages = [wire(t) for t in synthetic_ticks(backlog)]
        rates = asyncio.run(broker_rates(stack.settings.nats_url, messages))
        result.figure("broker: publish_async (acknowledged)", rates["publish_rate"], "msgs/s")
        result.figure("broker: fetch(1000) + ack over the backlog", rates["consume_rate"], "msgs/s")
        result.check("broker: every message consumed", rates["consumed"] == backlog)
        one = drain_rate(stack, 1, backlog, result)
        stages, profile = worker_profile(stack, min(backlog, 20_000))
    with bench_stack(NAME) as stack:
        two = drain_rate(stack, 2, backlog, result)
    with bench_stack(NAME) as stack:
        lat = latencies(stack, latency_ticks, result)
    result.target("1 worker / broker consume rate", one / rates["consume_rate"], 0.5, unit="x")
    result.target("2 workers / 1 worker", two / one, 1.0, ">", "x")
    result.target("p99 publish -> queryable", percentile(lat["queryable"], 99), 250, "<", "ms")
    result.target("p99 publish -> live stream", percentile(lat["live"], 99), 100, "<", "ms")
    nats_us = 1e6 / rates["consume_rate"]
    result.blocks.append(
        (
            "Where an ingest worker's CPU goes, per tick (its stages run in this process, "
            f"batches of {DEFAULT_BATCH:,})",
            "\n".join(f"{us:8.1f} µs  {name}" for name, us in stages.items())
            + f"\n{nats_us:8.1f} µs  NATS fetch + ack (the broker's own rate above)"
            + "\n\n"
            + profile,
        )
    )
    result.note(
        f"Throughput over a backlog of {backlog:,} ticks ({len(ASSETS)} assets); latency over "
        f"{latency_ticks:,} ticks of the real source at {LATENCY_RATE} ticks/s (BTC 1-minute "
        f"bars), with a poller querying InfluxDB every ~10 ms (each query took "
        f"{lat['poll_ms']:.0f} ms at the median: the resolution of publish -> queryable)."
    )
    return result
