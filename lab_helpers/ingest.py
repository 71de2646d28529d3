"""What happens to a batch of tick messages on its way to InfluxDB: decoded, cleaned, written.

The ingest service (`services/ingest/worker.py`) runs this for every batch it fetches from
JetStream; the tests, the benchmarks and notebook 03 run it on messages of their own, with no
broker at all:

    batch = process(messages, memory)        # what to store, what to quarantine and why
    stored = write_batch(db, batch)          # one request; refused lines quarantined too

- **Decode and clean** (`process`): a message that is not a JSON object is quarantined
  with the reason `lab_helpers.broker.decode` gives ("invalid JSON", "not UTF-8", ...);
  the others go through `lab_helpers.etl.clean` together, which quarantines bad ticks
  ("missing price", "unknown asset", "duplicate", ...). A small memory of recently stored
  ticks (`DuplicateMemory`) catches a tick sent again in a later batch.
- **One message never blocks the others.** Whatever one message raises while it is decoded,
  validated or cleaned, that message alone is quarantined ("undecodable", "cannot be
  cleaned") and the rest of the batch goes on. A message that JetStream has delivered
  `max_deliver` times (a worker died or hung on it each time) is not tried again: it is
  quarantined as "poison" with its raw bytes, escaped.
- **Write** (`write_batch`): clean ticks become points of the measurement `price`,
  quarantined messages points of `quarantine` (tag `reason`, the message text in `raw`), in
  one request. A line that InfluxDB refuses is quarantined as "rejected by InfluxDB":
  nothing vanishes.

Why nothing is stored twice: a point is identified by measurement, tags and time, so writing
a redelivered tick again replaces it by itself. A quarantine point takes the time at which
JetStream stored the message, so a redelivered bad message also maps to the same point.
Together, "at least once" delivery plus idempotent points give "exactly once" storage.

A duplicate is the same asset from the same source at the same time: two sources may price an
asset at the same instant (two exchanges, or the backfilled history and a replay), and
InfluxDB keeps them apart by the `source` tag. With several ingest replicas, each one has its
own duplicate memory: a tick sent again that lands on another replica is not recognised as a
duplicate there, it simply overwrites the identical point (still stored once); a
*conflicting* one (same asset and time, another price) replaces the stored price on that
replica (the last write wins).
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import etl
from .broker import (
    CLEAN_PREFIX,
    DECODE_REASONS,
    BadMessage,
    decode,
    is_number,
    subject,
)
from .errors import DataError
from .influx import InfluxDB
from .lineprotocol import encode_point, timestamps_ns

log = logging.getLogger(__name__)

REJECTED = "rejected by InfluxDB"
"""A clean tick whose line InfluxDB refused (for instance a field type conflict)."""
UNCLEANABLE = "cannot be cleaned"
"""A tick that made the cleaner fail: a safety net, so one odd message cannot block a batch."""
POISON = "poison"
"""A message delivered `max_deliver` times without being acknowledged: not tried again."""
QUARANTINE_REASONS = (*DECODE_REASONS, *etl.REASONS, REJECTED, UNCLEANABLE, POISON)
"""Every reason a message can be quarantined for (the decode reasons are
`lab_helpers.broker.DECODE_REASONS`)."""

OPTIONAL_FIELDS = ("volume", "open", "high", "low")
"""Numeric tick fields stored next to `price` when present."""
# The keys of a tick that the cleaner reads; anything else (seq, sent, ...) is kept aside.
_CLEANED_KEYS = ("time", "asset", "price", "unit", *OPTIONAL_FIELDS)
_ALWAYS = ("time", "asset", "price")  # the cleaner needs these columns, even all empty
_POSITION = "_position"  # an extra column that tells which message a clean row came from
RAW_LIMIT = 1_000
"""How many characters of a quarantined message are kept in its `raw` field."""
DEFAULT_BATCH = 2_000
"""Messages per fetch: the cleaner's fixed cost per call (~12 ms) is spread over more ticks."""
DEFAULT_MEMORY = 50_000
"""How many stored ticks a worker remembers to recognise duplicates (~7 MB). JetStream
already drops a tick published twice within 2 minutes (same `Nats-Msg-Id`), so this only
has to catch a tick sent again under a new id: 50,000 ticks are 8 minutes at 100 ticks/s."""
_UNSAFE_TAG = re.compile(r"[^A-Za-z0-9_.:-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------- one message


@dataclass(frozen=True)
class Incoming:
    """One message as the worker sees it: the bytes and what JetStream says about them.

    `stream_seq` is the message's position in the stream, `timestamp_ns` the time
    JetStream stored it (nanoseconds since the epoch; the same on every redelivery), and
    `num_delivered` how many times it has been handed out (more than 1: a redelivery).
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
        """The message as text (undecodable bytes shown as �), cut to `RAW_LIMIT`."""
        # At most 4 bytes per character: decode only what can end up in the first characters.
        return self.data[: 4 * RAW_LIMIT].decode("utf-8", errors="replace")[:RAW_LIMIT]

    @property
    def escaped(self) -> str:
        """The raw bytes as printable text, cut to `RAW_LIMIT` characters: bytes that
        are not UTF-8 and control characters as `\\xNN`, and the size when cut."""
        text = self.data[: 4 * RAW_LIMIT].decode("utf-8", errors="backslashreplace")
        text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        if len(text) <= RAW_LIMIT and len(self.data) <= 4 * RAW_LIMIT:
            return text
        suffix = f"… [{len(self.data):,} bytes]"
        return text[: RAW_LIMIT - len(suffix)] + suffix


def _ack_numbers(reply: str) -> tuple[int, int, int]:
    """`(times delivered, stream sequence, storage time in ns)` read from the ack subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>` (9 tokens), or
    the newer form with a domain and an account hash in front (11 or 12 tokens). Read here
    rather than through nats-py's `metadata`, which rounds the time to µs and costs ~10 µs
    a message, a tenth of what the whole worker spends on one.
    """
    tokens = reply.split(".")
    i = 4 if len(tokens) == 9 else 6
    return int(tokens[i]), int(tokens[i + 1]), int(tokens[i + 3])


# ---------------------------------------------------------------------- duplicate memory


class DuplicateMemory:
    """The last `size` stored ticks, `(series, time in ns) -> price`, oldest forgotten
    first. A series is what InfluxDB tells apart: an asset from one source
    (`CleanTick.series`, `("btc", "replay")`).

    `lab_helpers.etl.clean` finds duplicates within one batch; this memory finds a tick
    sent again in a later batch: the same price is a "duplicate", another price a
    "conflicting duplicate" (the stored one stays, as in `clean`). The same *message*
    delivered again (same stream sequence: its ack was lost) is not a duplicate: writing it
    again is harmless. `size=0` turns the memory off.

    Compact, because a worker's memory is mostly this (~130 bytes a tick, against ~340 for
    tuples in an `OrderedDict`): the key is one int, the time shifted left with a small
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
        """`None` if the tick is new (or the same message again), else the reason."""
        entry = self._entries.get(self._key(series, time_ns))
        if entry is None or entry.imag == stream_seq:
            return None
        return "duplicate" if entry.real == price else "conflicting duplicate"

    def remember(self, series: Hashable, time_ns: int, price: float, stream_seq: int) -> None:
        """Record a stored tick; forget the oldest ones beyond `size`."""
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
    """A tick that passed every rule: its `price` point and its `clean.<asset>` message."""

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
        """`(asset, source)`: the series InfluxDB stores the tick in."""
        return self.asset, self.point["tags"]["source"]


@dataclass(frozen=True)
class Quarantined:
    """A message that was refused, with the `reason` and the asset text it named.

    `raw` is what the record keeps of the message: its text (`Incoming.text`), or
    for a poison message its bytes escaped (`Incoming.escaped`).
    """

    message: Incoming
    reason: str
    asset: str = ""
    raw: str | None = None

    @property
    def point(self) -> dict:
        """The `quarantine` point; its time is the JetStream time, so a redelivered
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
    """The outcome of a batch: the clean `ticks` and the `quarantined` messages.

    Every message of the batch is in exactly one of the two lists.
    """

    ticks: list[CleanTick] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Quarantined messages per reason."""
        return dict(collections.Counter(q.reason for q in self.quarantined))

    def points(self) -> list[dict]:
        """Every point to write: the `price` points, then the `quarantine` points."""
        return [t.point for t in self.ticks] + [q.point for q in self.quarantined]


def _asset_text(tick: dict | None) -> str:
    value = (tick or {}).get("asset")
    return value if isinstance(value, str) else ""


def _storable(text: str) -> str:
    """Text that can travel as UTF-8: JSON may hold lone surrogates (`"\\ud800"`), which
    no UTF-8 encoder accepts; they become `?`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _source_tag(value) -> str:
    """A safe `source` tag: a tag value cannot hold line breaks or end with a backslash,
    and an odd source is no reason to lose a good price."""
    if not isinstance(value, str):
        return "unknown"
    return _UNSAFE_TAG.sub("_", value.strip())[:64] or "unknown"


def _iso_times(times_ns: np.ndarray) -> list[str]:
    """`2021-04-14T06:13:00Z` for each time (`.500000Z` with microseconds, 9 digits with
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
    """`(position, reason)` of each quarantined row of a cleaner result."""
    refused = result.quarantine
    return list(zip(refused[_POSITION].tolist(), refused["reason"].tolist()))


def _clean(ticks: list[dict], now) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Clean the ticks together: the clean rows, and `(position, reason)` for the others.

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
    """The `price` point and the `clean.<asset>` message of one clean tick (its time both
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

    `memory` recognises ticks already stored by an earlier batch (it is consulted, not filled:
    call `DuplicateMemory.remember` once the write succeeded). `now` is the
    reference for "in the future" (default: the current time). A message delivered
    `max_deliver` times or more is quarantined as "poison" without being looked at.

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
    Raises (`InfluxError` ...) when InfluxDB cannot be reached or
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
