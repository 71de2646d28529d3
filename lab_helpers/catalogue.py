"""The asset catalogue: every asset the lab knows, read from one file, `data/assets.yaml`.

One entry per asset says what the rest of the lab needs to know about it: its name and other
names, its kind and unit, the earliest plausible date of a price, the sanity ceiling, how
large a move is suspect, its symbol on each live price API, and its bundled CSV files (with
their frequency, kind of source, timestamp rule and publisher). The loaders
(`lab_helpers.data`), the cleaning rules (`lab_helpers.etl`), the live APIs, the
source, the ingest workers, the api and the dashboard all read it through `load`.

Adding an asset is adding its CSV file to the data folder and one entry to the file, by hand
or with `add_asset`:

    from lab_helpers import catalogue
    catalogue.add_asset(
        "doge", title="Dogecoin", kind="crypto", unit="USD/coin", earliest="2013-12-15",
        ceiling=100.0, jump=0.5,
        files=[{"file": "doge_usd_daily.csv", "frequency": "daily", "source": "spot",
                "time": "crypto_close", "description": "Dogecoin daily close"}],
    )

`load` notices a change of the file (it compares the file's size and modification
time at each call, a few microseconds), so running services and notebooks see a new asset
at their next batch or request. A file that does not parse keeps the last good catalogue in
use and says why (a warning), so one typo never stops the stream.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import numbers
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from .config import data_dir as default_data_dir
from .errors import DataError, UnknownAssetError

log = logging.getLogger(__name__)

FILE_NAME = "assets.yaml"
"""The catalogue's file name, in the data folder (`LAB_DATA_DIR`, default `data/`)."""

FREQUENCIES: tuple[str, ...] = ("1min", "daily", "monthly")
"""How often a bundled file has a row."""
FREQUENCIES_ORDER = ("daily", "1min", "monthly")  # how the data sets are listed
SOURCES: tuple[str, ...] = ("spot", "fix", "futures", "average")
"""`spot`: exchange trading prices; `fix`: the LBMA/LPPM London benchmark auctions;
`futures`: front-month COMEX/NYMEX futures closes; `average`: monthly average prices."""


@dataclass(frozen=True)
class TimeConvention:
    """How a source's row label becomes the UTC instant its price was set.

    The label (a date is midnight) plus `offset` is a wall-clock time in the zone `tz`;
    that wall-clock time converted to UTC is `time`. Using the zone's rules makes the
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
    # A US stock's daily close: the end of the regular session.
    "us_market_close": TimeConvention(
        "America/New_York", pd.Timedelta(hours=16), "US market close, day D 16:00 New York"
    ),
    # An average has no single instant; the start of its month is the usual stamp.
    "month_start": TimeConvention(
        "UTC", pd.Timedelta(0), "monthly average, first day of the month 00:00 UTC"
    ),
    # A bar is labelled with the minute it opens; its close price is set a minute later.
    "bar_close_1min": TimeConvention(
        "UTC", pd.Timedelta(minutes=1), "1-minute bar, close = label + 1 minute (UTC)"
    ),
    # The label is already the instant: a UTC time, or a date read as its midnight UTC.
    "utc_label": TimeConvention("UTC", pd.Timedelta(0), "the label itself, as UTC"),
}
"""The timestamp rule of every kind of source, by the name a catalogue entry uses."""

_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
_UNIT = re.compile(r"USD(/[a-z]{1,16})?")
_KIND = re.compile(r"[a-z]{1,32}")
_FILE = re.compile(r"[a-z0-9][a-z0-9_-]{0,80}\.csv")
_REQUIRED = ("title", "kind", "unit", "earliest", "ceiling", "jump", "files")
_OPTIONAL = ("aliases", "live")
_FILE_REQUIRED = ("file", "frequency", "source", "time", "description")
_FILE_OPTIONAL = ("publisher",)
# Pandas' nanosecond times start in 1677: the earliest date a price can carry.
_FIRST_DATE = pd.Timestamp("1678-01-01", tz="UTC")


class CatalogueError(DataError):
    """The catalogue file, or an entry for it, is not valid; the message says where and why."""


@dataclass(frozen=True)
class Dataset:
    """One bundled CSV file: which asset, how often, from which kind of source, and the rule
    that turns its row labels into instants (a name of `TIME_CONVENTIONS`)."""

    key: str
    asset: str
    frequency: str
    source: str
    convention: str
    description: str
    publisher: str = ""

    @property
    def file(self) -> str:
        return f"{self.key}.csv"


@dataclass(frozen=True)
class Asset:
    """One entry of the catalogue (see the comments at the top of `data/assets.yaml`).

    `earliest` is a UTC timestamp (midnight of the date in the file); `live` maps a live
    price API's name to the asset's symbol there; `datasets` are its bundled files.
    """

    name: str
    title: str
    kind: str
    unit: str
    earliest: pd.Timestamp
    ceiling: float
    jump: float
    aliases: tuple[str, ...] = ()
    live: dict[str, str] = field(default_factory=dict)
    datasets: tuple[Dataset, ...] = ()


class Catalogue:
    """The assets of one catalogue file, in the file's order; built by `load`.

    `catalogue["btc"]` is an `Asset`; `"btc" in catalogue`; `list(catalogue)`
    gives the names; `normalize` turns any known spelling into the name;
    `datasets` lists every bundled file by key, grouped by kind of source (spot, fix,
    futures, average), then frequency, then asset.
    """

    def __init__(self, assets: Iterable[Asset], path: Path | None = None):
        self.assets: dict[str, Asset] = {a.name: a for a in assets}
        self.path = path
        # Grouped by kind of source, then frequency, then asset (in the file's order).
        order = {name: i for i, name in enumerate(self.assets)}
        files = [d for a in self.assets.values() for d in a.datasets]
        files.sort(
            key=lambda d: (SOURCES.index(d.source), FREQUENCIES_ORDER.index(d.frequency),
                           order[d.asset])
        )  # fmt: skip
        self.datasets: dict[str, Dataset] = {d.key: d for d in files}
        self._lookup: dict[str, str] = {}
        for asset in self.assets.values():
            for alias in (asset.name, *asset.aliases):
                self._lookup[alias] = asset.name
        # The columns the cleaning rules map by asset, built once per catalogue.
        self.earliest = {a.name: a.earliest for a in self.assets.values()}
        self.ceiling = {a.name: a.ceiling for a in self.assets.values()}
        self.jump = {a.name: a.jump for a in self.assets.values()}
        self.unit = {a.name: a.unit for a in self.assets.values()}
        self.kind = {a.name: a.kind for a in self.assets.values()}

    def __getitem__(self, name: str) -> Asset:
        return self.assets[self.resolve(name)]

    def __contains__(self, name: object) -> bool:
        return name in self.assets

    def __iter__(self) -> Iterator[str]:
        return iter(self.assets)

    def __len__(self) -> int:
        return len(self.assets)

    def __repr__(self) -> str:
        return f"Catalogue({', '.join(self.assets)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Every asset's name, in the file's order."""
        return tuple(self.assets)

    def normalize(self, name: object) -> str | None:
        """The lab's name for an asset (`"XBT"` -> `"btc"`), or `None` if it is unknown.

        Case and surrounding spaces are ignored; aliases and ticker forms against the US
        dollar (`BTC-USD`, `btc/usd`, `XAUUSD`) are understood.
        """
        if not isinstance(name, str):
            return None
        key = name.strip().lower()
        found = self._lookup.get(key)
        if found is not None:
            return found
        for sep in ("-", "/", "_", " "):
            key = key.replace(sep, "")
        found = self._lookup.get(key)
        if found is None and key.endswith("usd") and len(key) > 3:  # a ticker in dollars
            found = self._lookup.get(key[:-3])
        return found

    def resolve(self, name: object) -> str:
        """Like `normalize`, but an unknown name raises `UnknownAssetError`."""
        asset = self.normalize(name)
        if asset is None:
            raise UnknownAssetError(
                f"unknown asset {name!r}: choose one of {', '.join(self.assets)}, or add it to "
                f"the asset catalogue ({FILE_NAME} in the data folder)"
            )
        return asset

    def live_symbols(self, api: str) -> dict[str, str]:
        """`{asset: symbol}` for one live price API (the assets that list it)."""
        return {a.name: a.live[api] for a in self.assets.values() if api in a.live}

    def frame(self) -> pd.DataFrame:
        """The catalogue as a table, one row per asset (files by name)."""
        rows = [
            {
                "asset": a.name,
                "title": a.title,
                "kind": a.kind,
                "unit": a.unit,
                "earliest": a.earliest.date(),
                "ceiling": a.ceiling,
                "jump": a.jump,
                "aliases": ", ".join(a.aliases),
                "live": ", ".join(f"{api}: {s}" for api, s in a.live.items()),
                "files": ", ".join(d.file for d in a.datasets),
            }
            for a in self.assets.values()
        ]
        return pd.DataFrame(rows).set_index("asset")


# ---------------------------------------------------------------------------- parsing


def _problem(where: str, text: str) -> CatalogueError:
    return CatalogueError(f"{where}: {text}")


def _date(value, where: str) -> pd.Timestamp:
    if isinstance(value, dt.datetime):
        value = value.date()
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if pd.isna(stamp) or not isinstance(value, (str, dt.date)):
        raise _problem(where, f"earliest {value!r} is not a date: write it as 2013-12-15")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp < _FIRST_DATE or stamp > pd.Timestamp.now(tz="UTC"):
        raise _problem(where, f"earliest {value} is out of range: use a date from 1678 to today")
    return stamp


def _number(value, what: str, where: str, *, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _problem(where, f"{what} {value!r} is not a number")
    if not 0 < value < upper or not math.isfinite(value):
        limit = f" and below {upper:g}" if upper != math.inf else ""
        raise _problem(where, f"{what} {value!r} is out of range: use a number above 0{limit}")
    return float(value)


def _text(value, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem(where, f"{what} {value!r} should be some text")
    return value.strip()


def _keys(entry: dict, required: tuple, optional: tuple, where: str) -> None:
    unknown = [k for k in entry if k not in required + optional]
    if unknown:
        raise _problem(
            where,
            f"unknown field {unknown[0]!r}: the fields are {', '.join(required + optional)}",
        )
    missing = [k for k in required if k not in entry]
    if missing:
        raise _problem(where, f"the field {missing[0]!r} is missing")


def _matching(value, pattern: re.Pattern, what: str, where: str, hint: str) -> str:
    """`value` if it is text matching `pattern`, else a CatalogueError with the hint."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _problem(where, f"{what} {value!r} is not valid: {hint}")
    return value


def _choice(value, choices, what: str, where: str) -> str:
    if value not in choices:
        raise _problem(where, f"{what} {value!r} is not valid: use one of {', '.join(choices)}")
    return value


def _dataset(name: str, entry, where: str) -> Dataset:
    if not isinstance(entry, dict):
        raise _problem(where, "each file is a mapping: file, frequency, source, time, ...")
    _keys(entry, _FILE_REQUIRED, _FILE_OPTIONAL, where)
    file_name = _matching(
        entry["file"], _FILE, "file", where,
        "name a CSV file of this folder in lower-case letters, digits, _ and -, ending with "
        ".csv (e.g. doge_usd_daily.csv)",
    )  # fmt: skip
    return Dataset(
        key=file_name[: -len(".csv")],
        asset=name,
        frequency=_choice(entry["frequency"], FREQUENCIES, "frequency", where),
        source=_choice(entry["source"], SOURCES, "source", where),
        convention=_choice(entry["time"], tuple(TIME_CONVENTIONS), "time", where),
        description=_text(entry["description"], "description", where),
        publisher=_text(entry["publisher"], "publisher", where) if "publisher" in entry else "",
    )


def _asset(name, entry, where: str) -> Asset:
    _matching(
        name, _NAME, "the asset name", where,
        "use lower-case letters and digits, starting with a letter (e.g. doge)",
    )  # fmt: skip
    where = f"{where}, asset {name!r}"
    if not isinstance(entry, dict):
        raise _problem(where, "an asset is a mapping of fields (title, kind, unit, ...)")
    _keys(entry, _REQUIRED, _OPTIONAL, where)
    unit = _matching(
        entry["unit"], _UNIT, "unit", where, "prices are in US dollars, e.g. USD/coin, USD/ozt"
    )
    kind = _matching(entry["kind"], _KIND, "kind", where, "use one lower-case word (crypto)")
    aliases = entry.get("aliases") or []
    if not isinstance(aliases, list) or not all(
        isinstance(a, str) and _NAME.fullmatch(a) for a in aliases
    ):
        raise _problem(
            where, f"aliases {aliases!r} should be a list of lower-case names, e.g. [dogecoin]"
        )
    live = entry.get("live") or {}
    if not isinstance(live, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in live.items()
    ):
        raise _problem(where, f"live {live!r} should map API names to symbols: {{coinbase: X}}")
    files = entry["files"]
    if not isinstance(files, list) or not files:
        raise _problem(where, "files should list at least one CSV file")
    return Asset(
        name=name,
        title=_text(entry["title"], "title", where),
        kind=kind,
        unit=unit,
        earliest=_date(entry["earliest"], where),
        ceiling=_number(entry["ceiling"], "ceiling", where),
        jump=_number(entry["jump"], "jump", where, upper=100),
        aliases=tuple(aliases),
        live={k: v.strip() for k, v in live.items()},
        datasets=tuple(_dataset(name, f, f"{where}, file {i + 1}") for i, f in enumerate(files)),
    )


def parse(text: str, where: str = FILE_NAME) -> Catalogue:
    """Build a `Catalogue` from the text of a catalogue file; `CatalogueError`
    (one sentence: which entry, which field, what to write) when it is not valid."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        # Where the construct began (an unclosed bracket), else where the parser stopped.
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
        line = f" near line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise CatalogueError(f"{where} is not valid YAML{line}: {problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise CatalogueError(f"{where} should map asset names to their fields (btc: ...)")
    assets = [_asset(name, entry, where) for name, entry in document.items()]
    seen: dict[str, str] = {}
    for asset in assets:
        for alias in (asset.name, *asset.aliases):
            if alias in seen:
                raise CatalogueError(
                    f"{where}: {alias!r} names both {seen[alias]!r} and {asset.name!r}: "
                    "every name and alias must be unique"
                )
            seen[alias] = asset.name
    files: dict[str, str] = {}
    for asset in assets:
        for d in asset.datasets:
            if d.key in files:
                raise CatalogueError(
                    f"{where}: {d.file} is listed under {files[d.key]!r} and {asset.name!r}: "
                    "a file belongs to one asset"
                )
            files[d.key] = asset.name
    return Catalogue(assets)


# ---------------------------------------------------------------------------- loading


def path(data_dir: Path | str | None = None) -> Path:
    """Where the catalogue file is: `<data folder>/assets.yaml` (`data_dir`, else
    `LAB_DATA_DIR`, else `data/`)."""
    if data_dir is None:
        return _default_path(os.environ.get("LAB_DATA_DIR"))
    return (Path(data_dir) / FILE_NAME).resolve()


@functools.lru_cache(maxsize=16)
def _default_path(setting: str | None) -> Path:
    # Once per value of LAB_DATA_DIR: finding the project folder costs more than a stat.
    return (default_data_dir({"LAB_DATA_DIR": setting} if setting else {}) / FILE_NAME).resolve()


# path -> (file signature, catalogue) of the last version that parsed
_cache: dict[Path, tuple[tuple, Catalogue]] = {}
_lock = threading.Lock()


def _signature(file: Path) -> tuple:
    stat = file.stat()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def load(data_dir: Path | str | None = None) -> Catalogue:
    """The catalogue of the data folder (`data_dir`, else `LAB_DATA_DIR`, else `data/`).

    Read again only when the file changed. If the changed file does not parse, the last good
    version stays in use and a warning says what is wrong; with no good version yet, the
    `CatalogueError` is raised.
    """
    file = path(data_dir)
    try:
        signature = _signature(file)
    except FileNotFoundError:
        raise CatalogueError(
            f"the asset catalogue {file} is missing: restore data/{FILE_NAME} or set "
            "LAB_DATA_DIR to the folder that holds it"
        ) from None
    cached = _cache.get(file)
    if cached is not None and cached[0] == signature:
        return cached[1]
    with _lock:
        try:
            catalogue = parse(file.read_text(encoding="utf-8"), str(file))
        except CatalogueError as err:
            if cached is None:
                raise
            message = f"{err} (the previous version of the catalogue stays in use)"
            log.warning(message)
            warnings.warn(message, stacklevel=2)
            _cache[file] = (signature, cached[1])  # say it once per version of the file
            return cached[1]
        catalogue.path = file
        _cache[file] = (signature, catalogue)
        return catalogue


# ---------------------------------------------------------------------------- adding an asset


def entry(
    name: str,
    *,
    title: str,
    kind: str,
    unit: str,
    earliest: str | dt.date,
    ceiling: float,
    files: list[dict],
    jump: float = 0.25,
    aliases: Iterable[str] = (),
    live: dict[str, str] | None = None,
) -> str:
    """The YAML text of one catalogue entry (what `add_asset` appends), checked.

    `files` is a list of `{"file", "frequency", "source", "time", "description"}`
    (and optionally `"publisher"`), as in `data/assets.yaml`.
    """
    if isinstance(earliest, dt.datetime):  # also a pandas Timestamp: the date is what counts
        earliest = earliest.date()
    fields: dict = {
        "title": title,
        "kind": kind,
        "unit": unit,
        "earliest": earliest,
        "ceiling": _plain(ceiling),
        "jump": _plain(jump),
    }
    if aliases:
        fields["aliases"] = list(aliases)
    if live:
        fields["live"] = dict(live)
    fields["files"] = [dict(f) for f in files]
    text = yaml.safe_dump({name: fields}, sort_keys=False, allow_unicode=True)
    parse(text, f"the entry for {name!r}")  # a clear sentence for a wrong field, now
    return text


def _plain(value):
    """A NumPy number as a plain Python one (YAML writes only the plain ones)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def add_asset(name: str, *, data_dir: Path | str | None = None, **fields) -> Asset:
    """Add one asset to the catalogue file of the data folder, and return it.

    The fields are those of `entry` (`title`, `kind`, `unit`, `earliest`,
    `ceiling`, `files`, and optionally `jump`, `aliases`, `live`). Each CSV file it
    lists must already be in the data folder. The entry is appended to the file (its comments
    and the other entries stay as they are); running services pick it up by themselves.
    Raises `CatalogueError` for an invalid field, a name already taken or a missing
    file, and changes nothing then.
    """
    file = path(data_dir)
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    block = entry(name, **fields)
    current = parse(text, str(file))
    if current.normalize(name) is not None:
        raise CatalogueError(
            f"{name!r} is already in {file}: choose another name, or remove_asset({name!r}) first"
        )
    new = parse(text.rstrip("\n") + "\n\n" + block, str(file))  # aliases and files unique too
    for dataset in new.assets[name].datasets:
        if not (file.parent / dataset.file).is_file():
            raise CatalogueError(
                f"{dataset.file} is not in {file.parent}: put the CSV file there first "
                "(header time,price)"
            )
    _write(file, text.rstrip("\n") + "\n\n" + block)
    return load(file.parent)[name]


def remove_asset(name: str, *, data_dir: Path | str | None = None) -> None:
    """Remove one asset's entry from the catalogue file (its CSV files stay where they are).

    Raises `UnknownAssetError` if the file has no entry `name`.
    """
    file = path(data_dir)
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{name}:")), None)
    if start is None:
        raise UnknownAssetError(f"{file} has no entry {name!r}")
    end = start + 1
    # The entry runs until the next line that starts at column 0 (the next asset or a comment).
    while end < len(lines) and (lines[end][:1] in (" ", "\t", "\n", "\r") or not lines[end]):
        end += 1
    kept = lines[:start] + lines[end:]
    text = "".join(kept).rstrip("\n") + "\n"
    parse(text, str(file))
    _write(file, text)


def _write(file: Path, text: str) -> None:
    """Replace the file in one step: a service reading it sees the old or the new version."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)
