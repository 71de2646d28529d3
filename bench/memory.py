"""Benchmark 5, memory: the resident size of one ingest worker as ticks stream through it.

One ingest worker (`services/ingest/main.py`) consumes ticks while they are published in
the source's wire format; its resident memory (`VmRSS` in `/proc/<pid>/status`) is read
once it has stored 100,000 ticks and again after 1,000,000. A reading in between, once the
worker's duplicate memory is full (after twice as many ticks as it holds), tells a bounded
cache filling up from a leak: after it, the size must stay flat.

Target: under 150 MB both times, and at most 10% growth from the first reading to the second.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from lab_helpers.ingest import DEFAULT_BATCH, DEFAULT_MEMORY
from lab_helpers.wait import wait_for

from .common import Result, admin, bench_stack, rss_mb, run_service, stored_so_far
from .streaming import ASSETS, publish, synthetic_ticks, wire

NAME = "memory"
TITLE = "Memory: ingest worker RSS while streaming"
SIZES = {"full": (100_000, 1_000_000), "quick": (20_000, 100_000), "tiny": (2_000, 10_000)}
LIMIT_MB = 150.0
GROWTH = 0.10


def run(size: str = "full") -> Result:
    first, total = SIZES[size]
    # The worker's setting, as it will read it (the environment is passed on to it).
    entries = int(os.environ.get("INGEST_DEDUP_SIZE", DEFAULT_MEMORY))
    batch = int(os.environ.get("INGEST_BATCH", DEFAULT_BATCH))
    marks = (first, 2 * entries, total) if first < 2 * entries < total else (first, total)
    result = Result(NAME, TITLE, size)
    with bench_stack(NAME) as stack, run_service(stack, "ingest") as worker:
        result.figure("RSS when ready (nothing stored yet)", rss_mb(worker.pid), "MB")
        publisher = threading.Thread(
            target=lambda: asyncio.run(
                publish(stack.settings.nats_url, map(wire, synthetic_ticks(total)))
            ),
            daemon=True,
        )
        started = time.perf_counter()
        publisher.start()
        readings = {}
        peak = 0.0
        for mark in marks:

            def reached(mark=mark):
                nonlocal peak
                peak = max(peak, rss_mb(worker.pid))
                return stored_so_far(worker) >= mark

            wait_for(reached, 60 + mark / 500, f"{mark:,} ticks stored", every=0.2)
            readings[mark] = rss_mb(worker.pid)
            result.figure(f"RSS after {mark:,} ticks", readings[mark], "MB")
        elapsed = time.perf_counter() - started
        publisher.join(timeout=60)
        stats = worker.stats()
        stored = admin(stack).count("price")
    growth = readings[total] / readings[first] - 1
    if len(marks) == 3:
        full = readings[total] / readings[marks[1]] - 1
        result.figure(
            f"growth from {marks[1]:,} to {total:,} ticks",
            100 * full,
            "%",
            "after the duplicate memory is full",
        )
    result.figure("peak RSS seen", peak, "MB", "sampled every 0.2 s")
    result.figure(f"growth from {first:,} to {total:,} ticks", 100 * growth, "%")
    result.figure("ticks stored per second, publishing included", total / elapsed, "ticks/s")
    result.figure("duplicate memory entries at the end", stats.get("duplicate_memory", "?"))
    result.check(
        "every tick stored",
        stored == total and stats["stored"] == total,
        f"{stored:,} in InfluxDB, {stats['stored']:,} counted by the worker",
    )
    for mark in (first, total):
        result.target(f"RSS after {mark:,} ticks", readings[mark], LIMIT_MB, "<", "MB")
    result.target(
        f"RSS growth from {first:,} to {total:,} ticks", 100 * growth, 100 * GROWTH, "<=", "%"
    )
    result.note(
        f"{total:,} ticks ({len(ASSETS)} assets, unique times) published with publish_async "
        f"while one worker consumes them; batches of {batch:,} and a duplicate memory of "
        f"{entries:,} ticks."
    )
    return result
