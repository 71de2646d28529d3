"""The cleaning step (the "T" of ETL) for price rows: bundled CSVs and live ticks alike.

`clean` takes a raw table, for instance `pd.DataFrame(list_of_tick_dicts)` with strings
for numbers, empty strings, `None`, unknown assets and odd timestamps, and splits it in two:

* `clean`: tidy rows (`time` in UTC, `asset`, `price` in USD per coin or per troy
  ounce, extra numeric fields as `float64`, flags `filled` and `suspect`), sorted by
  asset then time;
* `quarantine`: every rejected row with its ORIGINAL values, its position in the input
  (`row`) and the `reason` it was rejected.

Every input row ends up in exactly one of the two, so
`len(result.clean) + len(result.quarantine) == len(raw)` always holds. Bad rows never raise;
only a table without a `time` or `price` column does.

The rules run in the order of `RULES`; a row is quarantined by the first rule it fails.
`docs/etl.md` explains each rule with an example. The reasons are listed in `REASONS`.
Jumps and gaps are judged within one batch: the cleaner keeps no memory between calls.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from .catalogue import Catalogue
from .catalogue import load as load_catalogue
from .errors import DataError

REASONS: tuple[str, ...] = (
    "missing price",
    "price not a number",
    "price not finite",
    "unknown asset",
    "bad timestamp",
    "timestamp too early",
    "timestamp out of range",
    "unknown unit",
    "price not positive",
    "price implausible",
    "duplicate",
    "conflicting duplicate",
)
"""Every reason a row can be quarantined for, in the order the rules check them."""

EMPTY_TOKENS = frozenset({"", "nan", "null", "none", "-", "n/a"})
"""Text that means "no value" (compared after stripping spaces, in any upper/lower case)."""
# Every upper/lower-case spelling, so that a fast exact look-up replaces lower-casing each value.
_EMPTY_SPELLINGS = frozenset(
    "".join(chars)
    for token in EMPTY_TOKENS
    for chars in itertools.product(*({c.lower(), c.upper()} for c in token))
)

FUTURE_TOLERANCE = pd.Timedelta(days=1)
"""Times more than this after `now` are "timestamp out of range": a clock may be a little
ahead, and a daily close may be stamped at the end of a day that has not ended yet in UTC,
but a price a day ahead of now is a broken clock or a wrong time zone. (Times before the
asset's `earliest` date in the catalogue are "timestamp too early".)"""

# Epoch numbers: the unit is inferred from the magnitude |x|. 1e11 s is the year 5138 and
# 1e11 ms is 1973-03-03, so every time from 1973 to 5138 is unambiguous in any unit; older
# epoch times must be given in seconds.
EPOCH_UNITS: tuple[tuple[float, str, int], ...] = (
    (1e11, "s", 10**9),  # |x| < 1e11 -> seconds
    (1e14, "ms", 10**6),  # |x| < 1e14 -> milliseconds
    (1e17, "us", 10**3),  # |x| < 1e17 -> microseconds
    (np.inf, "ns", 1),  # anything larger -> nanoseconds
)
"""`(upper bound of |x|, unit, nanoseconds per unit)` for epoch numbers, smallest first."""

TROY_OUNCE_GRAMS = 31.1034768
"""Grams in one troy ounce (the unit of precious-metal prices)."""

DEFAULT_FILL_GAP = pd.Timedelta("3D")
"""How old a price may be to fill a missing one (`clean(fill_missing=True)`)."""

QUARANTINED_ATTR = "etl_result"
"""`result.clean.attrs[QUARANTINED_ATTR]`: `{"clean": rows kept, "quarantined": {reason:
rows}}` of the `clean` call that made the table (`InfluxDB.write` uses it to say why
a clean table is empty)."""

PRICE_FIELDS = ("price", "open", "high", "low")
"""Columns in the price unit: `convert_units` scales them all."""
NUMERIC_FIELDS = ("open", "high", "low", "volume")
"""Optional fields that are always numbers; an unreadable value becomes `NaN`."""

# Units: "<currency>/<quantity>" such as "USD/ozt", "USc/g", "USD"; spaces and case are ignored.
_CURRENCY = {"usd": 1.0, "$": 1.0, "usc": 0.01, "cents": 0.01, "¢": 0.01}
# Quantities a price can be quoted per, that convert into each other: (dimension, size).
QUANTITIES: dict[str, tuple[str, float]] = {
    "coin": ("coin", 1.0),
    "share": ("share", 1.0),
    "ozt": ("mass", TROY_OUNCE_GRAMS),
    "oz": ("mass", TROY_OUNCE_GRAMS),  # precious metals are always quoted in troy ounces
    "toz": ("mass", TROY_OUNCE_GRAMS),
    "g": ("mass", 1.0),
    "gram": ("mass", 1.0),
    "kg": ("mass", 1000.0),
    "lb": ("mass", 453.59237),
}
"""The quantities a unit can convert between, with their dimension and size (mass in grams).
A quantity not listed (`bbl`, `mwh` ...) is accepted only as the asset's own."""
_OUTPUT_FLAGS = ("filled", "suspect")
# datetime64[ns] holds 1677..2262; times outside these bounds are out of range anyway.
_NS_LOW, _NS_HIGH = pd.Timestamp("1700-01-01"), pd.Timestamp("2262-01-01")
# A UTC offset at the end of ISO text: "Z", "+02:00", "-0500", "+01".
_OFFSET = r"(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"


def _parse_unit(unit: object) -> tuple[float, str] | None:
    """`"USc / g"` -> `(0.01, "g")`; `None` for text that is not a unit."""
    if not isinstance(unit, str):
        return None
    text = unit.strip().lower().replace(" per ", "/").replace(" ", "")
    currency, _, per = text.partition("/")
    if currency not in _CURRENCY:
        return None
    return _CURRENCY[currency], per


def unit_factor(unit: object, asset_unit: str) -> float | None:
    """The factor that turns a price in `unit` into the asset's own unit `asset_unit`
    (its `unit` in the catalogue, e.g. `"USD/ozt"`).

    Returns `None` for a unit that is unknown or that does not fit the asset (a coin priced
    per gram). `unit_factor("USD/g", "USD/ozt")` is 31.1034768; `unit_factor("USc",
    "USD/coin")` is 0.01; `USD` alone means the asset's own quantity.
    """
    given, own = _parse_unit(unit), _parse_unit(asset_unit)
    if given is None or own is None:
        return None
    (currency, per), (own_currency, own_per) = given, own
    if per in ("", own_per):
        return currency / own_currency
    size, own_size = QUANTITIES.get(per), QUANTITIES.get(own_per)
    if size is None or own_size is None or size[0] != own_size[0]:
        return None
    return currency / own_currency * own_size[1] / size[1]


@dataclass(eq=False)
class Batch:
    """A batch on its way through the rules: what each function in `RULES` works on.

    `frame` is a working copy of the input (column names stripped and lower-cased, positions
    0..n-1 as index) that the rules convert column by column. `reason[i]` is `None` while
    row `i` is still in, else why it was quarantined. `filled` and `suspect` are the flags
    of the clean rows; `order` (set by `drop_duplicates`) lists the clean rows'
    positions sorted by asset and time. `assets` is the asset catalogue the rules follow.
    The other attributes are the options of `clean`.
    """

    frame: pd.DataFrame
    fill_missing: bool = False
    max_fill_gap: pd.Timedelta = DEFAULT_FILL_GAP
    now: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    source_tz: str = "UTC"
    assets: Catalogue = field(default_factory=load_catalogue)
    reason: np.ndarray = field(init=False)
    filled: np.ndarray = field(init=False)
    suspect: np.ndarray = field(init=False)
    order: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.frame)
        self.reason = np.full(n, None, dtype=object)
        self.filled = np.zeros(n, dtype=bool)
        self.suspect = np.zeros(n, dtype=bool)

    @property
    def alive(self) -> np.ndarray:
        """Rows not quarantined so far."""
        return pd.isna(self.reason)

    def reject(self, mask, reason: str) -> None:
        """Quarantine the rows in `mask` with `reason` (rows already out keep theirs)."""
        hit = np.asarray(mask, dtype=bool) & self.alive
        self.reason[hit] = reason


# ---------------------------------------------------------------------------- value helpers


def _kind_of_type(t: type) -> str:
    if issubclass(t, (bool, np.bool_)):  # True is an int to Python, never a price or a time
        return "other"
    if issubclass(t, str):
        return "str"
    if issubclass(t, (numbers.Real, decimal.Decimal)):
        return "num"
    if issubclass(t, (dt.date, np.datetime64)):
        return "time"
    return "other"


def _kinds(values: pd.Series) -> np.ndarray:
    """What each value is: `"na"`, `"str"`, `"num"`, `"time"` or `"other"`."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        kind = "other"
    elif pd.api.types.is_numeric_dtype(dtype):
        kind = "num"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        kind = "time"
    elif pd.api.types.is_string_dtype(dtype) and dtype != np.dtype(object):
        kind = "str"
    else:
        kind = None
    if kind is not None:
        kinds = np.full(len(values), kind, dtype=object)
    else:  # an object column: classify by type, once per distinct type (fast)
        types = values.map(type)
        kinds = types.map({t: _kind_of_type(t) for t in types.unique()}).to_numpy(dtype=object)
    kinds[values.isna().to_numpy()] = "na"
    return kinds


def _to_float(values: pd.Series, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and numeric text as float64; returns `(floats, not_a_number)`."""
    out = np.full(len(values), np.nan)
    num = kinds == "num"
    if num.any():
        try:
            out[num] = values[num].astype("float64").to_numpy()
        except (OverflowError, ValueError, TypeError):  # e.g. an int too large for a float
            out[num] = [_float_or_inf(v) for v in values[num]]
    text = kinds == "str"
    if text.any():  # to_numeric ignores surrounding spaces; "inf" reads as infinity
        parsed = pd.to_numeric(values[text], errors="coerce")
        out[text] = parsed.to_numpy(dtype="float64", na_value=np.nan)
    not_a_number = (kinds != "na") & np.isnan(out)
    return out, not_a_number


def _float_or_inf(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return np.inf if value > 0 else -np.inf


def _beyond(times) -> np.ndarray:
    """-1 for a time before 1700, +1 after 2262 (beyond nanosecond times), else 0."""
    times = pd.Series(times)
    early = np.asarray(times.notna() & (times < _NS_LOW), dtype=bool)
    late = np.asarray(times.notna() & (times > _NS_HIGH), dtype=bool)
    return late.astype("int8") - early.astype("int8")


def _localize(naive: pd.Series, zone: str) -> tuple[pd.Series, np.ndarray]:
    """Naive wall-clock times in `zone` as UTC ns, plus where they are beyond 1700..2262
    (-1 before, +1 after, see `_beyond`).

    A wall-clock time that does not exist or is ambiguous in `zone` (DST changes) is NaT.
    """
    far = _beyond(naive)
    inside = naive.where(far == 0).dt.as_unit("ns")
    if zone == "UTC":
        return inside.dt.tz_localize("UTC"), far
    local = inside.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC"), far


def _epoch_to_utc(numbers_: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Epoch numbers as UTC times (unit from `EPOCH_UNITS`), plus where they are too
    far (-1 before 1700, +1 after 2262)."""
    floats = numbers_.to_numpy(dtype="float64", na_value=np.nan)
    magnitude = np.abs(floats)
    per_unit = np.select(
        [magnitude < bound for bound, _, _ in EPOCH_UNITS[:-1]],
        [ns for _, _, ns in EPOCH_UNITS[:-1]],
        default=EPOCH_UNITS[-1][2],
    ).astype("int64")
    approx_ns = floats * per_unit
    fits = np.isfinite(approx_ns) & (np.abs(approx_ns) < 9.2e18)  # int64 nanoseconds
    ns = np.zeros(len(floats), dtype="int64")
    if pd.api.types.is_integer_dtype(numbers_.dtype):  # exact integer arithmetic, no rounding
        ns[fits] = numbers_.to_numpy(dtype="int64", na_value=0)[fits] * per_unit[fits]
    else:
        ns[fits] = np.round(approx_ns[fits]).astype("int64")
    times = pd.Series(ns.view("datetime64[ns]"), index=numbers_.index).where(fits)
    too_far = np.isfinite(floats) & ~fits
    return times.dt.tz_localize("UTC"), np.where(too_far, np.sign(floats), 0).astype("int8")


def _iso_to_utc(text: pd.Series, source_tz: str) -> tuple[pd.Series, np.ndarray]:
    """ISO 8601 text as UTC times (no offset: `source_tz`), plus where they are too far."""
    try:  # the usual batch is all naive or all with offsets: one fast pass
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        naive = np.full(len(text), parsed.dt.tz is None)
    except ValueError:  # several offsets, or naive text mixed with offsets
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
        naive = ~(text.str.slice(10).str.contains(_OFFSET, regex=True).to_numpy(dtype=bool))
    if parsed.dt.tz is not None:  # continue with UTC wall-clock times
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    times, far = _localize(parsed, "UTC")
    if source_tz != "UTC" and naive.any():
        local, _ = _localize(parsed[naive], source_tz)
        times[naive] = local
    failed = parsed.isna().to_numpy()
    if failed.any():
        # pandas picks one resolution per call: with nanoseconds in the batch, the year 9999
        # fails to parse. Read the failures again without fractions to tell far from garbage.
        retry = pd.to_datetime(
            text[failed].str.replace(r"\.\d+", "", regex=True),
            format="ISO8601",
            errors="coerce",
            utc=True,
        ).dt.tz_localize(None)
        far[failed] = _beyond(retry.to_numpy())
    return times, far


def _objects_to_utc(values: pd.Series, source_tz: str) -> tuple[pd.Series, np.ndarray]:
    """`datetime`/`date`/`Timestamp`/`datetime64` objects, one by one (they are rare)."""
    converted, far = [], []
    for value in values:
        try:
            stamp = pd.Timestamp(value)
            if stamp.tzinfo is None:
                stamp = stamp.tz_localize(source_tz, ambiguous="NaT", nonexistent="NaT")
            stamp = pd.NaT if pd.isna(stamp) else stamp.tz_convert("UTC")
        except (ValueError, TypeError, OverflowError):
            stamp = pd.NaT
        side = 0 if pd.isna(stamp) else int(_beyond([stamp.tz_localize(None)])[0])
        converted.append(pd.NaT if side or pd.isna(stamp) else stamp.as_unit("ns"))
        far.append(side)
    times = pd.Series(converted, index=values.index, dtype="datetime64[ns, UTC]")
    return times, np.array(far, dtype="int8")


def _any_to_utc(values: pd.Series, source_tz: str) -> tuple[pd.Series, np.ndarray]:
    """Times of any form as UTC ns (NaT when unreadable), plus where they are too far
    (-1 before 1700, +1 after 2262)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):  # already typed: no parsing
        if values.dt.tz is None:
            return _localize(values, source_tz)
        return _localize(values.dt.tz_convert("UTC").dt.tz_localize(None), "UTC")
    kinds = _kinds(values)
    if pd.api.types.is_numeric_dtype(values.dtype) and (kinds != "other").all():
        return _epoch_to_utc(values)  # a numeric column: epoch numbers, ints kept exact

    times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    far = np.zeros(len(values), dtype="int8")
    text = kinds == "str"
    # Numbers and numeric text are epoch times. ISO text has "-" at index 4 ("2021-"): only
    # the rest needs the (slower) number parser.
    looks_iso = np.zeros(len(values), dtype=bool)
    looks_iso[text] = (values[text].astype(str).str.strip().str.slice(4, 5) == "-").to_numpy()
    floats = np.full(len(values), np.nan)
    floats[~looks_iso], _ = _to_float(values[~looks_iso], kinds[~looks_iso])
    epoch = ~np.isnan(floats)
    iso = text & ~epoch
    objects = kinds == "time"
    for mask, convert in (
        (epoch, lambda: _epoch_to_utc(pd.Series(floats[epoch], index=values.index[epoch]))),
        (iso, lambda: _iso_to_utc(values[iso].astype(str).str.strip(), source_tz)),
        (objects, lambda: _objects_to_utc(values[objects], source_tz)),
    ):
        if mask.any():
            times[mask], far[mask] = convert()
    return times, far


def _at(n: int, positions: np.ndarray) -> np.ndarray:
    """A boolean mask of length `n` that is True at `positions`."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


def _series_keys(frame: pd.DataFrame) -> np.ndarray:
    """Which price series each row belongs to: its asset, and its source when the batch has
    a `source` column (two exchanges may price bitcoin differently at the same instant:
    two series, as InfluxDB stores them, not duplicates)."""
    assets = frame["asset"].to_numpy(dtype=object).astype(str)
    if "source" not in frame.columns:
        return assets
    sources = frame["source"].to_numpy(dtype=object).astype(str)
    return np.char.add(np.char.add(assets, "\x1f"), sources)


def _series_of(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)


# ---------------------------------------------------------------------------- the rules


def normalize_empty(batch: Batch) -> None:
    """Rule 1: empty values become missing; a missing price is quarantined.

    `""`, spaces, `None`, `"nan"`, `"NaN"`, `"null"`, `"None"`, `"-"` and
    `"N/A"` (any case, surrounding spaces ignored) become missing in every column. A row
    whose price is missing is quarantined as "missing price", unless `fill_missing=True`:
    then `fill_gaps` fills it later, once times and assets are known.
    """
    frame = batch.frame
    for column in frame.columns:
        values = frame[column]
        text = _kinds(values) == "str"
        if not text.any():  # numbers and datetimes: NaN/NaT are already missing
            continue
        strings = (values if text.all() else values[text]).astype(str)
        empty = np.zeros(len(values), dtype=bool)
        empty[text] = strings.str.strip().isin(_EMPTY_SPELLINGS).to_numpy()
        if empty.any():
            frame[column] = values.mask(empty)
    if not batch.fill_missing:
        batch.reject(frame["price"].isna(), "missing price")


def parse_prices(batch: Batch) -> None:
    """Rule 2: prices become float64; "price not a number" or "price not finite" otherwise.

    Numbers and numeric text (`"1234.5"`, `" 7 "`, `"1e3"`) are accepted; other text,
    booleans and objects are "price not a number"; infinities (`"inf"`, `1e400`) are
    "price not finite". The optional fields `open`, `high`, `low`, `volume` become
    float64 too (an unreadable value becomes NaN); any other extra column becomes float64
    if all its values are numbers, else it is kept as it is.
    """
    frame = batch.frame
    price, not_a_number = _to_float(frame["price"], _kinds(frame["price"]))
    batch.reject(not_a_number, "price not a number")
    batch.reject(np.isinf(price), "price not finite")
    frame["price"] = price
    for column in [c for c in frame.columns if c not in ("time", "asset", "price", "unit")]:
        values, bad = _to_float(frame[column], _kinds(frame[column]))
        if column in NUMERIC_FIELDS or not bad.any():
            frame[column] = values


def normalize_assets(batch: Batch) -> None:
    """Rule 3: asset names become the lab's names; unknown or missing ones are quarantined.

    `" BTC "`, `"XBT"`, `"bitcoin"`, `"BTC-USD"` all become `"btc"`; `"XAU"`
    becomes `"gold"`: the names and aliases of the asset catalogue (`data/assets.yaml`,
    see `lab_helpers.catalogue.Catalogue.normalize`). Anything else, including a
    missing asset or a batch without an `asset` column, is "unknown asset".
    """
    frame = batch.frame
    values = _series_of(frame, "asset")
    text = _kinds(values) == "str"
    names = values.astype(object).where(text, None)
    lookup = {name: batch.assets.normalize(name) for name in names[text].unique()}
    assets = names.map(lookup)  # names are few: normalise each distinct one once
    batch.reject(assets.isna(), "unknown asset")
    frame["asset"] = assets.astype(object)


def parse_times(batch: Batch) -> None:
    """Rule 4: times become UTC; "bad timestamp", "timestamp too early" or "timestamp out of
    range" otherwise.

    Accepted: ISO 8601 text with an offset (`2021-04-14T10:00:00+02:00`, `...Z`) or
    without one (`2021-04-14 10:00`, `2021-04-14`), `datetime`/`Timestamp` objects,
    and epoch numbers or numeric text in seconds, ms, us or ns (the unit is inferred from the
    size, see `EPOCH_UNITS`). Times without an offset are read in `source_tz`
    (default UTC); a wall-clock time that does not exist or is ambiguous there (DST changes)
    is a "bad timestamp", like missing or unreadable values. A time before the asset's
    `earliest` date in the catalogue (bitcoin: 2010-03-17) is "timestamp too early"; more
    than `FUTURE_TOLERANCE` (a day) after `now` is "timestamp out of range".
    """
    frame = batch.frame
    times, far = _any_to_utc(frame["time"], batch.source_tz)
    times = times.astype("datetime64[ns, UTC]")
    earliest = frame["asset"].map(batch.assets.earliest).astype("datetime64[ns, UTC]")
    early = (far < 0) | (times < earliest).to_numpy()
    late = (far > 0) | (times > batch.now + FUTURE_TOLERANCE).to_numpy()
    batch.reject(times.isna().to_numpy() & (far == 0), "bad timestamp")
    batch.reject(early, "timestamp too early")
    batch.reject(late, "timestamp out of range")
    frame["time"] = times


def convert_units(batch: Batch) -> None:
    """Rule 5: prices in another unit become the asset's own unit; "unknown unit" otherwise.

    Only if the batch has a `unit` column. The asset's own unit is its `unit` in the
    catalogue (USD/coin for crypto, USD/ozt for metals). Metals in USD per gram (`USD/g`)
    or per kilogram (`USD/kg`) are converted to USD per troy ounce (1 ozt = 31.1034768 g);
    prices in US cents (`USc`, `USc/g` ...) to USD (see `unit_factor`). A missing
    unit, or `USD` alone, means the asset's own unit. Anything else, or a unit that does
    not fit the asset (a coin per gram), is "unknown unit". `open`/`high`/`low` are
    scaled like `price`; the `unit` column is then dropped.
    """
    frame = batch.frame
    if "unit" not in frame.columns:
        return
    unit_kinds = _kinds(frame["unit"])
    # "" stands for a missing unit (the asset's usual one), None for a unit that is not text.
    units = frame["unit"].astype(object).where(unit_kinds == "str", None)
    units = units.where(unit_kinds != "na", "")
    pairs = pd.DataFrame({"unit": units, "own": frame["asset"].map(batch.assets.unit)})
    table = pairs.drop_duplicates()  # few distinct (unit, own unit) pairs: look each up once
    table["factor"] = [
        1.0 if unit == "" else unit_factor(unit, own) if isinstance(own, str) else None
        for unit, own in table.itertuples(index=False)
    ]
    factor = pairs.merge(table, on=["unit", "own"], how="left")["factor"].astype(float)
    factor.index = frame.index
    batch.reject(factor.isna() & pairs["own"].notna(), "unknown unit")
    for column in PRICE_FIELDS:
        if column in frame.columns and pd.api.types.is_float_dtype(frame[column].dtype):
            frame[column] = frame[column] * factor.fillna(1.0)
    batch.frame = frame.drop(columns="unit")


def reject_impossible(batch: Batch) -> None:
    """Rule 6: "price not positive" (<= 0) and "price implausible" (above the ceiling).

    The ceiling is the asset's `ceiling` in the catalogue, 100 times its highest bundled
    price for the lab's assets: BTC above about 12.5 million USD is a typo or a wrong unit.
    """
    frame = batch.frame
    batch.reject(frame["price"] <= 0, "price not positive")
    ceiling = frame["asset"].map(batch.assets.ceiling).astype(float)
    batch.reject(frame["price"] > ceiling, "price implausible")


def fill_gaps(batch: Batch) -> None:
    """Rule 1, second half: with `fill_missing=True`, fill a missing price from the past.

    The price is copied from the latest valid price of the same asset (and source, when the
    batch has a `source` column) at or before that time (the first one seen if several
    share that time), if it is at most `max_fill_gap`
    (default 3 days) older; the row is flagged `filled=True`. Otherwise the row is
    quarantined as "missing price". Does nothing when `fill_missing=False`.
    """
    frame = batch.frame
    alive = batch.alive
    missing = alive & frame["price"].isna().to_numpy()
    if not batch.fill_missing or not missing.any():
        return
    series = frame[["time", "price"]].assign(series=_series_keys(frame))
    wanted = series.loc[missing, ["time", "series"]].reset_index(names="pos")
    known = series.loc[alive & ~missing]
    # Of prices that share series and time, rule 7 keeps the first seen: fill from that one.
    known = known.drop_duplicates(["series", "time"]).assign(source_time=lambda k: k["time"])
    matched = pd.merge_asof(
        wanted.sort_values("time"),
        known.sort_values("time"),
        on="time",
        by="series",
        direction="backward",
    )
    ok = (matched["time"] - matched["source_time"] <= batch.max_fill_gap).to_numpy()
    pos = matched["pos"].to_numpy()
    frame.loc[pos[ok], "price"] = matched.loc[ok, "price"].to_numpy()
    batch.filled[pos[ok]] = True
    batch.reject(_at(len(frame), pos[~ok]), "missing price")


def drop_duplicates(batch: Batch) -> None:
    """Rule 7: sort by (asset, time); "duplicate" and "conflicting duplicate" rows go.

    A row with the same asset, time and price as an earlier one is a "duplicate". A row with
    the same asset and time but another price is a "conflicting duplicate": the first one
    seen (lowest input position) is kept. A filled row never wins over a real price: at the
    same time as one, it is a "duplicate". When the batch has a `source` column, "the same
    asset" means the same asset from the same source (rows are sorted by asset, source, time).
    """
    frame = batch.frame
    alive = np.flatnonzero(batch.alive)
    series_codes, _ = pd.factorize(_series_keys(frame)[alive], sort=True)
    rows = pd.DataFrame(
        {
            "asset": series_codes,
            "time": frame["time"].dt.tz_localize(None).to_numpy().view("int64")[alive],
            "price": frame["price"].to_numpy(dtype="float64")[alive],
            "filled": batch.filled[alive],
            "pos": alive,
        }
    )
    rows = rows.iloc[np.lexsort([rows[c].to_numpy() for c in ("pos", "filled", "time", "asset")])]
    taken = rows.duplicated(["asset", "time"]).to_numpy()
    # A filled row is only a copy: at a time that already has a price it is a plain duplicate.
    same = rows.duplicated(["asset", "time", "price"]).to_numpy() | (taken & rows["filled"])
    conflicting = taken & ~same
    pos = rows["pos"].to_numpy()
    for mask, reason in ((same, "duplicate"), (conflicting, "conflicting duplicate")):
        batch.reject(_at(len(frame), pos[mask]), reason)
    batch.order = pos[~(same | conflicting)]


def flag_jumps(batch: Batch) -> None:
    """Rule 8: flag (do not quarantine) a price far from the previous clean price.

    `suspect=True` when the price moved more than the asset's `jump` in the catalogue
    (0.5, i.e. 50 %, for crypto; 0.25 for metals) since the previous clean row of the same
    asset (and source, when the batch has a `source` column) in this batch. After a bad
    tick, the move back is flagged too when it is also that large.
    """
    order = batch.order if batch.order is not None else np.flatnonzero(batch.alive)
    codes, names = pd.factorize(batch.frame["asset"].to_numpy()[order])
    series, _ = pd.factorize(_series_keys(batch.frame)[order])
    price = batch.frame["price"].to_numpy(dtype="float64")[order]
    limit = np.array([batch.assets.jump[name] for name in names], dtype=float)[codes]
    jump = np.zeros(len(order), dtype=bool)
    if len(order) > 1:  # rows are sorted by series then time: compare each with the one before
        same_asset = series[1:] == series[:-1]
        change = np.abs(price[1:] / price[:-1] - 1)
        jump[1:] = same_asset & (change > limit[1:])
    batch.suspect[order] = jump


RULES = (
    normalize_empty,
    parse_prices,
    normalize_assets,
    parse_times,
    convert_units,
    reject_impossible,
    fill_gaps,
    drop_duplicates,
    flag_jumps,
)
"""The cleaning rules in the order `clean` applies them (each takes a `Batch`)."""


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class CleanResult:
    """What `clean` returns: the `clean` rows, the `quarantine` and the `counts`.

    `counts` maps each quarantine reason to its number of rows. `summary()` says it all in
    one line.
    """

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int]

    def summary(self) -> str:
        """One line: rows in, rows clean (filled, suspect) and rows quarantined by reason."""
        total = len(self.clean) + len(self.quarantine)
        filled = int(self.clean["filled"].sum())
        suspect = int(self.clean["suspect"].sum())
        text = (
            f"{total} rows: {len(self.clean)} clean ({filled} filled, {suspect} suspect), "
            f"{len(self.quarantine)} quarantined"
        )
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.counts.items())
        return f"{text} ({reasons})" if reasons else text

    def __repr__(self) -> str:
        return f"CleanResult: {self.summary()}"


def _options(max_fill_gap, now, source_tz) -> tuple[pd.Timedelta, pd.Timestamp, str]:
    try:
        ZoneInfo(str(source_tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise DataError(
            f"unknown time zone {source_tz!r}: use an IANA name such as 'UTC' or 'Europe/London'"
        ) from None
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    return pd.Timedelta(max_fill_gap), now, str(source_tz)


def _working_copy(raw: pd.DataFrame) -> pd.DataFrame:
    names = [str(c).strip().lower() for c in raw.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(
            f"the batch has several columns named {twice[0]!r} (names ignore case and spaces): "
            "keep only one of them"
        )
    missing = [c for c in ("time", "price") if c not in names]
    if missing:
        raise DataError(
            f"the batch has no {' and no '.join(repr(c) for c in missing)} column: every batch "
            "needs the columns 'time' and 'price' (and normally 'asset')"
        )
    frame = raw.set_axis(names, axis=1).reset_index(drop=True)
    for column in frame.columns:  # categories would get in the way of the conversions
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    # The output flags are computed here; an input column of that name would clash.
    return frame.drop(columns=[c for c in _OUTPUT_FLAGS if c in frame.columns])


def clean(
    raw: pd.DataFrame,
    *,
    fill_missing: bool = False,
    max_fill_gap: pd.Timedelta | str = DEFAULT_FILL_GAP,
    now: pd.Timestamp | str | None = None,
    source_tz: str = "UTC",
    assets: Catalogue | None = None,
    rules: Sequence[Callable[[Batch], None]] = RULES,
) -> CleanResult:
    """Clean a raw batch of price rows: returns a `CleanResult` (clean + quarantine).

    `raw` needs the columns `time` and `price` and normally `asset`; `unit`,
    `open`, `high`, `low`, `volume` and other columns are optional. Values may be
    messy: numbers as text, empty strings, `None`, `"NaN"`, epoch numbers, ISO strings.

    * `fill_missing`: fill a missing price from the same asset's previous price if that is
      at most `max_fill_gap` old (rows flagged `filled`), instead of quarantining it.
    * `now`: the reference for "in the future" (default: the current time).
    * `source_tz`: the time zone of times given without an offset (default UTC).
    * `assets`: the asset catalogue to follow (default: `lab_helpers.catalogue.load()`,
      the file `data/assets.yaml`, or the one in `LAB_DATA_DIR`).
    * `rules`: the rules to apply, in order (default `RULES`). A rule of your own is a
      function of the `Batch` that calls `batch.reject(mask, "its reason")`; put it where
      the columns it reads are ready (after `parse_prices` for numbers) and before
      `drop_duplicates`, which chooses the clean rows. Its reasons are counted after those
      of `REASONS`.

    The rules are in `RULES` (see `docs/etl.md`). Example:

        result = clean(pd.DataFrame([{"time": "2021-04-14", "asset": "BTC", "price": "63000"}]))
        result.clean, result.quarantine, result.summary()
    """
    if not isinstance(raw, pd.DataFrame):
        raise DataError(
            f"clean() needs a pandas DataFrame, not {type(raw).__name__}: wrap the rows with "
            "pd.DataFrame(rows)"
        )
    max_fill_gap, now, source_tz = _options(max_fill_gap, now, source_tz)
    batch = Batch(
        _working_copy(raw),
        fill_missing=fill_missing,
        max_fill_gap=max_fill_gap,
        now=now,
        source_tz=source_tz,
        assets=assets if assets is not None else load_catalogue(),
    )
    for rule in rules:
        rule(batch)
    return _result(raw, batch)


def _result(raw: pd.DataFrame, batch: Batch) -> CleanResult:
    frame = batch.frame
    order = batch.order if batch.order is not None else np.flatnonzero(batch.alive)
    extras = [c for c in frame.columns if c not in ("time", "asset", "price")]
    good = frame.iloc[order][["time", "asset", "price", *extras]].reset_index(drop=True)
    good["time"] = good["time"].astype("datetime64[ns, UTC]")
    good["asset"] = good["asset"].astype(str)
    good["price"] = good["price"].astype("float64")
    good["filled"] = batch.filled[order]
    good["suspect"] = batch.suspect[order]

    out = np.flatnonzero(~batch.alive)
    quarantine = raw.iloc[out].reset_index(drop=True)
    # allow_duplicates: an input column already called "row" or "reason" is kept as it was.
    quarantine.insert(0, "row", raw.index[out], allow_duplicates=True)
    reasons = batch.reason[out].astype(str)
    quarantine.insert(quarantine.shape[1], "reason", reasons, allow_duplicates=True)
    found = pd.Series(reasons).value_counts()
    # The lab's reasons in the rules' order, then those of rules of your own as they come.
    ordered = [*REASONS, *(r for r in pd.unique(reasons) if r not in REASONS)]
    counts = {reason: int(found[reason]) for reason in ordered if reason in found.index}
    # Travels with the clean table, so that writing it can say why it is empty.
    good.attrs[QUARANTINED_ATTR] = {"clean": len(good), "quarantined": dict(counts)}
    return CleanResult(good, quarantine, counts)
