"""Helpers of the time-series notebook (04): the stored history, honest charts, calendars.

- `ensure_daily_history`: the daily history is in InfluxDB (loaded once if missing);
- `day_labels`: one label per trading day for UTC instants;
- `series_label`, `weekly`, `note_ends`: charts that draw each series
  only where it has data, say when series end at different dates, and name their source;
- `observations_per_year`: the number that annualises a series' volatility;
- `alignment`: the four ways of putting a 7-day and a 5-day calendar side by side.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import data, etl
from .influx import InfluxDB

ENDS_NOTE = "series end at different dates"
DAILY_SOURCES = ("spot", "futures")
"""The daily series the notebook compares: crypto spot closes and metal futures closes, the
two that reach furthest (the London fixes of the metals end in 2020)."""


def daily_dataset(asset: str) -> data.Dataset:
    """The daily data set of `asset` that the notebook uses (spot or futures)."""
    (found,) = [
        d
        for d in data.DATASETS.values()
        if d.asset == asset and d.frequency == "daily" and d.source in DAILY_SOURCES
    ]
    return found


def ensure_daily_history(measurement: str) -> dict[tuple[str, str], int]:
    """Make sure every bundled daily data set is stored in full in `measurement`: count
    the stored points per (asset, source) as the read-only `reader`, and load what is
    missing as `admin`, cleaned as notebook 03 does (a point is identified by its tags and
    time, so loading twice is harmless). Prints one line; returns the stored counts."""
    reader = InfluxDB.connect("reader")

    def stored() -> dict[tuple[str, str], int]:
        counts = reader.query(
            f"SELECT count(price) FROM {measurement} WHERE source != '' GROUP BY asset, source"
        )
        return {
            (a, s): int(n)
            for a, s, n in zip(
                counts.get("asset", []), counts.get("source", []), counts.get("count", [])
            )
        }

    daily = [d for d in data.DATASETS.values() if d.frequency == "daily"]
    have = stored()
    missing = [d for d in daily if have.get((d.asset, d.source), 0) < len(data.load(d.key))]
    if missing:
        admin = InfluxDB.connect("admin")
        for dataset in missing:
            rows = data.load(dataset.key).assign(source=dataset.source)
            cleaned = etl.clean(rows).clean
            fields = [c for c in ("price", "volume") if c in cleaned]
            admin.write(cleaned, measurement, tags=["asset", "source"], fields=fields, time="time")
        print(f"loaded {len(missing)} daily data sets into {measurement}")
    else:
        print(f"the daily history is already stored in {measurement}")
    return stored()


def day_labels(instants: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The trading day of each UTC instant: the UTC day at whose end the price was known
    (`ceil(time to a day) - 1 day`), without a time zone; the index is named `day`."""
    return (instants.ceil("D") - pd.Timedelta(days=1)).tz_localize(None).rename("day")


def series_label(asset: str, source: str | None = None) -> str:
    """A chart's name for a series: the asset and where its prices come from,
    e.g. `gold (futures)`. The source defaults to the notebook's daily one."""
    return f"{asset} ({source or daily_dataset(asset).source})"


def weekly(series: pd.Series, keep: str = "last") -> pd.Series:
    """One observation a calendar week, at its own date: the last one (`keep="last"`) or
    the lowest (`keep="min"`, for drawdowns). A lighter line for a chart, which never
    reaches past the series' last observation (`resample("W")` would stamp a week on the
    Sunday after it)."""
    series = series.dropna()
    weeks = series.groupby(series.index.to_period("W"))
    if keep == "last":
        return weeks.tail(1)
    if keep == "min":
        return series.loc[weeks.idxmin()]
    raise ValueError(f"keep={keep!r}: use 'last' or 'min'")


def last_days(long: pd.DataFrame, series: str = "series", day: str = "day") -> pd.Series:
    """The last day of each series of a long table (one row per series and day)."""
    return long.groupby(series)[day].max()


def note_ends(fig, last: pd.Series):
    """Say on `fig` where its series end when they end at different dates (more than a
    week apart): a second line of its title. `last` maps each series' name to its last day
    (see `last_days`). Returns `fig`."""
    last = last.dropna()
    if last.empty or last.max() - last.min() <= pd.Timedelta(days=7):
        return fig
    parts = [
        f"{', '.join(names)} end{'' if len(names) > 1 else 's'} {day:%Y-%m-%d}"
        for day, names in sorted(last.groupby(last).groups.items())
    ]
    note = f"{ENDS_NOTE}: " + "; ".join(parts)
    fig.update_layout(title_text=f"{fig.layout.title.text or ''}<br><sup>{note}</sup>")
    return fig


def formatted(table: pd.DataFrame, formats: dict[str, str] | str) -> pd.DataFrame:
    """The table for display, numbers as text in a format such as `"{:.1%}"`: one format
    for every column, or one per column (`{column: format}`)."""
    if isinstance(formats, str):
        return table.map(formats.format)
    return table.assign(**{column: table[column].map(f.format) for column, f in formats.items()})


def observations_per_year(returns: pd.Series) -> float:
    """How many returns a full calendar year of this series holds: the median over its
    years, the first and the last (often partial) left out."""
    counts = returns.groupby(returns.index.year).size()
    return float(counts.iloc[1:-1].median() if len(counts) > 2 else counts.max())


def log_return_frame(prices: pd.DataFrame) -> pd.DataFrame:
    """Daily log returns of each column of a table whose rows all have prices."""
    return np.log(prices).diff().dropna()


def alignment(pair: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, int]]:
    """The four ways of computing the returns of a 7-day asset and a 5-day asset side by
    side (`pair`: two columns of prices by day, NaN where one has no price), each with the
    number of return observations per year that annualises it:

    - `A. common trading days`: keep the days both have a price, then take returns (252);
    - `B. forward-filled metal`: carry the last price over the closed days (365);
    - `C. returns first, then joined`: returns on each calendar, then the common days (252);
    - `D. weekly (Friday closes)`: the same interval for both (52).
    """
    first, second = pair.columns
    each = [log_return_frame(pair[[c]].dropna())[c] for c in (first, second)]
    return {
        "A. common trading days": (log_return_frame(pair.dropna()), 252),
        "B. forward-filled metal": (log_return_frame(pair.ffill().dropna()), 365),
        "C. returns first, then joined": (pd.concat(each, axis=1).dropna(), 252),
        "D. weekly (Friday closes)": (log_return_frame(pair.resample("W-FRI").last()), 52),
    }


def alignment_table(pair: pd.DataFrame) -> pd.DataFrame:
    """For each way of `alignment`: how many returns, how many per year, each
    series' annualised volatility, and their correlation."""
    first, second = pair.columns
    rows = {}
    for name, (returns, per_year) in alignment(pair).items():
        rows[name] = {
            "returns": len(returns),
            "per year": per_year,
            f"{first} volatility": returns[first].std() * math.sqrt(per_year),
            f"{second} volatility": returns[second].std() * math.sqrt(per_year),
            "correlation": returns[first].corr(returns[second]),
        }
    return pd.DataFrame(rows).T
