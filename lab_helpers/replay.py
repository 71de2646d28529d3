"""Replay the bundled price history as a stream of ticks, with bad records mixed in on purpose.

This is the logic of the `source` service (`services/source/main.py`) without any network:
it builds the ticks, decides how long to wait before each one, and injects bad records, so
that every piece can be tested, and used from a notebook, on its own.

A tick is a small dict, the body of one message on the subject `ticks.<asset>`
(see `docs/architecture.md`):

    {"asset": "btc", "price": 56535.89, "time": "2021-03-15T22:18:00Z", "source": "replay",
     "seq": 1, "volume": 0.29, "open": 56609.59, "high": 56609.59, "low": 56524.7}

`seq` counts the emitted records from 0; `volume/open/high/low` appear when the data set has
them. The service adds `sent` (the wall-clock publish time) when it publishes.

Bad records: with `bad_share` > 0, that share of the emitted records is bad, of the kinds in
`BAD_KINDS` (chosen at random with a fixed `seed`, so a run can be repeated exactly):

====================  ==========================================================================
kind                  what is emitted
====================  ==========================================================================
`missing_price`     the next tick without its `price` key
`nan_price`         the next tick with `price` NaN
`negative_price`    the next tick with its price negated
`wrong_type`        the next tick with `price` as text (`"abc"`) or a list (`[63000.5]`)
`unknown_asset`     the next tick with an asset the lab does not know (`"doge"`)
`broken_timestamp`  the next tick with a `time` that is no time (`"2021-02-30T10:00:00Z"`)
`duplicate`         a re-send of one of the last few valid ticks (same fields, own `seq`)
`out_of_order`      the next tick, held back until 1 to 3 later ticks are out: it is VALID
====================  ==========================================================================

Bad records are *inserted*: the valid ticks are all still emitted, so the clean ticks the ETL
keeps are exactly the data set. `EXPECTED_REASON` says how `lab_helpers.etl.clean`
treats each kind.

Example:

    from itertools import islice
    for kind, tick in islice(records(ReplayConfig(bad_share=0.2, seed=1)), 5):
        print(kind, tick)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import data
from .errors import ConfigError, DataError

SOURCE = "replay"
"""The `source` field of every replayed tick."""
BACKFILL_SOURCE = "history"
"""The `source` field of the backfill: the history sent before the replay (see
`backfill`), so that it stays apart from the replayed ticks in InfluxDB."""

CORE_FIELDS = ("asset", "price", "time", "source")
OPTIONAL_FIELDS = ("volume", "open", "high", "low")
"""Columns of a data set that travel with the tick when the data set has them."""

BAD_KINDS: tuple[str, ...] = (
    "missing_price",
    "nan_price",
    "negative_price",
    "wrong_type",
    "unknown_asset",
    "broken_timestamp",
    "duplicate",
    "out_of_order",
)
"""Every kind of bad record the injector can emit."""

KINDS: tuple[str, ...] = ("valid", *BAD_KINDS)
"""Every kind an emitted record can have: `valid` for a good tick."""

EXPECTED_REASON: dict[str, str | None] = {
    "valid": None,
    "missing_price": "missing price",
    "nan_price": "missing price",  # NaN means "no value" to the cleaner
    "negative_price": "price not positive",
    "wrong_type": "price not a number",
    "unknown_asset": "unknown asset",
    "broken_timestamp": "bad timestamp",
    "duplicate": "duplicate",  # only when the original is in the same clean() batch
    "out_of_order": None,  # a valid tick, late: the cleaner sorts, it must be stored
}
"""The quarantine reason of `lab_helpers.etl.clean` for each kind (None: kept as clean)."""

NATURAL_STEP: dict[str, float] = {"1min": 60.0, "daily": 86_400.0, "monthly": 2_629_746.0}
"""Seconds between two rows at each frequency: the default speedup replays one row a second."""

UNKNOWN_ASSETS = ("doge", "shib", "ada")
WRONG_PRICES = ("abc", "list")  # "list": the price wrapped in a list
RECENT = 5  # a duplicate re-sends one of the last RECENT valid ticks
HOLD_BACK = (1, 3)  # an out_of_order tick comes out after 1 to 3 later valid ticks
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay, from where, and how many bad records to mix in.

    * `dataset`: a key of `lab_helpers.data.DATASETS` (default `btc_usd_1min`);
      set it to `None` to replay `assets` at `frequency` instead (merged in time order).
    * `start`: skip the rows before this time (ISO text, UTC when no offset is given).
    * `loop`: start again from `start` at the end of the data (`seq` keeps counting).
    * `bad_share` (0 to 1), `bad_kinds`, `seed`: the bad-record injector.
    * `backfill`: first send the history of every asset (`backfill`), so that every
      chart has data before the replay starts.
    """

    dataset: str | None = "btc_usd_1min"
    assets: tuple[str, ...] = ()
    frequency: str = "daily"
    start: str | None = None
    loop: bool = False
    bad_share: float = 0.0
    bad_kinds: tuple[str, ...] = BAD_KINDS
    seed: int = 0
    backfill: bool = False

    def __post_init__(self) -> None:
        if self.dataset is None and not self.assets:
            raise ConfigError("nothing to replay: give a data set or a list of assets")
        if self.frequency not in data.FREQUENCIES:
            raise ConfigError(
                f"frequency {self.frequency!r} is not valid: use one of "
                f"{', '.join(data.FREQUENCIES)}"
            )
        if not 0.0 <= self.bad_share <= 1.0:
            raise ConfigError(f"bad_share={self.bad_share} is out of range: use 0 to 1")
        unknown = [k for k in self.bad_kinds if k not in BAD_KINDS]
        if unknown:
            raise ConfigError(
                f"unknown bad-record kind {unknown[0]!r}: use some of {', '.join(BAD_KINDS)}"
            )
        if self.bad_share > 0 and not self.bad_kinds:
            raise ConfigError("bad_share is above 0 but no bad-record kind is chosen")
        if self.start is not None:
            parse_start(self.start)

    @property
    def natural_step(self) -> float:
        """Seconds between two rows of this data (60 for 1-minute bars, a day for daily)."""
        if self.dataset is None:
            return NATURAL_STEP[self.frequency]
        return NATURAL_STEP[data.catalogue.load().datasets[self.dataset].frequency]


def parse_start(text: str) -> pd.Timestamp:
    """`"2021-04-01"` or `"2021-04-01T12:00:00+02:00"` as a UTC timestamp (UTC if naive)."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise ConfigError(
            f"start time {text!r} is not a time: use ISO 8601, e.g. 2021-04-01 or "
            "2021-04-01T12:00:00Z"
        ) from None
    if pd.isna(stamp):
        raise ConfigError(f"start time {text!r} is not a time: use ISO 8601, e.g. 2021-04-01")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# ---------------------------------------------------------------------------- the valid ticks


def history(config: ReplayConfig, *, data_dir: Path | str | None = None) -> pd.DataFrame:
    """The rows to replay, sorted by time: the data set (or the assets merged), from `start`.

    Raises `UnknownAssetError` for an unknown data set or asset and
    `DataError` when nothing is left after `start`.
    """
    if config.dataset is not None:
        frame = data.load(config.dataset, data_dir=data_dir)
    else:
        frame = data.load_prices(list(config.assets), config.frequency, data_dir=data_dir)
    if config.start is not None:
        frame = frame[frame["time"] >= parse_start(config.start)].reset_index(drop=True)
        if frame.empty:
            raise DataError(
                f"there is no price at or after {config.start}: choose an earlier start time"
            )
    return frame


def backfill(
    config: ReplayConfig,
    *,
    sent: dict[str, pd.Timestamp] | None = None,
    data_dir: Path | str | None = None,
) -> pd.DataFrame:
    """The history the default replay sends before its own rows, sorted by time.

    Each asset of the catalogue with its daily data set (the preferred source, as
    `lab_helpers.data.load_prices` picks it), or its monthly one if it has no daily
    file. Rows at the times the replay itself covers for that asset are left out (the
    replayed ticks must not meet a backfilled price at the same instant), and so are the rows
    of an asset up to the time in `sent` (what an earlier run already published).
    """
    assets = data.catalogue.load(data_dir)
    daily = [a for a in assets if any(d.frequency == "daily" for d in assets[a].datasets)]
    monthly = [
        a
        for a in assets
        if a not in daily and any(d.frequency == "monthly" for d in assets[a].datasets)
    ]
    frames = [data.load_prices(names, freq, data_dir=data_dir)
              for names, freq in ((daily, "daily"), (monthly, "monthly")) if names]  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=["time", "asset", "price"])
    frame = pd.concat(frames, ignore_index=True)
    replayed = history(config, data_dir=data_dir).groupby("asset")["time"].agg(["min", "max"])
    first = frame["asset"].map(replayed["min"]).astype("datetime64[ns, UTC]")
    last = frame["asset"].map(replayed["max"]).astype("datetime64[ns, UTC]")
    keep = ~((frame["time"] >= first) & (frame["time"] <= last)).to_numpy()
    done = frame["asset"].map(sent or {}).astype("datetime64[ns, UTC]")
    keep &= ~(frame["time"] <= done).to_numpy()
    frame = frame[keep]
    return frame.sort_values(["time", "asset"], kind="stable", ignore_index=True)


def valid_ticks(frame: pd.DataFrame, source: str = SOURCE) -> Iterator[dict]:
    """Each row of a tidy price table as a tick dict, without `seq` (the injector adds it).

    The optional fields (`OPTIONAL_FIELDS`) are included when the row has a value;
    `source` is the tick's `source` field.
    """
    extras = [c for c in OPTIONAL_FIELDS if c in frame.columns]
    # Formatting all times at once is much faster than one strftime per row.
    times = frame["time"].dt.strftime(TIME_FORMAT).tolist()
    columns = [frame[c].tolist() for c in ("asset", "price", *extras)]
    for time, (asset, price, *values) in zip(times, zip(*columns)):
        tick = {"asset": asset, "price": price, "time": time, "source": source}
        for name, value in zip(extras, values):
            if not math.isnan(value):  # merged data sets: gold has no volume column
                tick[name] = value
        yield tick


# ---------------------------------------------------------------------------- bad records


def _corrupt(kind: str, tick: dict, rng: random.Random) -> dict:
    """A bad copy of `tick` of one of the kinds that replace a field."""
    if kind == "missing_price":
        return {k: v for k, v in tick.items() if k != "price"}
    if kind == "nan_price":
        return {**tick, "price": math.nan}
    if kind == "negative_price":
        return {**tick, "price": -abs(tick["price"]) or -1.0}
    if kind == "wrong_type":
        wrong = rng.choice(WRONG_PRICES)
        return {**tick, "price": [tick["price"]] if wrong == "list" else wrong}
    if kind == "unknown_asset":
        return {**tick, "asset": rng.choice(UNKNOWN_ASSETS)}
    if kind == "broken_timestamp":
        day = tick["time"][:10]
        broken = ("not a time", f"{day}T25:61:00Z", "2021-02-30T10:00:00Z", "")
        return {**tick, "time": rng.choice(broken)}
    raise ValueError(f"{kind!r} is not a kind that corrupts a field")


def inject_bad(
    ticks: Iterable[dict],
    *,
    share: float = 0.0,
    kinds: tuple[str, ...] = BAD_KINDS,
    seed: int = 0,
    first_seq: int = 0,
) -> Iterator[tuple[str, dict]]:
    """Number the `ticks` (`seq` from `first_seq`) and mix in bad records: yields
    `(kind, tick)`.

    Before each record, with probability `share`, a bad record of a kind drawn from `kinds`
    is emitted instead of the next valid tick (see the module help). The draws come from
    `random.Random(seed)`: the same arguments always give the same records.
    """
    rng = random.Random(seed)
    rows = iter(ticks)
    held: deque[tuple[int, dict]] = deque()  # (valid ticks to wait for, tick), oldest first
    recent: deque[dict] = deque(maxlen=RECENT)
    seq = first_seq
    valid = 0  # valid ticks emitted so far
    pending = None  # the next valid tick, once read

    def numbered(kind: str, tick: dict) -> tuple[str, dict]:
        nonlocal seq, valid
        out = _numbered(tick, seq)
        seq += 1
        if kind in ("valid", "out_of_order"):
            recent.append(tick)
        if kind == "valid":
            valid += 1
        return kind, out

    while True:
        if held and held[0][0] <= valid:
            yield numbered("out_of_order", held.popleft()[1])
            continue
        if pending is None:
            pending = next(rows, None)
            if pending is None:  # end of the data: release what is still held back
                while held:
                    yield numbered("out_of_order", held.popleft()[1])
                return
        if share > 0 and rng.random() < share:
            kind = rng.choice(kinds)
            if kind == "out_of_order":
                # Released once later valid ticks are out, so it really is late; in order
                # of holding (max) so that two held ticks never swap.
                release = valid + rng.randint(*HOLD_BACK)
                held.append((max(release, held[-1][0] if held else 0), pending))
                pending = None
                continue
            if kind == "duplicate":
                if recent:  # nothing to re-send before the first valid tick
                    yield numbered(kind, rng.choice(recent))
                    continue
            else:
                yield numbered(kind, _corrupt(kind, pending, rng))
                continue
        yield numbered("valid", pending)
        pending = None


def records(
    config: ReplayConfig,
    *,
    limit: int | None = None,
    data_dir: Path | str | None = None,
    sent: dict[str, pd.Timestamp] | None = None,
) -> Iterator[tuple[str, dict]]:
    """The `(kind, tick)` pairs a source with `config` emits, at most `limit` of them.

    `kind` is `"valid"` for a good tick, else one of `BAD_KINDS`. With
    `config.backfill`, the history of `backfill` comes first (valid ticks whose
    `source` is `BACKFILL_SOURCE`; `sent` skips what was already published), then
    the replay, numbered on. The data is read now (errors are raised here); the ticks are
    built lazily while you iterate.
    """
    frame = history(config, data_dir=data_dir)
    if config.loop:
        ticks = itertools.chain.from_iterable(valid_ticks(frame) for _ in itertools.count())
    else:
        ticks = valid_ticks(frame)
    first = backfill(config, sent=sent, data_dir=data_dir) if config.backfill else None
    count = 0 if first is None else len(first)
    pairs = inject_bad(
        ticks, share=config.bad_share, kinds=config.bad_kinds, seed=config.seed, first_seq=count
    )
    if first is not None:
        numbered = (
            ("valid", _numbered(tick, seq))
            for seq, tick in enumerate(valid_ticks(first, BACKFILL_SOURCE))
        )
        pairs = itertools.chain(numbered, pairs)
    return itertools.islice(pairs, limit)


def _numbered(tick: dict, seq: int) -> dict:
    """The tick with `seq` right after the core fields, before the optional ones (easier
    to read)."""
    return {k: tick[k] for k in CORE_FIELDS if k in tick} | {"seq": seq} | tick


# ---------------------------------------------------------------------------- pacing


def tick_epoch(tick: dict) -> float | None:
    """The tick's `time` in epoch seconds, or `None` if it is missing or not a time."""
    text = tick.get("time")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def wall_delay(
    previous: float | None,
    current: float | None,
    *,
    speedup: float | None = None,
    rate: float | None = None,
) -> float:
    """Seconds to wait before emitting a tick, given the data times (epoch seconds) of the
    previous tick and of this one.

    With `rate` (ticks per second) every tick waits `1 / rate`, whatever its time. Else the
    data time gap is played `speedup` times faster (60: one minute of data per second). A tick
    without a usable time, or older than the previous one, does not wait.
    """
    if rate:
        return 1.0 / rate
    if not speedup or previous is None or current is None:
        return 0.0
    return max(0.0, current - previous) / speedup


class Pacer:
    """Remembers the data clock between ticks: `pacer.delay(tick)` is the wait before it.

    The clock only moves forward: a late (out-of-order) or broken tick does not wind it back,
    so the tick after it waits the right time.
    """

    def __init__(self, *, speedup: float | None = None, rate: float | None = None):
        self.speedup = speedup
        self.rate = rate
        self.clock: float | None = None

    def delay(self, tick: dict) -> float:
        current = tick_epoch(tick)
        wait = wall_delay(self.clock, current, speedup=self.speedup, rate=self.rate)
        if current is not None and (self.clock is None or current > self.clock):
            self.clock = current
        return wait


# ---------------------------------------------------------------------------- identity


def message_id(tick: dict) -> str:
    """A `Nats-Msg-Id` for a tick: a hash of its content without `sent`.

    The same tick published again (a restarted source with the same settings) has the same id,
    so JetStream stores it once; a `duplicate` record has its own `seq`, hence its own id,
    so it reaches the ingest workers as a test of their cleaning.
    """
    body = {k: v for k, v in tick.items() if k != "sent"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def iso_utc(moment: datetime | pd.Timestamp | str) -> str:
    """A time as ISO 8601 UTC text ending in `Z`, e.g. `2021-04-14T06:13:00Z`.

    Microseconds are kept when there are any (`2015-11-14T20:46:03.511254Z`); a time without
    a zone is taken as UTC.
    """
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    text = stamp.strftime(TIME_FORMAT)
    return f"{text[:-1]}.{stamp.microsecond:06d}Z" if stamp.microsecond else text
