"""The bundled price history: a catalogue of data sets and loaders that return tidy tables.

Every CSV in ``data/`` (see ``data/README.md`` for sources and licences) is one *data set*:
one asset at one frequency from one kind of source. :func:`load` reads one data set,
:func:`load_prices` stacks several assets, :func:`to_wide` turns the long table into one
column per asset.

The long ("tidy") table has one row per asset and timestamp:

``time``    the UTC instant the price was set (``datetime64[ns, UTC]``, see below)
``date``    the source's calendar label, midnight, no time zone (daily and monthly sets)
``asset``   ``btc``, ``eth``, ``xrp``, ``ltc``, ``sol``, ``gold``, ``silver`` or ``platinum``
``price``   USD per coin, or USD per troy ounce for metals (``float64``)
and the file's extra columns (``open``, ``high``, ``low``, ``volume``) as ``float64``.

Why ``time`` and ``date`` differ: a source labels a row with a calendar day, but the price was
set at a precise moment. A crypto close for 2021-04-14 is the price at the *end* of that UTC
day, while the London gold fix for the same day was set at 15:00 London time. The rules are in
:data:`TIME_CONVENTIONS`. Join sources on ``date`` to compare "the same day"; use ``time``
when the order of events matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import load_settings
from .errors import DataError, UnknownAssetError

ASSETS: tuple[str, ...] = ("btc", "eth", "xrp", "ltc", "sol", "gold", "silver", "platinum")
"""Every asset the lab knows, crypto first."""

CRYPTO: tuple[str, ...] = ("btc", "eth", "xrp", "ltc", "sol")
METALS: tuple[str, ...] = ("gold", "silver", "platinum")

ASSET_KIND: dict[str, str] = {**dict.fromkeys(CRYPTO, "crypto"), **dict.fromkeys(METALS, "metal")}
"""``crypto`` or ``metal`` for each asset."""

ASSET_ALIASES: dict[str, str] = {
    "bitcoin": "btc",
    "xbt": "btc",
    "ether": "eth",
    "ethereum": "eth",
    "ripple": "xrp",
    "litecoin": "ltc",
    "solana": "sol",
    "xau": "gold",
    "au": "gold",
    "xag": "silver",
    "ag": "silver",
    "xpt": "platinum",
    "pt": "platinum",
}
"""Other names for the assets (lower-case). Ticker forms such as ``BTC-USD``, ``BTC/USD``,
``XAUUSD`` are understood too: see :func:`normalize_asset`."""

FREQUENCIES: tuple[str, ...] = ("1min", "daily", "monthly")
SOURCES: tuple[str, ...] = ("spot", "fix", "futures", "average")
"""``spot``: exchange trading prices; ``fix``: the LBMA/LPPM London benchmark auctions;
``futures``: front-month COMEX/NYMEX futures closes; ``average``: monthly average prices."""

UNITS = {"crypto": "USD/coin", "metal": "USD/ozt"}


@dataclass(frozen=True)
class TimeConvention:
    """How a source's row label becomes the UTC instant its price was set.

    The label (a date is midnight) plus ``offset`` is a wall-clock time in the zone ``tz``;
    that wall-clock time converted to UTC is ``time``. Using the zone's rules makes the
    conversion daylight-saving aware: 15:00 in London is 14:00 UTC in summer, 15:00 in winter.
    """

    tz: str
    offset: pd.Timedelta
    meaning: str


TIME_CONVENTIONS: dict[str, TimeConvention] = {
    # A crypto daily close is the last trade of UTC day D, i.e. the instant D+1 00:00 UTC.
    "crypto_close": TimeConvention(
        "UTC", pd.Timedelta(days=1), "close at the end of UTC day D (D+1 00:00 UTC)"
    ),
    "lbma_gold_pm": TimeConvention(
        "Europe/London", pd.Timedelta(hours=15), "LBMA gold PM fix, day D 15:00 London"
    ),
    "lbma_silver": TimeConvention(
        "Europe/London", pd.Timedelta(hours=12), "LBMA silver fix, day D 12:00 London"
    ),
    "lppm_platinum_pm": TimeConvention(
        "Europe/London", pd.Timedelta(hours=14), "LPPM platinum PM fix, day D 14:00 London"
    ),
    # One settlement time for all three metals (COMEX gold's); close enough for daily data.
    "futures_settlement": TimeConvention(
        "America/New_York",
        pd.Timedelta(hours=13, minutes=30),
        "futures settlement, day D 13:30 New York",
    ),
    # An average has no single instant; the start of its month is the usual stamp.
    "month_start": TimeConvention(
        "UTC", pd.Timedelta(0), "monthly average, first day of the month 00:00 UTC"
    ),
    # A bar is labelled with the minute it opens; its close price is set a minute later.
    "bar_close_1min": TimeConvention(
        "UTC", pd.Timedelta(minutes=1), "1-minute bar, close = label + 1 minute (UTC)"
    ),
}
"""The timestamp rule of every kind of source, by name (see :class:`TimeConvention`)."""


@dataclass(frozen=True)
class Dataset:
    """One bundled CSV: which asset, how often, in which unit, from which kind of source."""

    key: str
    asset: str
    frequency: str
    source: str
    convention: str
    description: str

    @property
    def kind(self) -> str:
        return ASSET_KIND[self.asset]

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    @property
    def file(self) -> str:
        return f"{self.key}.csv"


def _catalogue() -> dict[str, Dataset]:
    crypto_names = {
        "btc": "Bitcoin",
        "eth": "Ether",
        "xrp": "XRP",
        "ltc": "Litecoin",
        "sol": "Solana",
    }
    fixes = {
        "gold": ("lbma_gold_pm", "LBMA gold PM fix"),
        "silver": ("lbma_silver", "LBMA silver fix"),
        "platinum": ("lppm_platinum_pm", "LPPM platinum PM fix"),
    }
    futures = {"gold": "COMEX GC=F", "silver": "COMEX SI=F", "platinum": "NYMEX PL=F"}
    sets = [
        Dataset(
            f"{a}_usd_daily",
            a,
            "daily",
            "spot",
            "crypto_close",
            f"{name} daily close in USD with daily volume "
            + ("(CryptoCompare)" if a == "btc" else "(Yahoo Finance)"),
        )
        for a, name in crypto_names.items()
    ]
    sets.append(
        Dataset(
            "btc_usd_1min",
            "btc",
            "1min",
            "spot",
            "bar_close_1min",
            "Bitcoin 1-minute OHLCV bars on Gemini, 2021-03-15 .. 2021-04-20 (volume in BTC)",
        )
    )
    sets += [
        Dataset(f"{m}_usd_daily", m, "daily", "fix", conv, f"{text} in USD per troy ounce")
        for m, (conv, text) in fixes.items()
    ]
    sets += [
        Dataset(
            f"{m}_futures_usd_daily",
            m,
            "daily",
            "futures",
            "futures_settlement",
            f"{m.capitalize()} front-month futures close ({ticker}, Yahoo Finance), not spot",
        )
        for m, ticker in futures.items()
    ]
    sets.append(
        Dataset(
            "gold_usd_monthly",
            "gold",
            "monthly",
            "average",
            "month_start",
            "Gold monthly average since 1833 (annual averages repeated monthly until 1959)",
        )
    )
    return {d.key: d for d in sets}


DATASETS: dict[str, Dataset] = _catalogue()
"""Every bundled data set by key (the CSV file name without ``.csv``)."""

# When an asset has several data sets at one frequency, the first source in this order wins.
_SOURCE_PREFERENCE = ("spot", "fix", "average", "futures")


def _choices(values: Iterable[str]) -> str:
    return ", ".join(values)


def normalize_asset(name: object) -> str | None:
    """The lab's name for an asset (``"XBT"`` -> ``"btc"``), or ``None`` if it is unknown.

    Case and surrounding spaces are ignored; aliases (:data:`ASSET_ALIASES`) and ticker forms
    against the US dollar (``BTC-USD``, ``btc/usd``, ``XAUUSD``) are understood.
    """
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    for sep in ("-", "/", "_", " "):
        key = key.replace(sep, "")
    candidates = [key]
    if key.endswith("usd") and len(key) > 3:  # a ticker quoted in dollars
        candidates.append(key[:-3])
    for candidate in candidates:
        if candidate in ASSET_KIND:
            return candidate
        if candidate in ASSET_ALIASES:
            return ASSET_ALIASES[candidate]
    return None


def resolve_asset(name: object) -> str:
    """Like :func:`normalize_asset`, but an unknown name raises :class:`UnknownAssetError`."""
    asset = normalize_asset(name)
    if asset is None:
        raise UnknownAssetError(f"unknown asset {name!r}: choose one of {_choices(ASSETS)}")
    return asset


def catalog() -> pd.DataFrame:
    """All bundled data sets, one row each (metadata only, nothing is read from disk).

    Columns: ``dataset`` (the key for :func:`load`), ``asset``, ``kind``, ``frequency``,
    ``unit``, ``source``, ``time_convention`` (how ``time`` is derived), ``description``
    and ``file``.
    """
    rows = [
        {
            "dataset": d.key,
            "asset": d.asset,
            "kind": d.kind,
            "frequency": d.frequency,
            "unit": d.unit,
            "source": d.source,
            "time_convention": TIME_CONVENTIONS[d.convention].meaning,
            "description": d.description,
            "file": d.file,
        }
        for d in DATASETS.values()
    ]
    return pd.DataFrame(rows)


def _data_file(dataset: Dataset, data_dir: Path | str | None) -> Path:
    folder = Path(data_dir) if data_dir is not None else load_settings().data_dir
    if not folder.is_dir():
        raise DataError(
            f"the price files were expected in the folder {folder}, which does not exist: "
            "restore the lab's data/ folder or set LAB_DATA_DIR to the folder that holds them"
        )
    path = folder / dataset.file
    if not path.is_file():
        raise DataError(
            f"{dataset.file} was expected in {folder} but is missing: restore it from the "
            "lab's data/ folder or set LAB_DATA_DIR to a folder that holds it"
        )
    return path


def _first_bad_line(bad: pd.Series) -> int:
    """The file line of the first flagged row (line 1 is the header)."""
    return int(bad.to_numpy().argmax()) + 2


def _numeric_column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    bad = values.isna() & frame[column].notna()
    if column == "price":
        bad |= values.isna()  # a data set row without a price is useless
    if bad.any():
        raise DataError(
            f"{path.name} has {int(bad.sum())} rows whose {column!r} is not a number (first "
            f"on line {_first_bad_line(bad)}): fix the file or restore the original"
        )
    return values


def _to_utc(labels: pd.Series, convention: TimeConvention) -> pd.Series:
    """Apply a :class:`TimeConvention` to naive labels (vectorised, DST aware)."""
    wall = labels + convention.offset
    return wall.dt.tz_localize(convention.tz).dt.tz_convert("UTC").dt.as_unit("ns")


def load(dataset: str, *, data_dir: Path | str | None = None) -> pd.DataFrame:
    """Read one bundled data set as a tidy table (see the module help for the columns).

    ``dataset`` is a key of :func:`catalog` such as ``"btc_usd_daily"`` or
    ``"gold_usd_monthly"`` (case does not matter). The files are read from ``data_dir``,
    by default the lab's ``data/`` folder or ``LAB_DATA_DIR``.

    >>> load("btc_usd_daily").tail(1)  # doctest: +SKIP
    """
    key = str(dataset).strip().lower().removesuffix(".csv")
    if key not in DATASETS:
        raise UnknownAssetError(f"unknown data set {dataset!r}: choose one of {_choices(DATASETS)}")
    meta = DATASETS[key]
    path = _data_file(meta, data_dir)
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path.name} is not a readable CSV file ({err}): restore it") from None
    for column in ("time", "price"):
        if column not in raw.columns:
            raise DataError(
                f"{path.name} has no {column!r} column: its header must start with time,price"
            )

    # Parse as UTC then drop the zone: dates become midnight, 1-minute labels keep their time.
    labels = pd.to_datetime(raw["time"], format="ISO8601", utc=True, errors="coerce")
    if labels.isna().any():
        bad = labels.isna()
        raise DataError(
            f"{path.name} has {int(bad.sum())} rows with an unreadable time (first on line "
            f"{_first_bad_line(bad)}): use ISO dates such as 2021-04-14"
        )
    labels = labels.dt.tz_localize(None).dt.as_unit("ns")

    out = pd.DataFrame({"time": _to_utc(labels, TIME_CONVENTIONS[meta.convention])})
    if meta.frequency != "1min":
        out["date"] = labels.dt.normalize()
    out["asset"] = meta.asset
    out["price"] = _numeric_column(raw, "price", path)
    for column in raw.columns.drop(["time", "price"]):
        out[str(column)] = _numeric_column(raw, column, path)
    return out.sort_values("time", kind="stable", ignore_index=True)


def _as_list(assets: str | Iterable[str] | None) -> list[str] | None:
    if assets is None:
        return None
    if isinstance(assets, str):
        return [assets]
    return list(assets)


def _pick(asset: str, frequency: str, source: str | None) -> Dataset | None:
    """The data set for one asset: ``source`` if it has one, else the preferred source."""
    options = [d for d in DATASETS.values() if d.asset == asset and d.frequency == frequency]
    if not options:
        return None
    order = ((source,) if source else ()) + _SOURCE_PREFERENCE
    return min(options, key=lambda d: order.index(d.source))


def load_prices(
    assets: str | Iterable[str] | None = None,
    frequency: str = "daily",
    source: str | None = None,
    *,
    data_dir: Path | str | None = None,
) -> pd.DataFrame:
    """Prices of several assets in one tidy table, sorted by ``time`` then ``asset``.

    ``assets``: one name or a list (``"BTC"``, ``"xbt"``, ``"gold"``, ``"XAU"`` ...); default:
    every asset with data at that ``frequency``. ``frequency``: ``"daily"`` (default),
    ``"1min"`` or ``"monthly"``. ``source``: which data set to use for an asset that has
    several. Daily metals come from the London fixes (1968-2020) unless ``source="futures"``
    (2018-2025); assets without such a source (crypto) keep their usual one.

    >>> load_prices(["btc", "gold"]).head()  # doctest: +SKIP
    """
    if frequency not in FREQUENCIES:
        raise UnknownAssetError(
            f"unknown frequency {frequency!r}: choose one of {_choices(FREQUENCIES)}"
        )
    if source is not None and source not in SOURCES:
        raise UnknownAssetError(f"unknown source {source!r}: choose one of {_choices(SOURCES)}")
    names = _as_list(assets)
    if names is None:
        wanted = [a for a in ASSETS if _pick(a, frequency, source)]
    else:
        wanted = list(dict.fromkeys(resolve_asset(name) for name in names))
    chosen = []
    for asset in wanted:
        meta = _pick(asset, frequency, source)
        if meta is None:
            have = sorted({d.frequency for d in DATASETS.values() if d.asset == asset})
            raise UnknownAssetError(
                f"there is no {frequency} data for {asset!r}: choose frequency "
                f"{' or '.join(have)}, or one of the assets "
                f"{_choices(a for a in ASSETS if _pick(a, frequency, None))}"
            )
        chosen.append(meta)
    if source is not None and not any(d.source == source for d in chosen):
        raise UnknownAssetError(
            f"none of {_choices(wanted)} has {frequency} {source!r} prices: choose source "
            f"{' or '.join(sorted({d.source for d in chosen}))}"
        )
    frames = [load(d.key, data_dir=data_dir) for d in chosen]
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["time", "asset"], kind="stable", ignore_index=True)


def to_wide(df: pd.DataFrame, value: str = "price", on: str = "date") -> pd.DataFrame:
    """Pivot a tidy table to one column per asset, indexed by ``on`` (``"date"`` or ``"time"``).

    ``on="date"`` lines up rows that carry the same calendar label (a crypto close and a gold
    fix of the same day); ``on="time"`` keeps the exact instants, so different sources rarely
    share a row. Days an asset has no price (metals at weekends) are ``NaN``.

    >>> to_wide(load_prices(["btc", "gold"])).dropna().tail()  # doctest: +SKIP
    """
    if on not in ("date", "time"):
        raise DataError(f"cannot pivot on {on!r}: use on='date' or on='time'")
    for column in (on, "asset", value):
        if column not in df.columns:
            hint = " (1-minute data has no date: use on='time')" if column == "date" else ""
            raise DataError(f"the table has no {column!r} column{hint}: pass a table from load()")
    if df.duplicated([on, "asset"]).any():
        raise DataError(
            f"some assets have several rows for the same {on}: load one data set per asset "
            "or pivot on='time'"
        )
    wide = df.pivot(index=on, columns="asset", values=value).sort_index()
    order = [a for a in ASSETS if a in wide.columns]
    wide = wide[order + [c for c in wide.columns if c not in order]]
    wide.columns.name = None
    return wide
