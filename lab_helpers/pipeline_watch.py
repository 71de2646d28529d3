"""Watch the streaming pipeline from a notebook: restart the source with other settings, and
follow what the ingest workers take in, store and quarantine (notebook 03).

`Watch(stack, db, js)` reads three witnesses: the ingest workers' own counters (`/stats`),
their JetStream consumer (how many messages wait), and the `quarantine` measurement in
InfluxDB.

- `await watch.pause_source()`: stop the source and wait until the workers are idle;
  returns the time of the last replayed minute stored (where a new replay may start);
- `watch.start_source(settings)`: start the source again with these `SOURCE_*` settings;
- `await watch.follow(ticks)`: the counters ten times a second until `ticks` arrived, as
  a table (one row per look);
- `await watch.idle()`: wait until the workers acknowledged everything;
- `watch.compare(expected)`: quarantine reasons as the source planned them, as the workers
  counted them, and as InfluxDB stored them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pandas as pd
import requests

from .broker import STREAM, ingest_durable
from .influx import InfluxDB
from .stack import LocalStack

MEASUREMENT = "price"
"""Where the workers store clean ticks (`quarantine` holds the others)."""


class Watch:
    """The ingest workers of `stack`, seen from a notebook (`db`: an InfluxDB client that
    can read; `js`: a JetStream context of the notebook's NATS connection)."""

    def __init__(self, stack: LocalStack, db: InfluxDB, js):
        self.stack, self.db, self.js = stack, db, js
        self.since = pd.Timestamp.now(tz="UTC")
        self.base = self.stats()

    def url(self, name: str) -> str:
        """Where service `name` of the stack answers now (a restart may change the port)."""
        return next(s.url for s in self.stack.status() if s.name == name)

    def stats(self, ingest_url: str | None = None) -> dict:
        """The ingest workers' counters: received, stored, quarantined by reason, ...
        (`ingest_url`: where ingest answers, when the caller has looked it up already)."""
        return requests.get((ingest_url or self.url("ingest")) + "/stats", timeout=5).json()

    async def backlog(self) -> int:
        """Messages the workers have not acknowledged yet (waiting or in progress)."""
        info = await self.js.consumer_info(STREAM, ingest_durable())
        return info.num_pending + info.num_ack_pending

    async def idle(self, timeout: float = 30.0) -> int:
        """Wait until the workers acknowledged everything; returns what is left (0)."""
        deadline = time.monotonic() + timeout
        while (left := await self.backlog()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return left

    def last_stored_minute(self) -> pd.Timestamp | None:
        """The time of the newest replayed bitcoin minute stored, if any."""
        last = self.db.query(
            f"SELECT last(price) FROM {MEASUREMENT} WHERE asset = $asset AND source = $source",
            params={"asset": "btc", "source": "replay"},
        )
        return last.index[0] if len(last) else None

    async def pause_source(self) -> pd.Timestamp | None:
        """Stop the source, wait until the workers are idle, and return the last stored
        minute of the replay."""
        self.stack.down(only=["source"])
        await self.idle()
        return self.last_stored_minute()

    def start_source(self, settings: dict[str, str]) -> str:
        """Start the stack's source again with these `SOURCE_*` settings (the others take
        their defaults). A service reads its settings from its environment when it starts,
        so they are put in this process's environment for the start only. From now on,
        `follow` and `compare` count what happens; returns the source's address."""
        self.stack.down(only=["source"])
        self.base, self.since = self.stats(), pd.Timestamp.now(tz="UTC")
        saved = os.environ.copy()
        try:
            for key in [k for k in os.environ if k.startswith("SOURCE_")]:
                del os.environ[key]
            os.environ.update(settings)
            self.stack.up()  # starts what is not running: the source
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return self.url("source")

    def quarantined_in_influxdb(self, by_reason: bool = False) -> Counter:
        """Quarantine points stored since the source started (by reason, or in all)."""
        group = " GROUP BY reason" if by_reason else ""
        found = self.db.query(
            f"SELECT count(raw) FROM quarantine WHERE time >= $since{group}",
            params={"since": self.since},
        )
        if not len(found):
            return Counter()
        if by_reason:
            return Counter(dict(zip(found["reason"], found["count"].astype(int))))
        return Counter({"all": int(found["count"].iloc[0])})

    def counted(self, ingest_url: str | None = None) -> tuple[int, int, Counter]:
        """Received, stored and quarantined (by reason) since the source started."""
        now, base = self.stats(ingest_url), self.base
        reasons = Counter(
            {r: n - base["quarantined"].get(r, 0) for r, n in now["quarantined"].items()}
        )
        return now["received"] - base["received"], now["stored"] - base["stored"], +reasons

    async def follow(self, ticks: int, timeout: float = 60.0, every: float = 0.1) -> pd.DataFrame:
        """The workers' counters every `every` seconds until `ticks` messages arrived (or
        `timeout`): a table with the seconds, received, stored, each quarantine reason and
        the quarantine points in InfluxDB."""
        started = time.monotonic()
        rows, ingest_url = [], self.url("ingest")  # looked up once: a lookup asks every service
        while time.monotonic() - started < timeout:
            received, stored, reasons = self.counted(ingest_url)
            rows.append(
                {"seconds": round(time.monotonic() - started, 2), "received": received,
                 "stored": stored, **reasons,
                 "quarantine in InfluxDB": self.quarantined_in_influxdb()["all"]}
            )  # fmt: skip
            if received >= ticks:
                break
            await asyncio.sleep(every)
        table = pd.DataFrame(rows).fillna(0)
        return table.astype({c: int for c in table.columns if c != "seconds"})

    def compare(self, expected: Counter) -> pd.DataFrame:
        """Each quarantine reason: as the source planned it (`expected`), as the workers
        counted it, and as stored in InfluxDB."""
        _, _, counted = self.counted()
        stored = self.quarantined_in_influxdb(by_reason=True)
        table = pd.DataFrame({
            "source sent": pd.Series(expected, dtype=int),
            "ingest /stats": pd.Series(counted, dtype=int),
            "InfluxDB quarantine": pd.Series(stored, dtype=int),
        }).fillna(0).astype(int)  # fmt: skip
        return table[table.any(axis=1)].sort_values("source sent", ascending=False)
