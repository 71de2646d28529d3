"""The ingest worker: JetStream ticks in, clean points and a quarantine out to InfluxDB.

Each worker (the ``ingest`` service, one or several replicas) repeats one loop::

    fetch a batch  ->  decode + clean  ->  write to InfluxDB  ->  ack  ->  publish clean.<asset>

- **Fetch**: the replicas share the durable pull consumer ``ingest`` on the stream ``TICKS``
  (the whole stream, explicit acks), so JetStream hands each message to one of them.
- **Decode and clean** (:func:`process`): a message that is not a JSON object is quarantined
  with the reason :func:`lab_helpers.broker.decode` gives ("invalid JSON", "not UTF-8", ...);
  the others go through :func:`lab_helpers.etl.clean` together, which quarantines bad ticks
  ("missing price", "unknown asset", "duplicate", ...). A small memory of recently stored
  ticks (:class:`DuplicateMemory`) catches a tick sent again in a later batch.
- **One message never blocks the others.** Whatever one message raises while it is decoded,
  validated or cleaned, that message alone is quarantined ("undecodable", "cannot be
  cleaned") and the rest of the batch goes on. A message that JetStream has delivered
  ``max_deliver`` times (the worker died or hung on it each time) is not tried again: it is
  quarantined as "poison" with its raw bytes, escaped, and acknowledged.
- **Write**: clean ticks become points of the measurement ``price``, quarantined messages
  points of ``quarantine`` (tag ``reason``, the message text in ``raw``), in one request.
  A line that InfluxDB refuses is quarantined as "rejected by InfluxDB": nothing vanishes.
- **Ack only after the write.** If InfluxDB is down, the worker keeps the batch in hand and
  tries again, backing off (exponentially, capped); meanwhile it tells JetStream the batch
  is still being worked on (so it is not handed to another worker, nor counted as a new
  delivery) and reports itself not ready, naming InfluxDB. No tick is lost. Only a failed
  write sends a batch back to JetStream (on shutdown, or after an unexpected error).

Why nothing is stored twice: a point is identified by measurement, tags and time, so writing
a redelivered tick again replaces it by itself. A quarantine point takes the time at which
JetStream stored the message, so a redelivered bad message also maps to the same point.
Together, "at least once" delivery plus idempotent points give "exactly once" storage.

A duplicate is the same asset from the same source at the same time: two sources may price an
asset at the same instant (two exchanges, or the backfilled history and a replay), and
InfluxDB keeps them apart by the ``source`` tag. With several replicas, each one has its own
duplicate memory: a tick sent again that lands
on another replica is not recognised as a duplicate there, it simply overwrites the
identical point (still stored once); a *conflicting* one (same asset and time, another
price) replaces the stored price on that replica (the last write wins).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import nats
import numpy as np
import pandas as pd
import requests
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import etl
from .broker import (
    CLEAN_PREFIX,
    DECODE_REASONS,
    STREAM,
    BadMessage,
    connect,
    decode,
    encode,
    ensure_stream,
    is_number,
    subject,
)
from .errors import DataError, LabError
from .influx import InfluxDB
from .lineprotocol import encode_point, timestamps_ns

log = logging.getLogger(__name__)

REJECTED = "rejected by InfluxDB"
"""A clean tick whose line InfluxDB refused (for instance a field type conflict)."""
UNCLEANABLE = "cannot be cleaned"
"""A tick that made the cleaner fail: a safety net, so one odd message cannot block a batch."""
POISON = "poison"
"""A message delivered ``max_deliver`` times without being acknowledged: not tried again."""
QUARANTINE_REASONS = (*DECODE_REASONS, *etl.REASONS, REJECTED, UNCLEANABLE, POISON)
"""Every reason a message can be quarantined for (the decode reasons are
:data:`lab_helpers.broker.DECODE_REASONS`)."""

OPTIONAL_FIELDS = ("volume", "open", "high", "low")
"""Numeric tick fields stored next to ``price`` when present."""
# The keys of a tick that the cleaner reads; anything else (seq, sent, ...) is kept aside.
_CLEANED_KEYS = ("time", "asset", "price", "unit", *OPTIONAL_FIELDS)
_ALWAYS = ("time", "asset", "price")  # the cleaner needs these columns, even all empty
_POSITION = "_position"  # an extra column that tells which message a clean row came from
RAW_LIMIT = 1_000
"""How many characters of a quarantined message are kept in its ``raw`` field."""
DEFAULT_BATCH = 2_000
"""Messages per fetch: the cleaner's fixed cost per call (~12 ms) is spread over more ticks."""
DEFAULT_MAX_DELIVER = 5
"""Deliveries after which a message is quarantined as "poison" instead of tried again."""
DEFAULT_STALL = 60.0
"""Seconds without progress (messages waiting, none acknowledged, InfluxDB and NATS fine)
after which ``/healthz`` fails, so that Kubernetes restarts a stuck worker."""
DEFAULT_MEMORY = 50_000
"""How many stored ticks a worker remembers to recognise duplicates (~7 MB). JetStream
already drops a tick published twice within 2 minutes (same ``Nats-Msg-Id``), so this only
has to catch a tick sent again under a new id: 50,000 ticks are 8 minutes at 100 ticks/s."""
_UNSAFE_TAG = re.compile(r"[^A-Za-z0-9_.:-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------- one message


@dataclass(frozen=True)
class Incoming:
    """One message as the worker sees it: the bytes and what JetStream says about them.

    ``stream_seq`` is the message's position in the stream, ``timestamp_ns`` the time
    JetStream stored it (nanoseconds since the epoch; the same on every redelivery), and
    ``num_delivered`` how many times it has been handed out (more than 1: a redelivery).
    """

    data: bytes
    stream_seq: int
    timestamp_ns: int
    num_delivered: int = 1

    @classmethod
    def from_msg(cls, msg) -> Incoming:
        """Build from a JetStream message of nats-py."""
        delivered, stream_seq, timestamp_ns = _ack_numbers(msg.reply)
        return cls(msg.data, stream_seq, timestamp_ns, delivered)

    @property
    def text(self) -> str:
        """The message as text (undecodable bytes shown as �), cut to :data:`RAW_LIMIT`."""
        # At most 4 bytes per character: decode only what can end up in the first characters.
        return self.data[: 4 * RAW_LIMIT].decode("utf-8", errors="replace")[:RAW_LIMIT]

    @property
    def escaped(self) -> str:
        """The raw bytes as printable text, cut to :data:`RAW_LIMIT` characters: bytes that
        are not UTF-8 and control characters as ``\\xNN``, and the size when cut."""
        text = self.data[: 4 * RAW_LIMIT].decode("utf-8", errors="backslashreplace")
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        if len(text) <= RAW_LIMIT and len(self.data) <= 4 * RAW_LIMIT:
            return text
        suffix = f"… [{len(self.data):,} bytes]"
        return text[: RAW_LIMIT - len(suffix)] + suffix


def _ack_numbers(reply: str) -> tuple[int, int, int]:
    """``(times delivered, stream sequence, storage time in ns)`` read from the ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`` (9 tokens), or
    the newer form with a domain and an account hash in front (11 or 12 tokens). Read here
    rather than through nats-py's ``metadata``, which rounds the time to µs and costs ~10 µs
    a message, a tenth of what the whole worker spends on one.
    """
    tokens = reply.split(".")
    i = 4 if len(tokens) == 9 else 6
    return int(tokens[i]), int(tokens[i + 1]), int(tokens[i + 3])


# ---------------------------------------------------------------------- duplicate memory


class DuplicateMemory:
    """The last ``size`` stored ticks, ``(series, time in ns) -> price``, oldest forgotten
    first. A series is what InfluxDB tells apart: an asset from one source
    (:attr:`CleanTick.series`, ``("btc", "replay")``).

    :func:`lab_helpers.etl.clean` finds duplicates within one batch; this memory finds a tick
    sent again in a later batch: the same price is a "duplicate", another price a
    "conflicting duplicate" (the stored one stays, as in ``clean``). The same *message*
    delivered again (same stream sequence: its ack was lost) is not a duplicate: writing it
    again is harmless. ``size=0`` turns the memory off.

    Compact, because a worker's memory is mostly this (~130 bytes a tick, against ~340 for
    tuples in an ``OrderedDict``): the key is one int, the time shifted left with a small
    number per series in the low bits; the value is a complex number, the most compact pair of
    floats CPython has (32 bytes), holding the price and the stream sequence (exact below 2**53).
    """

    _ASSET_BITS = 12  # room for 4,096 series; beyond that, exact tuple keys

    def __init__(self, size: int = DEFAULT_MEMORY):
        self.size = max(0, int(size))
        self._entries: dict[int | tuple, complex] = {}
        self._order: collections.deque[int | tuple] = collections.deque()
        self._asset_ids: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, series: Hashable, time_ns: int) -> int | tuple:
        ident = self._asset_ids.setdefault(series, len(self._asset_ids))
        if ident >> self._ASSET_BITS:
            return (series, time_ns)
        return time_ns << self._ASSET_BITS | ident

    def check(self, series: Hashable, time_ns: int, price: float, stream_seq: int) -> str | None:
        """``None`` if the tick is new (or the same message again), else the reason."""
        entry = self._entries.get(self._key(series, time_ns))
        if entry is None or entry.imag == stream_seq:
            return None
        return "duplicate" if entry.real == price else "conflicting duplicate"

    def remember(self, series: Hashable, time_ns: int, price: float, stream_seq: int) -> None:
        """Record a stored tick; forget the oldest ones beyond ``size``."""
        if not self.size:
            return
        key = self._key(series, time_ns)
        if key not in self._entries:
            self._order.append(key)
        self._entries[key] = complex(price, stream_seq)
        while len(self._entries) > self.size:
            del self._entries[self._order.popleft()]


# ---------------------------------------------------------------------- a processed batch


@dataclass(frozen=True)
class CleanTick:
    """A tick that passed every rule: its ``price`` point and its ``clean.<asset>`` message."""

    message: Incoming
    asset: str
    time_ns: int
    price: float
    point: dict
    payload: dict

    @property
    def subject(self) -> str:
        return subject(CLEAN_PREFIX, self.asset)

    @property
    def series(self) -> tuple[str, str]:
        """``(asset, source)``: the series InfluxDB stores the tick in."""
        return self.asset, self.point["tags"]["source"]


@dataclass(frozen=True)
class Quarantined:
    """A message that was refused, with the ``reason`` and the asset text it named.

    ``raw`` is what the record keeps of the message: its text (:attr:`Incoming.text`), or
    for a poison message its bytes escaped (:attr:`Incoming.escaped`).
    """

    message: Incoming
    reason: str
    asset: str = ""
    raw: str | None = None

    @property
    def point(self) -> dict:
        """The ``quarantine`` point; its time is the JetStream time, so a redelivered
        message maps to the same point."""
        raw = self.message.text if self.raw is None else self.raw
        return {
            "measurement": "quarantine",
            "tags": {"reason": self.reason},
            "fields": {"raw": raw, "asset": _storable(self.asset[:RAW_LIMIT])},
            "time": self.message.timestamp_ns,
        }


@dataclass
class ProcessedBatch:
    """The outcome of a batch: the clean ``ticks`` and the ``quarantined`` messages.

    Every message of the batch is in exactly one of the two lists.
    """

    ticks: list[CleanTick] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Quarantined messages per reason."""
        return dict(collections.Counter(q.reason for q in self.quarantined))

    def points(self) -> list[dict]:
        """Every point to write: the ``price`` points, then the ``quarantine`` points."""
        return [t.point for t in self.ticks] + [q.point for q in self.quarantined]


def _asset_text(tick: dict | None) -> str:
    value = (tick or {}).get("asset")
    return value if isinstance(value, str) else ""


def _storable(text: str) -> str:
    """Text that can travel as UTF-8: JSON may hold lone surrogates (``"\\ud800"``), which
    no UTF-8 encoder accepts; they become ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _source_tag(value) -> str:
    """A safe ``source`` tag: a tag value cannot hold line breaks or end with a backslash,
    and an odd source is no reason to lose a good price."""
    if not isinstance(value, str):
        return "unknown"
    return _UNSAFE_TAG.sub("_", value.strip())[:64] or "unknown"


def _iso_times(times_ns: np.ndarray) -> list[str]:
    """``2021-04-14T06:13:00Z`` for each time (``.500000Z`` with microseconds, 9 digits with
    nanoseconds); formatted by numpy for the whole batch at once."""
    seconds, ns = np.divmod(times_ns.astype("int64"), 1_000_000_000)
    texts = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").tolist()
    for i in np.flatnonzero(ns).tolist():  # rare: sub-second times
        part = int(ns[i])
        texts[i] += f".{part // 1000:06d}" if part % 1000 == 0 else f".{part:09d}"
    return [text + "Z" for text in texts]


def _frame(ticks: Sequence[dict], positions: Sequence[int]) -> pd.DataFrame:
    """The ticks as a table for the cleaner: only the keys it reads, plus the position of
    each message so that a clean row can be traced back to it."""
    # Only the optional keys that some tick has: an all-empty column costs the cleaner as
    # much as a real one (a unit column alone means a table merge).
    keys = [k for k in _CLEANED_KEYS if k in _ALWAYS or any(k in tick for tick in ticks)]
    rows = [{key: tick.get(key) for key in keys} for tick in ticks]
    frame = pd.DataFrame(rows, columns=keys)
    # Duplicates are judged per series, as InfluxDB stores them: asset and (storable) source.
    frame["source"] = [_source_tag(tick.get("source")) for tick in ticks]
    frame[_POSITION] = list(positions)
    return frame


def _refusals(result: etl.CleanResult) -> list[tuple[int, str]]:
    """``(position, reason)`` of each quarantined row of a cleaner result."""
    refused = result.quarantine
    return list(zip(refused[_POSITION].tolist(), refused["reason"].tolist()))


def _clean(ticks: list[dict], now) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Clean the ticks together: the clean rows, and ``(position, reason)`` for the others.

    Should the cleaner ever fail on a batch, the ticks are cleaned one by one and only the
    tick that makes it fail is quarantined: one odd message must not block the stream.
    """
    try:
        result = etl.clean(_frame(ticks, range(len(ticks))), now=now)
        return result.clean, _refusals(result)
    except Exception:
        log.exception("the cleaner failed on a batch; cleaning its ticks one by one")
    parts, refused = [], []
    for position, tick in enumerate(ticks):
        try:
            result = etl.clean(_frame([tick], [position]), now=now)
        except Exception:
            log.exception("the cleaner failed on one tick; it is quarantined")
            refused.append((position, UNCLEANABLE))
            continue
        parts.append(result.clean)
        refused += _refusals(result)
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()), refused


def _clean_tick(
    message: Incoming, tick: dict, asset: str, time_ns: int, iso: str, price: float, extra: dict
):
    """The ``price`` point and the ``clean.<asset>`` message of one clean tick (its time both
    in ns and as ISO text)."""
    optional = {name: value for name, value in extra.items() if is_number(value)}
    source = _source_tag(tick.get("source"))
    point = {
        "measurement": "price",
        "tags": {"asset": asset, "source": source},
        "fields": {"price": price, **optional},
        "time": time_ns,
    }
    payload = {"asset": asset, "price": price, "time": iso, "source": source, **optional}
    # The source's sequence number and send time travel on, for latency measurements.
    payload.update({key: tick[key] for key in ("seq", "sent") if is_number(tick.get(key))})
    return CleanTick(message, asset, time_ns, price, point, payload)


def process(
    messages: Sequence[Incoming],
    memory: DuplicateMemory | None = None,
    *,
    now=None,
    max_deliver: int | None = None,
) -> ProcessedBatch:
    """Decode and clean a batch of messages: what to store, and what to quarantine why.

    ``memory`` recognises ticks already stored by an earlier batch (it is consulted, not filled:
    call :meth:`DuplicateMemory.remember` once the write succeeded). ``now`` is the
    reference for "in the future" (default: the current time). A message delivered
    ``max_deliver`` times or more is quarantined as "poison" without being looked at.

    Never raises: should anything fail on the batch as a whole, its messages are processed one
    by one, and a message that still fails is quarantined alone ("cannot be cleaned").
    """
    try:
        return _process(messages, memory, now, max_deliver)
    except Exception:
        log.exception("processing a batch failed; processing its messages one by one")
    out = ProcessedBatch()
    for message in messages:
        try:
            one = _process([message], memory, now, max_deliver)
        except Exception:
            log.exception("a message could not be processed; it is quarantined")
            one = ProcessedBatch(quarantined=[Quarantined(message, UNCLEANABLE)])
        out.ticks += one.ticks
        out.quarantined += one.quarantined
    return out


def _process(
    messages: Sequence[Incoming], memory: DuplicateMemory | None, now, max_deliver: int | None
) -> ProcessedBatch:
    out = ProcessedBatch()
    decoded: list[tuple[Incoming, dict]] = []
    for message in messages:
        if max_deliver and message.num_delivered >= max_deliver:
            out.quarantined.append(Quarantined(message, POISON, raw=message.escaped))
            continue
        try:
            decoded.append((message, decode(message.data)))
        except BadMessage as err:
            out.quarantined.append(Quarantined(message, err.reason))
    if not decoded:
        return out

    clean, refused = _clean([tick for _, tick in decoded], now)
    for position, reason in refused:
        message, tick = decoded[int(position)]
        out.quarantined.append(Quarantined(message, reason, _asset_text(tick)))
    if clean.empty:
        return out

    columns = {name: clean[name].tolist() for name in OPTIONAL_FIELDS if name in clean}
    times = timestamps_ns(clean["time"])
    rows = zip(
        clean[_POSITION].astype(int).tolist(),
        clean["asset"].tolist(),
        times.tolist(),
        _iso_times(times),
        clean["price"].tolist(),
    )
    for i, (position, asset, time_ns, iso, price) in enumerate(rows):
        message, tick = decoded[position]
        try:
            series = (asset, _source_tag(tick.get("source")))
            reason = memory.check(series, time_ns, price, message.stream_seq) if memory else None
            if reason:
                out.quarantined.append(Quarantined(message, reason, _asset_text(tick)))
                continue
            extra = {name: values[i] for name, values in columns.items()}
            out.ticks.append(_clean_tick(message, tick, asset, time_ns, iso, price, extra))
        except Exception:
            log.exception("a clean tick could not be turned into a point; it is quarantined")
            out.quarantined.append(Quarantined(message, UNCLEANABLE, _asset_text(tick)))
    return out


def write_batch(db: InfluxDB, batch: ProcessedBatch) -> ProcessedBatch:
    """Write a processed batch in one go; returns what was actually stored.

    Lines that InfluxDB refuses (a partial write, e.g. a field type conflict) do not raise:
    their ticks move to the quarantine as "rejected by InfluxDB", written in a second
    request. A point that cannot even be written as a line is quarantined the same way.
    Raises (:class:`~lab_helpers.errors.InfluxError` ...) when InfluxDB cannot be reached or
    refuses the whole request: then nothing may be acknowledged.
    """
    points = batch.points()
    if not points:
        return batch
    try:
        report = db.write(points, raise_on_rejected=False)
    except DataError:  # a point that is no line: find it, keep the others
        batch = _without_unwritable(batch)
        report = db.write(batch.points(), raise_on_rejected=False)
    if not report.rejected:
        return batch
    why = dict(report.rejected)  # line -> InfluxDB's reason
    kept, moved = [], []
    for tick in batch.ticks:
        reason = why.pop(encode_point(tick.point), None)
        if reason is None:
            kept.append(tick)
        else:
            log.warning("InfluxDB rejected a tick, quarantined: %s", reason)
            moved.append(Quarantined(tick.message, REJECTED, tick.asset))
    lost = list(why.items())
    if moved:
        lost += db.write([q.point for q in moved], raise_on_rejected=False).rejected
    for line, reason in lost:  # only quarantine lines are left: say so loudly
        log.error("InfluxDB rejected a quarantine record: %s: %s", reason, line[:300])
    return ProcessedBatch(kept, batch.quarantined + moved)


def _writable(point: dict) -> bool:
    try:
        encode_point(point)
    except DataError:
        return False
    return True


def _without_unwritable(batch: ProcessedBatch) -> ProcessedBatch:
    """The batch with every tick whose point cannot be encoded moved to the quarantine."""
    kept, moved = [], []
    for tick in batch.ticks:
        if _writable(tick.point):
            kept.append(tick)
        else:
            moved.append(Quarantined(tick.message, REJECTED, tick.asset))
    quarantined = [
        q if _writable(q.point) else Quarantined(q.message, q.reason, raw=q.message.escaped)
        for q in batch.quarantined
    ]
    log.warning("%d ticks could not be written as lines; quarantined", len(moved))
    return ProcessedBatch(kept, quarantined + moved)


# ---------------------------------------------------------------------- counts and metrics


class IngestStats:
    """What the worker did, as Prometheus metrics (on ``registry``) and as a dict for
    ``GET /stats`` (:meth:`snapshot`). Both are updated together, so they always agree."""

    def __init__(self, registry: CollectorRegistry | None = None):
        registry = registry if registry is not None else CollectorRegistry()
        self._received = Counter(
            "ingest_ticks_received",
            "Messages fetched from JetStream (a redelivered message counts again)",
            registry=registry,
        )
        self._stored = Counter(
            "ingest_ticks_stored", "Clean ticks written to the measurement price", registry=registry
        )
        self._quarantined = Counter(
            "ingest_ticks_quarantined",
            "Messages written to the measurement quarantine, by reason",
            ["reason"],
            registry=registry,
        )
        self._batches = Counter(
            "ingest_batches", "Batches written and acknowledged", registry=registry
        )
        self._write_seconds = Histogram(
            "ingest_write_seconds", "Time to write one batch to InfluxDB", registry=registry
        )
        self._write_errors = Counter(
            "ingest_write_errors",
            "Batches whose write failed (not acknowledged: delivered again later)",
            registry=registry,
        )
        self._redeliveries = Counter(
            "ingest_redeliveries", "Messages delivered more than once", registry=registry
        )
        self._last_ack = Gauge(
            "ingest_last_ack_timestamp_seconds",
            "When the last batch was written and acknowledged (Unix time)",
            registry=registry,
        )
        for reason in QUARANTINE_REASONS:  # every reason shows up, at 0 until it happens
            self._quarantined.labels(reason)
        self.received = self.stored = self.batches = self.write_errors = self.redeliveries = 0
        self.quarantined: collections.Counter[str] = collections.Counter()
        self.last_write_seconds: float | None = None
        self.last_batch_size = 0

    def on_fetch(self, messages: Sequence[Incoming]) -> None:
        """A batch arrived."""
        again = sum(1 for m in messages if m.num_delivered > 1)
        self.received += len(messages)
        self.redeliveries += again
        self._received.inc(len(messages))
        self._redeliveries.inc(again)

    def on_write(self, batch: ProcessedBatch, seconds: float) -> None:
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
        """The counts as a plain dict (``GET /stats``)."""
        return {
            "received": self.received,
            "stored": self.stored,
            "quarantined": dict(sorted(self.quarantined.items())),
            "quarantined_total": sum(self.quarantined.values()),
            "batches": self.batches,
            "redeliveries": self.redeliveries,
            "poison": self.quarantined.get(POISON, 0),
            "write_errors": self.write_errors,
            "last_write_seconds": self.last_write_seconds,
            "last_batch_size": self.last_batch_size,
        }


# ---------------------------------------------------------------------- the worker loop


class IngestWorker:
    """The fetch -> clean -> write -> ack loop, as an asyncio task (:meth:`start`, :meth:`close`).

    ``db`` is the InfluxDB client to write with (the write-only ``ingest`` user). ``batch``
    messages at most per fetch, which waits up to ``max_wait`` seconds; ``durable`` names the
    shared consumer; JetStream delivers a message again if it is not acknowledged within
    ``ack_wait`` seconds. A failed write is tried again after a delay that doubles from
    ``retry_start`` up to ``retry_max`` seconds, the batch kept in hand. A message delivered
    ``max_deliver`` times is quarantined as "poison". With messages waiting and none
    acknowledged for ``stall_after`` seconds (InfluxDB and NATS being fine), the worker is
    stuck: :meth:`liveness_problem` says so.
    """

    PING_EVERY = 2.0  # when idle, check InfluxDB this often, so /readyz stays current
    PENDING_EVERY = 5.0  # how often the stall check may ask NATS how many messages wait

    def __init__(
        self,
        nats_url: str,
        db: InfluxDB,
        *,
        batch: int = DEFAULT_BATCH,
        max_wait: float = 0.2,
        durable: str = "ingest",
        ack_wait: float = 30.0,
        memory_size: int = DEFAULT_MEMORY,
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
        self.memory = DuplicateMemory(memory_size)
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

    # -- configuration and state -----------------------------------------------------------
    def consumer_config(self) -> ConsumerConfig:
        """The durable pull consumer that every replica shares.

        It takes the whole stream, which holds only ``ticks.>``. No ``filter_subject`` on
        purpose: with the (redundant) filter ``ticks.>``, nats-server 2.9 (Debian's) spins at
        100% CPU as soon as two replicas pull at once, and delivers ~1,000 messages/s instead
        of ~60,000 (measured with ``bench/streaming.py``).

        JetStream itself never gives up on a message (``max_deliver=-1``): the worker
        quarantines it as "poison" at its ``max_deliver``-th delivery, so that it is recorded
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
        """``None`` when connected to NATS and consuming, else what is wrong."""
        if self._task is not None and self._task.done() and not self._stopping.is_set():
            return "the worker loop has stopped"
        if self._nc is None or not self._nc.is_connected:
            return f"not connected to NATS at {self.nats_url}"
        if self._sub is None:
            return f"consumer {self.durable!r} not set up yet"
        return None

    def influx_problem(self) -> str | None:
        """``None`` when InfluxDB answered the last write or ping, else the error."""
        return self._influx_problem

    def worker_problem(self) -> str | None:
        """``None`` unless the last batch failed for a reason other than InfluxDB or NATS."""
        return self._worker_problem

    async def liveness_problem(self) -> str | None:
        """``None`` unless the worker is stuck: messages wait, none was acknowledged for
        ``stall_after`` seconds, and neither InfluxDB nor NATS explains it (those are
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

        Gives up after ``timeout`` seconds (Kubernetes kills a pod 30 s after SIGTERM).
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
        """Fetch and handle batches until :meth:`close`; errors are logged, never fatal."""
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
            self._nc = await connect(self.nats_url, name="ingest")  # retries until it answers
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
        incoming = [Incoming.from_msg(m) for m in msgs]
        self.stats.on_fetch(incoming)
        self._in_hand = len(msgs)
        try:
            # Cleaning and the (synchronous) InfluxDB client run in threads: the event loop
            # keeps answering /readyz and /metrics meanwhile.
            batch = await asyncio.to_thread(
                process, incoming, self.memory, max_deliver=self.max_deliver
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

    async def _write(self, msgs: list, batch: ProcessedBatch):
        """Write the batch, trying again while InfluxDB fails; ``(stored batch, seconds of
        the successful write)``, or ``None`` if the worker is stopping (the batch is then
        nak-ed: JetStream delivers it again later)."""
        keeper = asyncio.create_task(self._keep_in_progress(msgs))
        try:
            while True:
                started = time.perf_counter()
                try:
                    stored = await asyncio.to_thread(write_batch, self.db, batch)
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
        of ``ack_wait`` that it is still in progress: it is neither handed to another worker
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
        """Ack or nak every message; if NATS is gone they come back after ``ack_wait``."""
        try:
            for msg in msgs:
                await (msg.ack() if how == "ack" else msg.nak(delay=delay))
        except nats.errors.Error as err:
            log.warning("could not %s the batch (it will be delivered again): %s", how, err)

    async def _publish(self, ticks: list[CleanTick]) -> None:
        """Push the stored ticks on ``clean.<asset>``; best effort, the points are safe."""
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
        """The next pause: doubles from ``retry_start`` up to ``retry_max`` (reset by success)."""
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
        expires (``max_wait``); messages arriving meanwhile wait in the client. Handling them
        now spares them a redelivery after ``ack_wait``.
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
