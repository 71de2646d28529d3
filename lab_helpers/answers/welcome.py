"""How the exercises of notebook 00 (welcome and setup) are checked.

- 00.1, a query with bound parameters: the checker calls the learner's `highest(asset, year)`
  for years of its choosing and holds the answers against the bundled CSV files; then it
  passes an asset name that is a piece of InfluxQL, which a query with bound parameters
  reads as a name (no such asset) and a query pasted together runs as InfluxQL.
- 00.2, a pandas step on a query's result: each series' growth since `START`, held against
  the CSV files grouped into the same 7-day buckets as InfluxDB's `GROUP BY time(7d)`.
"""

from __future__ import annotations

import math

import pandas as pd

from .. import analysis, data
from ..errors import LabError
from ..exercises import Wrong
from . import is_number, per_asset

WEEK = pd.Timedelta(days=7)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")  # InfluxDB's buckets start at multiples of it


def reference_prices(asset: str) -> pd.DataFrame:
    """The rows of the daily data set of `asset` that notebook 00 loads (crypto spot, metal
    futures: those that reach furthest), from the bundled file."""
    return data.load(analysis.daily_dataset(asset).key)


# -- 00.1 the year's high ----------------------------------------------------------------------
def _years(rows: pd.DataFrame) -> list[int]:
    """Two years to ask about: the first full year of the series and the year of its lowest
    price (neither holds the highest price of all, so a query for the whole history fails)."""
    years = rows["time"].dt.year
    first_full = int(years.min()) + 1
    lowest = int(rows.loc[rows["price"].idxmin(), "time"].year)
    top = int(rows.loc[rows["price"].idxmax(), "time"].year)
    return sorted({y for y in (first_full, lowest) if y != top} or {first_full})


def _highest_in(rows: pd.DataFrame, year: int) -> float:
    start = pd.Timestamp(year=year, month=1, day=1, tz="UTC")
    inside = (rows["time"] >= start) & (rows["time"] < start + pd.DateOffset(years=1))
    return float(rows.loc[inside, "price"].max())


def verify_highest(highest, ASSETS) -> None:
    if not callable(highest):
        raise Wrong("`highest` should stay a function of (asset, year)")
    for asset in ASSETS:
        rows = reference_prices(asset)
        for year in _years(rows):
            got = highest(asset, year)
            if not is_number(got):
                raise Wrong(
                    f"highest({asset!r}, {year}) gave a {type(got).__name__}: return one number"
                )
            want = _highest_in(rows, year)
            if math.isclose(float(got), want, rel_tol=1e-9):
                continue
            if math.isclose(float(got), rows["price"].max(), rel_tol=1e-9):
                raise Wrong(
                    f"highest({asset!r}, {year}) is the highest price of the whole history: "
                    "keep only the times within the year"
                )
            raise Wrong(f"highest({asset!r}, {year}) is not the highest price of that year")
    # A user's text as the asset: with a bound parameter it is just a name nothing has.
    hostile = f"{ASSETS[0]}' OR asset != '"
    try:
        got = highest(hostile, _years(reference_prices(ASSETS[0]))[0])
    except LabError:
        raise
    except Exception:
        return  # no price for that name: what a bound parameter gives
    if got is not None and not (isinstance(got, float) and math.isnan(got)):
        raise Wrong(
            f"for the asset name {hostile!r} your query returned a price: the name was read as "
            "InfluxQL; pass it as a bound parameter"
        )


# -- 00.2 growth since START -------------------------------------------------------------------
def reference_growth(asset: str, start: str) -> float:
    """Last weekly close over the first, with InfluxDB's 7-day buckets (aligned on the epoch)
    and the rows at or after `start`."""
    rows = reference_prices(asset)
    rows = rows[rows["time"] >= pd.Timestamp(start, tz="UTC")]
    bucket = (rows["time"] - EPOCH) // WEEK
    first = rows[bucket == bucket.min()]["price"].iloc[-1]
    return float(rows["price"].iloc[-1] / first)


def verify_growth(growth, ASSETS, START) -> None:
    got = per_asset(growth, "growth", ASSETS, "ASSETS")
    for asset in ASSETS:
        value = got[asset]
        if not is_number(value):
            raise Wrong(f"growth[{asset!r}] should be a number, not a {type(value).__name__}")
        value = float(value)
        if math.isnan(value):
            raise Wrong(
                f"growth[{asset!r}] is NaN: the series end at different dates, so the last row "
                "of a wide table is empty for some; take each series' own last close"
            )
        want = reference_growth(asset, START)
        if math.isclose(value, want, rel_tol=1e-9):
            continue
        if math.isclose(value, 100 * (want - 1), rel_tol=1e-9):
            raise Wrong(f"growth[{asset!r}] is a percentage: give the factor (2.0 for doubled)")
        if math.isclose(value, 1 / want, rel_tol=1e-9):
            raise Wrong(f"growth[{asset!r}] is upside down: the last close over the first")
        raise Wrong(
            f"growth[{asset!r}] is not the last weekly close of `weekly` over the first one"
        )
