"""Exercises of notebook 04 (time-series analysis) and their reference computations.

The references start from the bundled CSV files (`lab_helpers.data`), not from what the
notebook read from InfluxDB, so a checker also catches a wrong query or day label upstream.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import analysis, data
from ..exercises import Exercise, Wrong, WrongAnswer
from . import is_number, per_asset

DAYS_PER_YEAR = {"crypto": 365, "metal": 252}
"""Days a year on which the price can move: every day for crypto, trading days for metals."""
CHECKED_BY_DATA = "a reference computed from the bundled CSV files (not from InfluxDB)"


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


# Most wrong answers are the solution with one change (see `WrongAnswer.edit`).

EXERCISES = [
    Exercise(
        key="04.1",
        title="log returns",
        verify=verify_log_returns,
        hint="ln(P_t / P_t-1) = ln P_t - ln P_t-1, and pandas has a method for 'this row "
        "minus the row before'; the first day has no return",
        writes="the function `log_returns(prices)` (pandas, NumPy)",
        checked_by="the function run on a small series and a small table with known returns",
        minutes=4,
        wrong={
            "simple returns": WrongAnswer(
                edit={"np.log(prices).diff()": "prices.pct_change()"}, says="simple returns"
            ),
            "first day kept": WrongAnswer(edit={".diff().dropna()": ".diff()"}, says="drop it"),
            "sign flipped": WrongAnswer(
                edit={"np.log(prices).diff()": "np.log(prices.shift(1) / prices)"}, says="sign"
            ),
        },
    ),
    Exercise(
        key="04.2",
        title="annualised volatility",
        verify=verify_annual_vol,
        hint="each asset's returns on its own calendar (drop only its own empty days), then "
        "σ_year = σ_day × √(the number of days a year on which its price moves)",
        writes="the annualised volatility of each asset, as a Series",
        checked_by=CHECKED_BY_DATA,
        minutes=7,
        wrong={
            "252 days for every asset": WrongAnswer(
                edit={"fromkeys(CRYPTO, 365)": "fromkeys(CRYPTO, 252)"}, says="trades every day"
            ),
            "365 days for every asset": WrongAnswer(
                edit={"fromkeys(METALS, 252)": "fromkeys(METALS, 365)"}, says="working days only"
            ),
            "the common trading days only": WrongAnswer(
                "annual_vol = log_returns(wide[CRYPTO + METALS].dropna()).std() * np.sqrt(\n"
                "    pd.Series({'btc': 365, 'eth': 365, 'gold': 252, 'silver': 252}))\n",
                says="own calendar",
            ),
            "not annualised": WrongAnswer(
                edit={" * math.sqrt(days_a_year[asset])": ""}, says="annualise"
            ),
        },
    ),
    Exercise(
        key="04.3",
        title="bitcoin and gold, correlated?",
        verify=verify_correlation,
        hint="the order matters: first the days on which both have a price, then the returns, "
        "then the correlation",
        writes="the correlation of bitcoin's and gold's daily log returns (way A)",
        checked_by=CHECKED_BY_DATA + ", with feedback for the ways B, C and D and for prices",
        minutes=6,
        wrong={
            "forward-filled metal": WrongAnswer(
                edit={"].dropna()": "].ffill().dropna()"}, says="filled"
            ),
            "returns first, then joined": WrongAnswer(
                "btc_gold_corr = pd.concat([log_returns(wide['btc'].dropna()),\n"
                "                           log_returns(wide['gold'].dropna())], axis=1)"
                ".dropna().corr().iloc[0, 1]\n",
                says="own calendar",
            ),
            "prices instead of returns": WrongAnswer(
                edit={"log_returns(wide[": "(wide["}, says="prices"
            ),
        },
    ),
    Exercise(
        key="04.4",
        optional=True,
        title="two forecasts",
        verify=verify_forecasts,
        hint="a forecast for day t may use the prices up to day t - 1 only; .shift(1) moves a "
        "series one day later",
        writes="the naive and the 7-day moving-average forecasts of bitcoin, made each day",
        checked_by=CHECKED_BY_DATA + ", on every day of the test period",
        minutes=8,
        wrong={
            "a moving average that sees the day it forecasts": WrongAnswer(
                edit={".mean().shift(1)": ".mean()"}, says="includes the price"
            ),
            "tomorrow's price": WrongAnswer(
                edit={"btc_all.shift(1)": "btc_all.shift(-1)"}, says="tomorrow"
            ),
        },
    ),
]
