"""The bundled price history: loaders that return tidy tables.

Every CSV in `data/` (see `data/README.md` for sources and licences) is one *data set*:
one asset at one frequency from one kind of source, listed with its asset in the asset
catalogue `data/assets.yaml` (`lab_helpers.catalogue`). `load` reads one data set,
`load_prices` stacks several assets, `to_wide` turns the long table into one
column per asset.

The long ("tidy") table has one row per asset and timestamp:

`time`    the UTC instant the price was set (`datetime64[ns, UTC]`, see below)
`date`    the source's calendar label, midnight, no time zone (daily and monthly sets)
`asset`   the asset's name in the catalogue (`btc`, `eth`, ... `gold`, `silver`)
`price`   in the asset's unit: USD per coin, USD per troy ounce for metals (`float64`)
and the file's extra columns (`open`, `high`, `low`, `volume`) as `float64`.

Why `time` and `date` differ: a source labels a row with a calendar day, but the price was
set at a precise moment. A crypto close for 2021-04-14 is the price at the *end* of that UTC
day, while the London gold fix for the same day was set at 15:00 London time. The rules are in
`TIME_CONVENTIONS`. Join sources on `date` to compare "the same day"; use `time`
when the order of events matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from . import catalogue
from .config import load_settings
from .errors import DataError, UnknownAssetError

# Vocabulary of the catalogue entries, here too because the loaders speak it.
FREQUENCIES = catalogue.FREQUENCIES
SOURCES = catalogue.SOURCES
TimeConvention = catalogue.TimeConvention
TIME_CONVENTIONS = catalogue.TIME_CONVENTIONS
Dataset = catalogue.Dataset

# When an asset has several data sets at one frequency, the first source in this order wins.
_SOURCE_PREFERENCE = ("spot", "fix", "average", "futures")

# Read from the catalogue at each access, so they always show the current file (a module
# attribute computed on demand; ``from lab_helpers.data import ASSETS`` takes it once).
_VIEWS = {
    "ASSETS": lambda cat: cat.names,
    "ASSET_KIND": lambda cat: dict(cat.kind),
    "DATASETS": lambda cat: dict(cat.datasets),
}


def __getattr__(name: str):
    """`ASSETS` (every asset's name), `ASSET_KIND` (`{asset: kind}`) and `DATASETS`
    (every bundled file by key): views of the asset catalogue (`data/assets.yaml`)."""
    if name in _VIEWS:
        return _VIEWS[name](catalogue.load())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _choices(values: Iterable[str]) -> str:
    return ", ".join(values)


def normalize_asset(name: object, *, data_dir: Path | str | None = None) -> str | None:
    """The lab's name for an asset (`"XBT"` -> `"btc"`), or `None` if it is unknown.

    Case and surrounding spaces are ignored; the aliases of the catalogue and ticker forms
    against the US dollar (`BTC-USD`, `btc/usd`, `XAUUSD`) are understood.
    """
    return catalogue.load(data_dir).normalize(name)


def resolve_asset(name: object, *, data_dir: Path | str | None = None) -> str:
    """Like `normalize_asset`, but an unknown name raises `UnknownAssetError`."""
    return catalogue.load(data_dir).resolve(name)


def catalog(*, data_dir: Path | str | None = None) -> pd.DataFrame:
    """All bundled data sets, one row each (metadata only, nothing is read from disk).

    Columns: `dataset` (the key for `load`), `asset`, `kind`, `frequency`,
    `unit`, `source`, `time_convention` (how `time` is derived), `description`,
    `publisher` and `file`. The assets themselves are in `catalogue.load().frame()`.
    """
    assets = catalogue.load(data_dir)
    rows = [
        {
            "dataset": d.key,
            "asset": d.asset,
            "kind": assets.kind[d.asset],
            "frequency": d.frequency,
            "unit": assets.unit[d.asset],
            "source": d.source,
            "time_convention": TIME_CONVENTIONS[d.convention].meaning,
            "description": d.description,
            "publisher": d.publisher,
            "file": d.file,
        }
        for d in assets.datasets.values()
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
    """Apply a `TimeConvention` to naive labels (vectorised, DST aware)."""
    wall = labels + convention.offset
    return wall.dt.tz_localize(convention.tz).dt.tz_convert("UTC").dt.as_unit("ns")


def load(dataset: str, *, data_dir: Path | str | None = None) -> pd.DataFrame:
    """Read one bundled data set as a tidy table (see the module help for the columns).

    `dataset` is a key of `catalog` such as `"btc_usd_daily"` or
    `"gold_usd_monthly"` (case does not matter). The files are read from `data_dir`,
    by default the lab's `data/` folder or `LAB_DATA_DIR`.

    >>> load("btc_usd_daily").tail(1)  # doctest: +SKIP
    """
    key = str(dataset).strip().lower().removesuffix(".csv")
    datasets = catalogue.load(data_dir).datasets
    if key not in datasets:
        raise UnknownAssetError(f"unknown data set {dataset!r}: choose one of {_choices(datasets)}")
    meta = datasets[key]
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


def _pick(
    assets: catalogue.Catalogue, asset: str, frequency: str, source: str | None
) -> Dataset | None:
    """The data set for one asset: `source` if it has one, else the preferred source."""
    options = [d for d in assets[asset].datasets if d.frequency == frequency]
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
    """Prices of several assets in one tidy table, sorted by `time` then `asset`.

    `assets`: one name or a list (`"BTC"`, `"xbt"`, `"gold"`, `"XAU"` ...); default:
    every asset with data at that `frequency`. `frequency`: `"daily"` (default),
    `"1min"` or `"monthly"`. `source`: which data set to use for an asset that has
    several. Daily metals come from the London fixes (1968-2020) unless `source="futures"`
    (2018-2025); assets without such a source (crypto) keep their usual one.

    >>> load_prices(["btc", "gold"]).head()  # doctest: +SKIP
    """
    if frequency not in FREQUENCIES:
        raise UnknownAssetError(
            f"unknown frequency {frequency!r}: choose one of {_choices(FREQUENCIES)}"
        )
    if source is not None and source not in SOURCES:
        raise UnknownAssetError(f"unknown source {source!r}: choose one of {_choices(SOURCES)}")
    known = catalogue.load(data_dir)
    names = _as_list(assets)
    if names is None:
        wanted = [a for a in known if _pick(known, a, frequency, source)]
    else:
        wanted = list(dict.fromkeys(known.resolve(name) for name in names))
    chosen = []
    for asset in wanted:
        meta = _pick(known, asset, frequency, source)
        if meta is None:
            have = sorted({d.frequency for d in known[asset].datasets})
            raise UnknownAssetError(
                f"there is no {frequency} data for {asset!r}: choose frequency "
                f"{' or '.join(have)}, or one of the assets "
                f"{_choices(a for a in known if _pick(known, a, frequency, None))}"
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
    """Pivot a tidy table to one column per asset, indexed by `on` (`"date"` or `"time"`).

    `on="date"` lines up rows that carry the same calendar label (a crypto close and a gold
    fix of the same day); `on="time"` keeps the exact instants, so different sources rarely
    share a row. Days an asset has no price (metals at weekends) are `NaN`.

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
    order = [a for a in catalogue.load() if a in wide.columns]
    wide = wide[order + [c for c in wide.columns if c not in order]]
    wide.columns.name = None
    return wide
