"""The statements the notebooks make in their prose hold for the bundled data.

A notebook computes its numbers when it runs, but its text says what they mean ("no model
beats the naive forecast", "the weekday means are not significant"). These tests recompute
each such statement from the CSV files, independently of the notebook's code and of InfluxDB,
with the parameters of the notebook's own ``parameters`` cell, so that new data that changes
a conclusion makes a test fail instead of leaving the text wrong.
"""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pandas as pd
import pytest

from lab_helpers import data, etl, workbook


def parameters(prefix: str) -> dict:
    """The values set by the ``parameters`` cell of the notebook whose name starts with
    ``prefix``."""
    (path,) = workbook.notebooks([prefix])
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)
    return values


P04 = parameters("04")


def closes(key: str) -> pd.Series:
    """A data set's prices indexed by the publisher's day label."""
    return data.load(key).set_index("date")["price"]


def log_returns(prices: pd.Series | pd.DataFrame):
    return np.log(prices).diff().dropna()


@pytest.fixture(scope="module")
def since_start() -> pd.DataFrame:
    """Daily closes of the notebook's assets, by day label, from its START on (crypto spot,
    metal futures: the series notebook 04 queries)."""
    start = pd.Timestamp(P04["START"], tz="UTC")
    series = {}
    for asset in P04["CRYPTO"] + P04["METALS"]:
        (dataset,) = [
            d
            for d in data.DATASETS.values()
            if d.asset == asset and d.frequency == "daily" and d.source in ("spot", "futures")
        ]
        rows = data.load(dataset.key)
        series[asset] = rows[rows["time"] >= start].set_index("date")["price"]
    return pd.DataFrame(series)


# -------------------------------------------------------------------------- notebook 03


def test_03_the_daily_history_is_clean_and_flags_real_jumps():
    """Step 3: no row of the daily history is quarantined, and XRP's +73 % of 2023-07-13 is
    among the rows flagged suspect."""
    for dataset in data.DATASETS.values():
        if dataset.frequency == "daily":
            result = etl.clean(data.load(dataset.key))
            assert result.quarantine.empty, dataset.key
    xrp = etl.clean(data.load("xrp_usd_daily")).clean
    flagged = set(xrp.loc[xrp["suspect"], "date"])
    assert pd.Timestamp("2023-07-13") in flagged
    jump = closes("xrp_usd_daily")
    assert jump["2023-07-13"] / jump["2023-07-12"] - 1 == pytest.approx(0.73, abs=0.01)


# -------------------------------------------------------------------------- notebook 04


def test_04_alignment_choices_behave_as_described(since_start):
    """Step 2: forward-filling lowers the correlation and, annualised with 252, gold's
    volatility by about 20 %; weekly returns correlate more; joining returns computed on
    different calendars understates bitcoin's volatility."""
    pair = since_start[["btc", "gold"]]
    a = log_returns(pair.dropna())
    b = log_returns(pair.ffill().dropna())
    c = pd.concat([log_returns(pair["btc"].dropna()), log_returns(pair["gold"].dropna())], axis=1)
    c = c.dropna()
    d = log_returns(pair.resample("W-FRI").last())
    corr = {name: r["btc"].corr(r["gold"]) for name, r in zip("abcd", (a, b, c, d))}
    assert corr["b"] == min(corr.values())
    assert corr["d"] > corr["a"]
    calm = b["gold"].std() * math.sqrt(252) / (a["gold"].std() * math.sqrt(252))
    assert 0.75 < calm < 0.9, "forward-filled gold, annualised with 252, looks ~20 % calmer"
    assert abs(b["gold"].std() * math.sqrt(365) / (a["gold"].std() * math.sqrt(252)) - 1) < 0.1
    assert c["btc"].std() < a["btc"].std()


def test_04_bitcoin_is_about_four_times_as_volatile_as_gold(since_start):
    btc = log_returns(since_start["btc"].dropna()).std() * math.sqrt(365)
    gold = log_returns(since_start["gold"].dropna()).std() * math.sqrt(252)
    assert 3.5 < btc / gold < 5


def test_04_bitcoin_drawdowns_exceed_75_percent(since_start):
    prices = since_start["btc"].dropna()
    assert (prices / prices.cummax() - 1).min() < -0.75


def test_04_bitcoin_is_not_digital_gold(since_start):
    """Step 6: bitcoin-gold correlation near zero, far below bitcoin-ether and gold-silver; on
    bitcoin's 10 worst days gold fell on average."""
    r = log_returns(since_start.dropna())
    btc_gold = r["btc"].corr(r["gold"])
    assert abs(btc_gold) < 0.3
    assert r["btc"].corr(r["eth"]) > 0.6 and r["gold"].corr(r["silver"]) > 0.6
    rolling = r["btc"].rolling(P04["CORR_WINDOW"]).corr(r["gold"]).dropna()
    assert rolling.min() < 0 < rolling.max() and abs(rolling.median()) < 0.2
    worst = r["btc"].nsmallest(10).index
    assert r.loc[worst, "gold"].mean() < 0


def test_04_returns_have_fat_tails(since_start):
    normal_share = 2 * (1 - 0.5 * (1 + math.erf(4 / math.sqrt(2))))  # P(|Z| > 4)
    for asset in since_start:
        r = log_returns(since_start[asset].dropna())
        assert r.kurt() > 1, asset
    r = log_returns(since_start["btc"].dropna())
    beyond = int(((r - r.mean()).abs() > 4 * r.std()).sum())
    assert beyond > 5 * len(r) * normal_share


def _weekday_p_value(r: pd.Series, values: np.ndarray, shuffles: int = 2000) -> float:
    """Permutation test of the spread of the weekday means, written independently of the
    notebook (an explicit loop over shuffles, pandas group means)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"v": values, "day": r.index.day_of_week})
    observed = frame.groupby("day")["v"].mean().var(ddof=0)
    count = 0
    for _ in range(shuffles):
        shuffled = frame.assign(day=rng.permutation(frame["day"].to_numpy()))
        count += shuffled.groupby("day")["v"].mean().var(ddof=0) >= observed
    return count / shuffles


def test_04_weekday_means_are_noise_but_weekend_calm_is_real():
    r = log_returns(closes("btc_usd_daily"))
    halves = (r.iloc[: len(r) // 2], r.iloc[len(r) // 2 :])
    for part in (r, *halves):
        assert _weekday_p_value(part, part.to_numpy(), shuffles=500) > 0.05
    assert _weekday_p_value(r, np.abs(r.to_numpy()), shuffles=500) < 0.01
    spread = r.groupby(r.index.day_of_week).std()
    assert spread[[5, 6]].max() < spread[[0, 1, 2, 3, 4]].min()


def test_04_no_forecast_beats_the_naive_one():
    """Step 10: over the last TEST_DAYS days, walking forward, drift, a 7-day moving average
    and AR(1) all miss by more than "tomorrow = today", and AR(1) gets the direction right
    about half the time. Written as an explicit walk forward, one day at a time."""
    prices = closes("btc_usd_daily").to_numpy()
    logs = np.log(prices)
    ret = np.diff(logs)  # ret[i] is the return from day i to day i + 1
    errors = {"naive": [], "drift": [], "moving average": [], "AR(1)": []}
    right = []
    for t in range(len(prices) - P04["TEST_DAYS"], len(prices)):
        past = ret[: t - 1]  # returns known on day t - 1
        today = prices[t - 1]
        x, y = past[:-1], past[1:]
        slope = np.cov(x, y, ddof=0)[0, 1] / np.var(x)
        predicted = y.mean() - slope * x.mean() + slope * past[-1]
        guesses = {
            "naive": today,
            "drift": today * math.exp(past.mean()),
            "moving average": prices[t - 7 : t].mean(),
            "AR(1)": today * math.exp(predicted),
        }
        for name, guess in guesses.items():
            errors[name].append(abs(prices[t] - guess))
        right.append(np.sign(predicted) == np.sign(ret[t - 1]))
    mae = {name: np.mean(e) for name, e in errors.items()}
    assert all(mae[name] >= mae["naive"] for name in mae)
    assert mae["moving average"] > 1.3 * mae["naive"]
    assert 0.45 < np.mean(right) < 0.55
