"""The ingest worker: the loop that takes ticks from JetStream and stores them in InfluxDB,
and what it counts (`/stats`, `/metrics`).

Each worker (the `ingest` service, one or several replicas) repeats one loop:

    fetch a batch  ->  decode + clean  ->  write to InfluxDB  ->  ack  ->  publish clean.<asset>

- **Fetch**: the replicas share the durable pull consumer `ingest` on the stream `TICKS`
  (the whole stream, explicit acks), so JetStream hands each message to one of them.
- **Decode, clean and write** are `lab_helpers.ingest.process` and
  `lab_helpers.ingest.write_batch` (shared with the tests, the benchmarks and the
  notebooks): every message is stored or quarantined with its reason, one message never
  blocks the others.
- **Ack only after the write.** If InfluxDB is down, the worker keeps the batch in hand and
  tries again, backing off (exponentially, capped); meanwhile it tells JetStream the batch
  is still being worked on (so it is not handed to another worker, nor counted as a new
  delivery) and reports itself not ready, naming InfluxDB. No tick is lost. Only a failed
  write sends a batch back to JetStream (on shutdown, or after an unexpected error).
- A message that JetStream has delivered `max_deliver` times (the worker died or hung on it
  each time) is not tried again: it is quarantined as "poison" and acknowledged.
- Each stored tick is published on `clean.<asset>` (plain NATS), for the api's live stream.

Why nothing is stored twice, and what a duplicate is: see `lab_helpers.ingest`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import time
from collections.abc import Sequence

import nats
import requests
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lab_helpers import ingest
from lab_helpers.broker import STREAM, connect, encode, ensure_stream
from lab_helpers.errors import LabError
from lab_helpers.influx import InfluxDB

from settings import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DURABLE,
    DEFAULT_MAX_DELIVER,
    DEFAULT_MAX_WAIT,
    DEFAULT_STALL,
    SERVICE,
    Settings,
)

log = logging.getLogger(__name__)


class IngestStats:
    """What the worker did, as Prometheus metrics (on `registry`) and as a dict for
    `GET /stats` (`snapshot`). Both are updated together, so they always agree."""

    def __init__(self, registry: CollectorRegistry | None = None):
        registry = registry if registry is not None else CollectorRegistry()
        counter = functools.partial(Counter, registry=registry)  # all on this registry
        self._received = counter(
            "ingest_ticks_received",
            "Messages fetched from JetStream (a redelivered message counts again)",
        )
        self._stored = counter(
            "ingest_ticks_stored", "Clean ticks written to the measurement price"
        )
        self._quarantined = counter(
            "ingest_ticks_quarantined",
            "Messages written to the measurement quarantine, by reason",
            ["reason"],
        )
        self._batches = counter("ingest_batches", "Batches written and acknowledged")
        self._write_seconds = Histogram(
            "ingest_write_seconds", "Time to write one batch to InfluxDB", registry=registry
        )
        self._write_errors = counter(
            "ingest_write_errors",
            "Batches whose write failed (not acknowledged: delivered again later)",
        )
        self._redeliveries = counter("ingest_redeliveries", "Messages delivered more than once")
        self._last_ack = Gauge(
            "ingest_last_ack_timestamp_seconds",
            "When the last batch was written and acknowledged (Unix time)",
            registry=registry,
        )
        for reason in ingest.QUARANTINE_REASONS:  # every reason shows up, at 0 until it happens
            self._quarantined.labels(reason)
        self.received = self.stored = self.batches = self.write_errors = self.redeliveries = 0
        self.quarantined: collections.Counter[str] = collections.Counter()
        self.last_write_seconds: float | None = None
        self.last_batch_size = 0

    def on_fetch(self, messages: Sequence[ingest.Incoming]) -> None:
        """A batch arrived."""
        again = sum(1 for m in messages if m.num_delivered > 1)
        self.received += len(messages)
        self.redeliveries += again
        self._received.inc(len(messages))
        self._redeliveries.inc(again)

    def on_write(self, batch: ingest.ProcessedBatch, seconds: float) -> None:
        """A batch was written (and is being acknowledged)."""
        self.batches += 1
        self.stored += len(batch.ticks)
        self.last_write_seconds = seconds
        self.last_batch_size = len(batch.ticks) + len(batch.quarantined)
        self._batches.inc()
        self._last_ack.set_to_current_time()
        self._stored.inc(len(batch.ticks))
        self._write_seconds.observe(seconds)
        for reason, n in batch.counts.items():
            self.quarantined[reason] += n
            self._quarantined.labels(reason).inc(n)

    def on_write_error(self) -> None:
        """A write failed: the batch will be delivered again."""
        self.write_errors += 1
        self._write_errors.inc()

    def snapshot(self) -> dict:
        """The counts as a plain dict (`GET /stats`)."""
        return {
            "received": self.received,
            "stored": self.stored,
            "quarantined": dict(sorted(self.quarantined.items())),
            "quarantined_total": sum(self.quarantined.values()),
            "batches": self.batches,
            "redeliveries": self.redeliveries,
            "poison": self.quarantined.get(ingest.POISON, 0),
            "write_errors": self.write_errors,
            "last_write_seconds": self.last_write_seconds,
            "last_batch_size": self.last_batch_size,
        }


class IngestWorker:
    """The fetch -> clean -> write -> ack loop, as an asyncio task (`start`, `close`).

    `db` is the InfluxDB client to write with (the write-only `ingest` user). `batch`
    messages at most per fetch, which waits up to `max_wait` seconds; `durable` names the
    shared consumer; JetStream delivers a message again if it is not acknowledged within
    `ack_wait` seconds. A failed write is tried again after a delay that doubles from
    `retry_start` up to `retry_max` seconds, the batch kept in hand. A message delivered
    `max_deliver` times is quarantined as "poison". With messages waiting and none
    acknowledged for `stall_after` seconds (InfluxDB and NATS being fine), the worker is
    stuck: `liveness_problem` says so.
    """

    PING_EVERY = 2.0  # when idle, check InfluxDB this often, so /readyz stays current
    PENDING_EVERY = 5.0  # how often the stall check may ask NATS how many messages wait

    def __init__(
        self,
        nats_url: str,
        db: InfluxDB,
        *,
        batch: int = ingest.DEFAULT_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
        durable: str = DEFAULT_DURABLE,
        ack_wait: float = DEFAULT_ACK_WAIT,
        memory_size: int = ingest.DEFAULT_MEMORY,
        stats: IngestStats | None = None,
        retry_start: float = 0.5,
        retry_max: float = 15.0,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        stall_after: float = DEFAULT_STALL,
    ):
        self.nats_url = nats_url
        self.db = db
        self.batch = batch
        self.max_wait = max_wait
        self.durable = durable
        self.ack_wait = ack_wait
        self.memory = ingest.DuplicateMemory(memory_size)
        self.stats = stats or IngestStats()
        self.retry_start = retry_start
        self.retry_max = retry_max
        self.max_deliver = max_deliver
        self.stall_after = stall_after
        # An empty write proves the (write-only) credentials and must answer fast; one try,
        # the loop itself retries.
        self._pinger = InfluxDB(db.url, db.credentials, db.database, timeout=2.0, retries=0)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._nc = None
        self._sub = None
        self._delay = 0.0
        self._write_failing = False
        self._influx_problem: str | None = "InfluxDB not contacted yet"
        self._worker_problem: str | None = None
        self._last_contact = -math.inf
        self._last_progress = time.monotonic()  # the last ack, or the last time nothing waited
        self._in_hand = 0  # messages fetched and not yet acknowledged
        self._pending: tuple[float, int] = (-math.inf, 0)  # (when asked, messages waiting)

    @classmethod
    def from_settings(cls, settings: Settings, stats: IngestStats | None = None) -> IngestWorker:
        """The worker the service runs, configured by its `Settings`."""
        # A write must end well within ack_wait (timeout x 3 tries + backoff), or JetStream
        # would hand the batch to another replica while this one is still writing it.
        db = InfluxDB(
            settings.influx_url,
            settings.credentials,
            settings.database,
            timeout=min(10.0, max(1.0, settings.ack_wait / 4)),
            retries=2,
            backoff=0.25,
        )
        return cls(
            settings.nats_url,
            db,
            batch=settings.batch,
            max_wait=settings.max_wait,
            durable=settings.durable,
            ack_wait=settings.ack_wait,
            memory_size=settings.memory,
            stats=stats,
            max_deliver=settings.max_deliver,
            stall_after=settings.stall_after,
        )

    # -- configuration and state -----------------------------------------------------------
    def consumer_config(self) -> ConsumerConfig:
        """The durable pull consumer that every replica shares.

        It takes the whole stream, which holds only `ticks.>`. No `filter_subject` on
        purpose: with the (redundant) filter `ticks.>`, nats-server 2.9 (Debian's) spins at
        100% CPU as soon as two replicas pull at once, and delivers ~1,000 messages/s instead
        of ~60,000 (measured with `bench/streaming.py`).

        JetStream itself never gives up on a message (`max_deliver=-1`): the worker
        quarantines it as "poison" at its `max_deliver`-th delivery, so that it is recorded
        and acknowledged rather than left behind unacknowledged.
        """
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,  # a first start also takes what already waits
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            # Unacknowledged messages allowed in flight: room for ten replicas' batches.
            max_ack_pending=max(10_000, 10 * self.batch),
        )

    def nats_problem(self) -> str | None:
        """`None` when connected to NATS and consuming, else what is wrong."""
        if self._task is not None and self._task.done() and not self._stopping.is_set():
            return "the worker loop has stopped"
        if self._nc is None or not self._nc.is_connected:
            return f"not connected to NATS at {self.nats_url}"
        if self._sub is None:
            return f"consumer {self.durable!r} not set up yet"
        return None

    def influx_problem(self) -> str | None:
        """`None` when InfluxDB answered the last write or ping, else the error."""
        return self._influx_problem

    def worker_problem(self) -> str | None:
        """`None` unless the last batch failed for a reason other than InfluxDB or NATS."""
        return self._worker_problem

    async def liveness_problem(self) -> str | None:
        """`None` unless the worker is stuck: messages wait, none was acknowledged for
        `stall_after` seconds, and neither InfluxDB nor NATS explains it (those are
        readiness problems: restarting the worker would not help)."""
        idle = time.monotonic() - self._last_progress
        if idle < self.stall_after:
            return None
        if self._write_failing or self.nats_problem() is not None:
            return None
        waiting = self._in_hand or await self._waiting()
        if not waiting:
            self._last_progress = time.monotonic()  # nothing to do is no stall
            return None
        return (
            f"stuck: {waiting:,} messages wait and none was acknowledged for {idle:.0f} s "
            f"(INGEST_STALL_SECONDS={self.stall_after:g})"
        )

    async def _waiting(self) -> int:
        """Messages waiting for this consumer (not yet delivered, or unacknowledged), asked
        from NATS at most every PENDING_EVERY seconds; 0 if NATS does not answer."""
        asked, count = self._pending
        if time.monotonic() - asked < self.PENDING_EVERY:
            return count
        try:
            info = await self._nc.jetstream().consumer_info(STREAM, self.durable, timeout=1.0)
            count = info.num_pending + info.num_ack_pending
        except (nats.errors.Error, TimeoutError, AttributeError):
            count = 0
        self._pending = (time.monotonic(), count)
        return count

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """Run the loop as a background task of the running event loop."""
        self._task = asyncio.create_task(self.run(), name="ingest-worker")
        return self._task

    async def close(self, timeout: float = 25.0) -> None:
        """Stop fetching, finish and acknowledge the batch in hand, close NATS.

        Gives up after `timeout` seconds (Kubernetes kills a pod 30 s after SIGTERM).
        """
        self._stopping.set()
        task = self._task
        if task is None:
            return
        if self._sub is None:
            task.cancel()  # still connecting: nothing in flight to finish
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.warning("the worker did not stop within %.0f s; cancelling it", timeout)
            task.cancel()
            await asyncio.wait({task})

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Fetch and handle batches until `close`; errors are logged, never fatal."""
        try:
            while not self._stopping.is_set():
                try:
                    if self._sub is None:
                        await self._subscribe()
                    else:
                        await self._step()
                except Exception:
                    log.exception("unexpected error in the ingest loop; retrying")
                    await self._sleep(self._next_delay())
            await self._sweep()
        finally:
            await self._disconnect()

    async def _subscribe(self) -> None:
        if self._nc is None:
            self._nc = await connect(self.nats_url, name=SERVICE)  # retries until it answers
        js = self._nc.jetstream()
        try:
            await ensure_stream(js)
            # Creates the consumer, or updates it (e.g. a new INGEST_ACK_WAIT): idempotent.
            await js.add_consumer(STREAM, config=self.consumer_config())
            self._sub = await js.pull_subscribe_bind(self.durable, stream=STREAM)
        except nats.errors.Error as err:
            log.warning("cannot set up the JetStream consumer yet: %s", err)
            await self._sleep(self._next_delay())
            return
        self._delay = 0.0
        log.info(
            "consuming",
            extra={"fields": {"stream": STREAM, "durable": self.durable, "batch": self.batch}},
        )

    async def _step(self) -> None:
        try:
            msgs = await self._sub.fetch(self.batch, timeout=self.max_wait)
        except TimeoutError:
            msgs = []
        except nats.errors.Error as err:  # e.g. NATS restarting: the client reconnects by itself
            log.warning("fetching from NATS failed: %s", err)
            await self._sleep(self._next_delay())
            return
        if msgs:
            await self.handle(msgs)
            return
        # Nothing for this worker: it is not stuck (unless its last batch failed and waits to
        # come back), and it is a good moment to check on InfluxDB.
        if self._worker_problem is None:
            self._last_progress = time.monotonic()
        await self._ping_if_due()

    async def handle(self, msgs: list) -> bool:
        """Process, write, then ack one batch. While InfluxDB fails, keep the batch and try
        again (JetStream is told it is still in progress); on an unexpected error nak it."""
        incoming = [ingest.Incoming.from_msg(m) for m in msgs]
        self.stats.on_fetch(incoming)
        self._in_hand = len(msgs)
        try:
            # Cleaning and the (synchronous) InfluxDB client run in threads: the event loop
            # keeps answering /readyz and /metrics meanwhile.
            batch = await asyncio.to_thread(
                ingest.process, incoming, self.memory, max_deliver=self.max_deliver
            )
            written = await self._write(msgs, batch)
        except Exception as err:  # a bug: JetStream delivers the batch again after a delay
            self._worker_problem = f"the last batch failed: {err!r} (see the log)"
            log.exception("a batch failed unexpectedly; it will be delivered again")
            delay = self._next_delay()
            await self._answer(msgs, "nak", delay)
            await self._sleep(delay)
            return False
        finally:
            self._in_hand = 0
        if written is None:  # stopping while InfluxDB fails: handed back to JetStream
            return False
        batch, seconds = written
        self._worker_problem = None
        await self._answer(msgs, "ack")
        self._last_progress = time.monotonic()
        for tick in batch.ticks:
            self.memory.remember(tick.series, tick.time_ns, tick.price, tick.message.stream_seq)
        self.stats.on_write(batch, seconds)
        await self._publish(batch.ticks)
        log.debug(
            "batch stored",
            extra={"fields": {"stored": len(batch.ticks), "quarantined": batch.counts}},
        )
        return True

    async def _write(self, msgs: list, batch: ingest.ProcessedBatch):
        """Write the batch, trying again while InfluxDB fails; `(stored batch, seconds of
        the successful write)`, or `None` if the worker is stopping (the batch is then
        nak-ed: JetStream delivers it again later)."""
        keeper = asyncio.create_task(self._keep_in_progress(msgs))
        try:
            while True:
                started = time.perf_counter()
                try:
                    stored = await asyncio.to_thread(ingest.write_batch, self.db, batch)
                except (LabError, requests.RequestException) as err:
                    self._influx_failed(err)
                    delay = self._next_delay()
                    if self._stopping.is_set():
                        await self._answer(msgs, "nak", delay)
                        return None
                    await self._sleep(delay)
                    continue
                seconds = time.perf_counter() - started
                if self._write_failing:
                    log.info("writing to InfluxDB works again")
                    self._write_failing = False
                self._influx_problem, self._last_contact, self._delay = None, time.monotonic(), 0.0
                return stored, seconds
        finally:
            keeper.cancel()

    async def _keep_in_progress(self, msgs: list) -> None:
        """While a batch is being written (or waits for InfluxDB), tell JetStream every third
        of `ack_wait` that it is still in progress: it is neither handed to another worker
        nor counted as delivered again."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            try:
                for msg in msgs:
                    await msg.in_progress()
            except nats.errors.Error as err:
                log.warning("could not extend the batch's deadline: %s", err)

    def _influx_failed(self, err: Exception) -> None:
        self.stats.on_write_error()
        self._write_failing = True
        self._last_contact = time.monotonic()
        self._influx_problem = str(err)
        log.warning("writing to InfluxDB failed, the batch will be tried again: %s", err)

    async def _answer(self, msgs: list, how: str, delay: float | None = None) -> None:
        """Ack or nak every message; if NATS is gone they come back after `ack_wait`."""
        try:
            for msg in msgs:
                await (msg.ack() if how == "ack" else msg.nak(delay=delay))
        except nats.errors.Error as err:
            log.warning("could not %s the batch (it will be delivered again): %s", how, err)

    async def _publish(self, ticks: list[ingest.CleanTick]) -> None:
        """Push the stored ticks on `clean.<asset>`; best effort, the points are safe."""
        try:
            for tick in ticks:
                await self._nc.publish(tick.subject, encode(tick.payload))
        except nats.errors.Error as err:
            log.warning("could not publish clean ticks: %s", err)

    async def _ping_if_due(self) -> None:
        if time.monotonic() - self._last_contact < self.PING_EVERY:
            return
        self._last_contact = time.monotonic()
        try:
            await asyncio.to_thread(self._pinger.check_write)
        except (LabError, requests.RequestException) as err:
            self._influx_problem = str(err)
        else:
            self._influx_problem = None

    def _next_delay(self) -> float:
        """The next pause: doubles from `retry_start` up to `retry_max` (reset by success)."""
        self._delay = min(self.retry_max, self._delay * 2 if self._delay else self.retry_start)
        return self._delay

    async def _sleep(self, seconds: float) -> None:
        """Pause, but wake up at once when the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _sweep(self) -> None:
        """On stop: handle what the last fetch left in the client's buffer.

        A fetch that returns early leaves its pull request open on the server until it
        expires (`max_wait`); messages arriving meanwhile wait in the client. Handling them
        now spares them a redelivery after `ack_wait`.
        """
        if self._sub is None:
            return
        await asyncio.sleep(self.max_wait)
        left = self._sub.pending_msgs
        if not left:
            return
        try:
            msgs = await self._sub.fetch(left, timeout=self.max_wait)
        except (TimeoutError, nats.errors.Error):
            return
        await self.handle(msgs)

    async def _disconnect(self) -> None:
        if self._nc is None or self._nc.is_closed:
            return
        try:
            await self._nc.flush(timeout=2)  # make sure the last acks have left
        except Exception as err:
            log.warning("could not flush the last acks (they will be redelivered): %s", err)
        await self._nc.close()
        log.info("disconnected from NATS")
