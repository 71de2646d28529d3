"""The source's producer: replayed or polled ticks, paced, published to JetStream.

Two modes (`SOURCE_MODE`):

* `replay` (default): replays the bundled history (`lab_helpers.replay`), paced by
  `SOURCE_SPEEDUP` or `SOURCE_RATE`, with bad records mixed in on purpose
  (`SOURCE_BAD_SHARE`) so that the ETL of the ingest workers has something to catch. By
  default it first sends the daily history of every asset as fast as JetStream takes it
  (the backfill, on `ticks.<asset>.history`, only what an earlier run has not sent yet),
  then the 1-minute bitcoin bars at their own pace;
* `live`: polls public exchange and metals APIs (`lab_helpers.live`).

Each tick goes to the subject `ticks.<asset>` of the stream `TICKS` with a `Nats-Msg-Id`
header derived from its content (a restarted source is deduplicated by JetStream) and a
`Source-Kind` header (`valid` or the kind of bad record, for the lab's checks). The body gets
`sent`, the wall-clock publish time, for latency measurements. What was published is kept
in a ring buffer and per asset, for the HTTP endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pandas as pd
from nats.js.errors import NoStreamResponseError, NotFoundError
from prometheus_client import CollectorRegistry, Counter, Histogram

from lab_helpers import broker, catalogue, live, replay
from lab_helpers.service import log_fields

from settings import SERVICE, Settings

PUBLISH_TIMEOUT = 2.0  # seconds to wait for JetStream's acknowledgement of one tick
BACKFILL_CHUNK = 1_000  # history ticks in flight at once (acknowledged before the next ones)
STOP_SECONDS = 5.0  # on SIGTERM, how long the producer may take to stop
MAX_RETRY_WAIT = 5.0  # a failing publish is retried after 0.2 s, 0.4 s ... at most this

log = logging.getLogger(SERVICE)


def strict_json(value):
    """`value` with NaN and infinities as `None`: HTTP answers are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


class Producer:
    """The source's producer: reads or polls ticks, paces them, publishes them, and
    remembers them for the HTTP endpoints (`routes.py`). `run` is its whole life; the HTTP
    handlers only read."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = CollectorRegistry()
        counter = functools.partial(Counter, registry=self.registry)  # all on this registry
        self.ticks_total = counter(
            "source_ticks_total",
            "Ticks published to JetStream, by kind (valid or the kind of bad record)",
            ["kind"],
        )
        for kind in replay.KINDS:  # every kind shows, at 0, from the start
            self.ticks_total.labels(kind=kind)
        self.publish_errors_total = counter(
            "source_publish_errors_total",
            "Failed publish attempts (each is retried until it succeeds)",
        )
        self.publish_seconds = Histogram(
            "source_publish_seconds",
            "Time from publishing a tick to JetStream's acknowledgement",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.duplicates_total = counter(
            "source_jetstream_duplicates_total",
            "Ticks that JetStream acknowledged as duplicates (same Nats-Msg-Id) and did not store",
        )
        self.live_errors_total = counter(
            "source_live_errors_total",
            "Failed polls of a live price API (no answer, HTTP error, not a price)",
            ["api"],
        )

        self.state = "starting"
        self.counts = dict.fromkeys(replay.KINDS, 0)
        self.publish_errors = 0
        self.duplicates = 0
        self.buffer: deque[dict] = deque(maxlen=settings.buffer)
        self.latest: dict[str, tuple[float, dict]] = {}  # asset -> (data time, tick)
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.nc = None
        self.js = None
        self.backfilled = 0
        self.stopping = False  # set on SIGTERM: no more ticks, no more retries
        # off (a chosen replay, or live mode) | waiting (for NATS) | sending | done
        backfill = settings.mode == "replay" and settings.replay.backfill
        self.backfill_state = "waiting" if backfill else "off"
        self._next: list[tuple[str, dict]] = []  # a record read ahead by _backfill
        # Read the data or plan the endpoints now: a bad setting stops the start-up (exit 2).
        if settings.mode == "replay":
            self.records = replay.records(settings.replay, limit=settings.limit)
        else:
            self.poller = live.Poller(
                settings.live_endpoints,
                interval=settings.live_interval,
                on_error=self._live_error,
            )

    # -- life -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, then publish every tick; the HTTP server keeps running when it ends."""
        try:
            await self._connect()
            self.state = "running"
            log.info("publishing ticks", extra=log_fields(**self.settings.describe()))
            if self.settings.mode == "replay" and self.settings.replay.backfill:
                await self._backfill()
            async for kind, tick in self._emissions():
                if self.stopping:
                    return
                await self._publish(kind, tick)
            self.state = "finished"
            self.finished_at = time.time()
            log.info("finished", extra=log_fields(published=sum(self.counts.values())))
        except Exception:  # a bug must show in /readyz and the log, not kill the HTTP server
            self.state = "failed"
            log.exception("the producer stopped")

    async def stop(self, task: asyncio.Task) -> None:
        """Stop producing and close the NATS connection (on SIGTERM), within seconds.

        A cancellation can be lost in Python 3.11 (`asyncio.wait_for` swallows one that
        meets a result), so the producer also checks `stopping` between ticks and
        between retries, and the cancellation is repeated until the task has ended.
        """
        self.stopping = True
        deadline = time.monotonic() + STOP_SECONDS
        while not task.done() and time.monotonic() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if not task.done():
            log.warning("the producer did not stop in time; leaving it behind")
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), timeout=5)
        log.info("stopped", extra=log_fields(state=self.state))

    async def _connect(self) -> None:
        # broker.connect keeps retrying until NATS answers (and reconnects forever after).
        self.nc = await broker.connect(self.settings.nats_url, name=SERVICE)
        self.js = self.nc.jetstream(timeout=PUBLISH_TIMEOUT)
        await self._ensure_stream()
        log.info("connected to NATS", extra=log_fields(url=self.settings.nats_url))

    async def _ensure_stream(self) -> None:
        """Create the TICKS stream if needed, retrying until JetStream answers."""
        for attempt in itertools.count(1):
            try:
                await broker.ensure_stream(self.js)
                return
            except Exception as err:
                log.warning(
                    "cannot set up the stream yet; retrying",
                    extra=log_fields(error=repr(err), attempt=attempt),
                )
                if self.stopping:
                    raise asyncio.CancelledError from None
                await asyncio.sleep(min(MAX_RETRY_WAIT, 0.2 * 2**attempt))

    def ready_problem(self) -> str | None:
        """For `/readyz`: what is wrong, or `None`."""
        if self.state == "failed":
            return "the producer stopped on an error: see the log"
        if self.nc is None or not self.nc.is_connected:
            return f"not connected to NATS at {self.settings.nats_url}"
        return None

    # -- the ticks --------------------------------------------------------------------------
    def _emissions(self) -> AsyncIterator[tuple[str, dict]]:
        return self._replayed() if self.settings.mode == "replay" else self._polled()

    async def _backfill(self) -> None:
        """Send the history that comes before the replay, as fast as JetStream takes it.

        What an earlier run already sent is skipped: the last message on each asset's
        history subject (`ticks.<asset>.history`) says how far it got.
        """
        sent = {}
        for asset in catalogue.load():
            try:
                last = await self.js.get_last_msg(broker.STREAM, broker.history_subject(asset))
                moment = replay.tick_epoch(json.loads(last.data))
            except NotFoundError:
                continue
            except Exception as err:  # an odd message: send this asset's history again
                log.warning("cannot read the last backfilled tick", extra=log_fields(
                    asset=asset, error=repr(err)))  # fmt: skip
                continue
            if moment is not None:
                sent[asset] = pd.Timestamp(moment, unit="s", tz="UTC")
        settings = self.settings
        self.backfill_state = "sending"
        self.records = replay.records(settings.replay, limit=settings.limit, sent=sent)
        chunk: list[tuple[str, dict]] = []
        for kind, tick in self.records:
            if tick.get("source") != replay.BACKFILL_SOURCE:
                self._next = [(kind, tick)]  # the first record of the replay itself
                break
            chunk.append((kind, tick))
            if self.stopping:
                return
            if len(chunk) == BACKFILL_CHUNK:
                await self._publish_many(chunk)
                self.backfilled += len(chunk)
                chunk = []
        if chunk:
            await self._publish_many(chunk)
            self.backfilled += len(chunk)
        self.backfill_state = "done"
        log.info("history sent", extra=log_fields(ticks=self.backfilled, already_sent=sent))

    async def _replayed(self) -> AsyncIterator[tuple[str, dict]]:
        """The replay records, each at its time (a schedule, so that delays do not add up)."""
        pacer = replay.Pacer(speedup=self.settings.speedup, rate=self.settings.rate)
        due = time.monotonic()
        for kind, tick in itertools.chain(self._next, self.records):
            due += pacer.delay(tick)
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:  # far behind (NATS was away): go on at the pace, do not burst
                due = time.monotonic()
            yield kind, tick

    async def _polled(self) -> AsyncIterator[tuple[str, dict]]:
        """The live ticks, numbered; the poller does the pacing."""
        limit = self.settings.limit
        async with contextlib.aclosing(self.poller.ticks()) as ticks:
            seq = 0
            async for tick in ticks:
                yield "valid", {**tick, "seq": seq}
                seq += 1
                if limit is not None and seq >= limit:
                    return

    def _live_error(self, api: str, message: str) -> None:
        self.live_errors_total.labels(api=api).inc()
        log.warning("live price API failed", extra=log_fields(api=api, error=message))

    async def _publish(self, kind: str, tick: dict) -> None:
        """Publish one tick and wait for JetStream's acknowledgement (see
        `_publish_many`)."""
        await self._publish_many([(kind, tick)])

    async def _publish_many(self, pairs: list[tuple[str, dict]]) -> None:
        """Publish ticks one after the other without waiting in between, then wait for every
        acknowledgement. What was not acknowledged is published again after a pause, with
        the same `Nats-Msg-Id`, so JetStream never stores a tick twice."""
        acked: list = [None] * len(pairs)
        bodies: list[dict] = [{}] * len(pairs)
        for attempt in itertools.count(1):
            todo = [i for i, ack in enumerate(acked) if ack is None]
            futures = []
            try:
                for i in todo:
                    kind, tick = pairs[i]
                    bodies[i] = {**tick, "sent": round(time.time(), 6)}
                    futures.append(await self._send(kind, tick, bodies[i]))
                results = await asyncio.wait_for(
                    asyncio.gather(*futures, return_exceptions=True),
                    timeout=PUBLISH_TIMEOUT + len(futures) / 10_000,
                )
                problem = None
            except Exception as err:  # timeout, no stream, connection lost: keep the ticks
                results, problem = [], err
            for i, result in zip(todo, results):
                acked[i] = None if isinstance(result, BaseException) else result
            if all(acked):
                break
            if self.stopping:
                raise asyncio.CancelledError  # SIGTERM: these ticks go again at the next start
            problem = problem or next(r for r in results if isinstance(r, BaseException))
            self.publish_errors += 1
            self.publish_errors_total.inc()
            log.warning(
                "publish failed; retrying",
                extra=log_fields(seq=pairs[todo[0]][1].get("seq"), attempt=attempt,
                                 ticks=len(todo), error=repr(problem)),
            )  # fmt: skip
            await asyncio.sleep(min(MAX_RETRY_WAIT, 0.1 * 2**attempt))
            if isinstance(problem, NoStreamResponseError):
                await self._ensure_stream()  # someone deleted the stream
        for (kind, _), body, ack in zip(pairs, bodies, acked):
            if ack.duplicate:
                self.duplicates += 1
                self.duplicates_total.inc()
            self._remember(kind, body)

    async def _send(self, kind: str, tick: dict, body: dict) -> asyncio.Future:
        """Publish one message; the future of JetStream's acknowledgement."""
        subject = broker.subject(broker.TICK_PREFIX, tick.get("asset"))
        if tick.get("source") == replay.BACKFILL_SOURCE:
            subject = broker.history_subject(tick.get("asset"))
        headers = {"Nats-Msg-Id": replay.message_id(tick), "Source-Kind": kind}
        started = time.perf_counter()
        future = await self.js.publish_async(subject, broker.encode(body), headers=headers)
        future.add_done_callback(
            lambda done: (
                done.cancelled()
                or done.exception()
                or self.publish_seconds.observe(time.perf_counter() - started)
            )
        )
        return future

    def _remember(self, kind: str, body: dict) -> None:
        self.counts[kind] += 1
        self.ticks_total.labels(kind=kind).inc()
        self.buffer.append(body)
        asset = body.get("asset")
        moment = replay.tick_epoch(body)
        if kind in ("valid", "out_of_order") and asset in catalogue.load() and moment is not None:
            # A late (out_of_order) tick must not replace a newer price.
            if asset not in self.latest or moment >= self.latest[asset][0]:
                self.latest[asset] = (moment, body)

    # -- what the HTTP endpoints show -------------------------------------------------------
    def ticks_after(self, after: int, limit: int) -> dict:
        """Up to `limit` ticks with `seq > after`, oldest first, from the ring buffer.

        `next_after` is the `after` of the next poll; `missed` counts the ticks after
        `after` that already left the buffer; `last_seq` lower than `after` means the
        source restarted (its `seq` starts again from 0).
        """
        if not self.buffer:
            return {
                "ticks": [],
                "next_after": after,
                "last_seq": None,
                "oldest_seq": None,
                "missed": 0,
            }
        oldest = self.buffer[0]["seq"]  # the buffer holds consecutive seq numbers
        start = max(0, after + 1 - oldest)
        ticks = list(itertools.islice(self.buffer, start, start + limit))
        return {
            "ticks": strict_json(ticks),
            "next_after": ticks[-1]["seq"] if ticks else after,
            "last_seq": self.buffer[-1]["seq"],
            "oldest_seq": oldest,
            "missed": max(0, oldest - after - 1),
        }

    def stats(self) -> dict:
        stats = {
            "service": SERVICE,
            "state": self.state,
            "emitted": dict(self.counts),
            "total": sum(self.counts.values()),
            "last_seq": self.buffer[-1]["seq"] if self.buffer else None,
            "publish_errors": self.publish_errors,
            "jetstream_duplicates": self.duplicates,
            "backfill": self.backfill_state,
            "backfilled": self.backfilled,
            "started_at": _utc(self.started_at),
            "finished_at": _utc(self.finished_at) if self.finished_at else None,
            "settings": self.settings.describe(),
        }
        if self.settings.mode == "live":
            stats["live"] = {
                f"{s.endpoint.api.name}:{s.endpoint.asset}": {
                    "url": s.endpoint.url,
                    "polls": s.polls,
                    "errors": s.errors,
                    "last_error": s.last_error,
                }
                for s in self.poller.states
            }
        return stats


def _utc(epoch: float) -> str:
    return replay.iso_utc(datetime.fromtimestamp(epoch, UTC))
