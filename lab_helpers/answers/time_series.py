"""How the exercises of notebook 04 (time-series analysis) are checked: their reference
computations.

The references start from the bundled CSV files (`lab_helpers.data`), not from what the
notebook read from InfluxDB, so a checker also catches a wrong query or day label upstream.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import analysis, data
from ..exercises import Wrong
from . import is_number, per_asset

DAYS_PER_YEAR = {"crypto": 365, "metal": 252}
"""Days a year on which the price can move: every day for crypto, trading days for metals."""


def reference_prices(asset: str, start: str | None = None) -> pd.Series:
    """The notebook's daily prices of `asset` by trading day, from the data file, for the
    instants at or after `start` (as the notebook's query selects them)."""
    rows = data.load(analysis.daily_dataset(asset).key)
    if start is not None:
        rows = rows[rows["time"] >= pd.Timestamp(start, tz="UTC")]
    return rows.set_index("date")["price"].rename(asset).rename_axis("day")


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _number(value, name: str) -> float:
    if not is_number(value):
        raise Wrong(f"`{name}` should be one number, not a {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise Wrong(f"`{name}` is {value}: some step produced no value")
    return float(value)


# -- 04.1 log returns --------------------------------------------------------------------------
def verify_log_returns(log_returns) -> None:
    days = pd.date_range("2024-01-01", periods=4, freq="D")
    prices = pd.Series([100.0, 110.0, 99.0, 99.0], index=days, name="x")
    want = pd.Series(np.log([1.1, 0.9, 1.0]), index=days[1:])
    got = log_returns(prices.copy())
    if got is None:
        raise Wrong("your function returns nothing: end it with `return ...`")
    if not isinstance(got, pd.Series):
        raise Wrong(f"for a Series of prices, return a Series (got a {type(got).__name__})")
    if len(got) == len(prices):
        raise Wrong("the first day has no previous price, hence no return: drop it")
    if len(got) != len(want):
        raise Wrong(f"one return per day after the first: {len(want)} here, not {len(got)}")
    values = got.to_numpy(dtype=float)
    if np.allclose(values, prices.pct_change().dropna().to_numpy()):
        raise Wrong("these are simple returns (P_t / P_t-1 - 1): take the logarithm of the ratio")
    if np.allclose(values, -want.to_numpy()):
        raise Wrong("the sign is flipped: a rising price must give a positive return")
    if not np.allclose(values, want.to_numpy()):
        raise Wrong("the values are not ln(P_t / P_t-1)")
    if not got.index.equals(want.index):
        raise Wrong("each return belongs to the day it ends on: compare with the day before")
    table = pd.DataFrame({"a": prices, "b": prices.to_numpy()[::-1]}, index=days)
    got = log_returns(table.copy())
    want = np.log(table / table.shift(1)).iloc[1:]
    if not (
        isinstance(got, pd.DataFrame)
        and list(got.columns) == ["a", "b"]
        and got.shape == want.shape
        and np.allclose(got.to_numpy(dtype=float), want.to_numpy())
    ):
        raise Wrong("for a table of prices, return the log returns of every column")


# -- 04.2 volatility ---------------------------------------------------------------------------
def verify_annual_vol(annual_vol, START, CRYPTO, METALS) -> None:
    assets = [*CRYPTO, *METALS]
    got = per_asset(annual_vol, "annual_vol", assets, "CRYPTO + METALS")
    for asset in assets:
        value = _number(got[asset], f"annual_vol[{asset!r}]")
        returns = np.log(reference_prices(asset, START)).diff().dropna()
        kind = data.ASSET_KIND[asset]
        want = returns.std() * math.sqrt(DAYS_PER_YEAR[kind])
        if _close(value, want):
            continue
        if _close(value, returns.std()):
            raise Wrong(f"{asset}: that is the daily standard deviation: annualise it")
        if kind == "crypto" and _close(value, want * math.sqrt(252 / 365)):
            raise Wrong(f"{asset} trades every day of the year: count the days its price moves")
        if kind == "metal" and _close(value, want * math.sqrt(365 / 252)):
            raise Wrong(f"{asset} trades on working days only: count the days its price moves")
        if value > 5:
            raise Wrong(f"{asset}: give a fraction (0.25 for 25 %), not a percentage")
        raise Wrong(
            f"{asset}: not the annualised volatility of its daily log returns on its own "
            "calendar (drop only its own empty days)"
        )


# -- 04.3 correlation --------------------------------------------------------------------------
def verify_correlation(btc_gold_corr, START) -> None:
    value = _number(btc_gold_corr, "btc_gold_corr")
    pair = pd.concat([reference_prices(a, START) for a in ("btc", "gold")], axis=1)
    ways = {name[0]: r["btc"].corr(r["gold"]) for name, (r, _) in analysis.alignment(pair).items()}
    if _close(value, ways["A"], rel=1e-9):
        return
    both = pair.dropna()
    if _close(value, ways["B"], rel=1e-9):
        raise Wrong(
            "you filled the metal's closed days: its zero returns dilute the correlation; "
            "keep only the days on which both have a price"
        )
    if _close(value, ways["C"], rel=1e-9):
        raise Wrong(
            "you took each asset's returns on its own calendar, then joined them: bitcoin's "
            "Monday return starts on Sunday, gold's on Friday, so they cover different intervals"
        )
    if _close(value, ways["D"], rel=1e-9):
        raise Wrong("that is the correlation of weekly returns: daily ones, please")
    if _close(value, both.pct_change().dropna().corr().loc["btc", "gold"], rel=1e-9):
        raise Wrong("these are simple returns: use the log returns")
    if _close(value, both.corr().loc["btc", "gold"], rel=1e-9):
        raise Wrong("that correlates the prices, which both trend upwards: correlate the returns")
    raise Wrong("not the correlation of the daily log returns on the days both have a price")


# -- 04.4 forecasts ----------------------------------------------------------------------------
def verify_forecasts(forecasts, TEST_DAYS) -> None:
    if not isinstance(forecasts, pd.DataFrame):
        raise Wrong(f"`forecasts` should be a DataFrame, not a {type(forecasts).__name__}")
    if sorted(forecasts.columns) != ["moving average", "naive"]:
        raise Wrong("`forecasts` needs the two columns 'naive' and 'moving average'")
    prices = reference_prices("btc")
    test = prices.index[-TEST_DAYS:]
    if not test.isin(forecasts.index).all():
        raise Wrong("one forecast per day of `btc_all` (the same index)")
    got = forecasts.loc[test].astype(float)
    candidates = {
        "naive": {
            "right": prices.shift(1),
            "that is the day's own price: a forecast may use only what was known the day "
            "before": prices,
            "that is tomorrow's price, which nobody knows yet": prices.shift(-1),
        },
        "moving average": {
            "right": prices.rolling(7).mean().shift(1),
            "your moving average includes the price it forecasts: use the 7 prices before "
            "the day": prices.rolling(7).mean(),
        },
    }
    for column, options in candidates.items():
        values = got[column].to_numpy()
        for feedback, series in options.items():
            if np.allclose(values, series.loc[test].to_numpy(), rtol=1e-9, equal_nan=True):
                if feedback == "right":
                    break
                raise Wrong(f"{column}: {feedback}")
        else:
            raise Wrong(f"{column}: not the forecast described, for every day of the test period")
