"""The statements the notebooks make in their prose hold for the bundled data.

A notebook computes its numbers when it runs, but its text says what they mean ("no model
beats the naive forecast", "the weekday means are not significant"). These tests recompute
each such statement from the CSV files, independently of the notebook's code and of InfluxDB,
with the parameters of the notebook's own ``parameters`` cell, so that new data that changes
a conclusion makes a test fail instead of leaving the text wrong.
"""

from __future__ import annotations

import math
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from lab_helpers import analysis, data, etl, workbook


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
    """Step 5: forward-filling gives the lowest correlation, weekly returns a higher one than
    daily returns, and joining returns computed on different calendars understates bitcoin's
    volatility."""
    pair = since_start[["btc", "gold"]]
    a = log_returns(pair.dropna())
    b = log_returns(pair.ffill().dropna())
    c = pd.concat([log_returns(pair["btc"].dropna()), log_returns(pair["gold"].dropna())], axis=1)
    c = c.dropna()
    d = log_returns(pair.resample("W-FRI").last())
    corr = {name: r["btc"].corr(r["gold"]) for name, r in zip("abcd", (a, b, c, d))}
    assert corr["b"] == min(corr.values())
    assert corr["d"] > corr["a"]
    assert c["btc"].std() < a["btc"].std()


def test_04_bitcoin_is_about_four_times_as_volatile_as_gold(since_start):
    btc = log_returns(since_start["btc"].dropna()).std() * math.sqrt(365)
    gold = log_returns(since_start["gold"].dropna()).std() * math.sqrt(252)
    assert 3.5 < btc / gold < 5


def test_04_bitcoin_drawdowns_exceed_75_percent(since_start):
    prices = since_start["btc"].dropna()
    assert (prices / prices.cummax() - 1).min() < -0.75


def test_04_bitcoin_is_not_digital_gold(since_start):
    """Step 5: bitcoin-gold's rolling correlation stays inside the chance band most of the
    time; bitcoin-ether's and gold-silver's stay above it all the time."""
    r = log_returns(since_start.dropna())
    band = 1.96 / math.sqrt(P04["CORR_WINDOW"] - 3)

    def rolling(a, b):
        return r[a].rolling(P04["CORR_WINDOW"]).corr(r[b]).dropna()

    assert (rolling("btc", "gold").abs() < band).mean() > 0.5
    assert min(rolling("btc", "eth").min(), rolling("gold", "silver").min()) > band


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


def test_04_the_moving_average_misses_by_more_than_the_naive_forecast():
    """Step 7, written as an explicit walk forward, one day at a time."""
    prices = closes("btc_usd_daily").to_numpy()
    naive, average = [], []
    for t in range(len(prices) - P04["TEST_DAYS"], len(prices)):
        naive.append(abs(prices[t] - prices[t - 1]))
        average.append(abs(prices[t] - prices[t - 7 : t].mean()))
    assert np.mean(average) > np.mean(naive)


# ------------------------------------------------- the committed notebooks say what they show

RELATIONS = {
    "00": [
        "exactly the broken rows are quarantined",
        "no row is lost",
        "every clean row is stored",
    ],
    "01": ["a network call costs far more than a function call, even on loopback"],
    "02": [
        "every worker took a share of the stream",
        "together they received each tick exactly once",
    ],
    "03": [
        "every row ends where the rules say",
        "writing the gold fixes again changed no count",
        "the two workers shared the readings, each going to one of them",
        "the readings left unacknowledged came back after the ack wait",
        "both stores give the same hourly means",
        "InfluxDB keeps the readings in less than half the disk space of SQLite",
        "InfluxDB computes the hourly means faster than SQLite",
    ],
    "04": [
        "bitcoin's volatility is about four times gold's",
        "bitcoin lost more than three quarters of its value at its worst",
        "forward-filling gives the lowest correlation",
        "C understates bitcoin's volatility",
        "bitcoin–gold's rolling correlation stays inside the chance band most of the time",
        "bitcoin–ether and gold–silver stay above the chance band all the time",
        "the weekday means are not significant (p above 0.05), in the whole history nor in "
        "either half",
        "weekends are calmer than every working day",
        "the weekday effect on volatility is significant (p below 0.01)",
        "the moving average misses by more than the naive forecast",
    ],
    "05": [
        "push's median delay is below every poller's",
        "a poller's median delay grows with its interval",
        "the slowest poller's median delay is between a third and two thirds of its interval",
        "the fastest poller makes more requests than there are ticks",
        "the durable JetStream consumer got every tick published while it was away",
        "the poller lost the ticks that left the source's buffer, and was told so",
        "the plain subscriber got none of the ticks published while it was away",
    ],
    "06": ["a forgotten weekend costs more than twenty 3-hour sessions"],
}
"""What the prose of each converted notebook states about its own results, in the words of
the step check that verifies it on every run."""

CONVERTED = workbook.converted()
# A figure quoted in prose: a number with a unit of measurement, or an amount of money.
QUOTED_FIGURE = re.compile(r"(?<![\w.])(\d[\d,.]*\s?(?:%|ms|µs|MB|KB|GB)(?!\w)|\$\s?\d[\d,.]*)")


def _texts(nb) -> tuple[str, str]:
    """The notebook's markdown and the text of its outputs, white space folded."""
    markdown = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    outputs = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            outputs.append(out.get("text", ""))
            outputs += [str(v) for k, v in out.get("data", {}).items() if k != "image/png"]
    return " ".join(markdown.split()), " ".join(" ".join(outputs).split())


def test_the_relations_list_covers_the_converted_notebooks():
    assert sorted(RELATIONS) == [p.name[:2] for p in CONVERTED]


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_the_prose_states_only_relations_its_run_checked(path):
    """Each relation the text states is printed ✅ by the step check that tested it in the
    committed run (a fresh run's checks are in tests/test_workbook.py), and every figure the
    prose quotes (a number with a unit) is one that an output printed."""
    markdown, outputs = _texts(nbformat.read(path, as_version=4))
    for relation in RELATIONS[path.name[:2]]:
        assert relation.lower() in markdown.lower(), f"the text does not state: {relation}"
        assert f"✅ {relation}" in outputs, f"no ✅ check printed: {relation}"
    unprinted = [f for f in QUOTED_FIGURE.findall(markdown) if f not in outputs]
    assert not unprinted, f"figures in the text that no output printed: {unprinted}"


def _trace_end(trace) -> pd.Timestamp | None:
    if trace.x is None or not len(trace.x):
        return None
    try:
        return pd.to_datetime(pd.Series(list(trace.x)), format="ISO8601").max()
    except (ValueError, TypeError):
        return None  # not a time axis


def test_04_draws_no_series_past_its_last_observation():
    """Every trace named after a series (``btc (spot)``) or a pair (``btc–gold``) ends at or
    before that series' last observation in the data; a figure whose series end more than a
    week apart says so."""
    import plotly.graph_objects as go

    (path,) = workbook.notebooks(["04"])
    nb = nbformat.read(path, as_version=4)
    last = {
        analysis.series_label(asset): closes(analysis.daily_dataset(asset).key).index[-1]
        for asset in P04["CRYPTO"] + P04["METALS"]
    }
    names = {asset: analysis.series_label(asset) for asset in P04["CRYPTO"] + P04["METALS"]}
    checked = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if workbook.PLOTLY_MIME not in out.get("data", {}):
                continue
            fig = go.Figure(out.data[workbook.PLOTLY_MIME])
            ends = {}
            for trace in fig.data:
                end = _trace_end(trace)
                parts = str(trace.name).split("–")
                series = [names[p] for p in parts if p in names] or [trace.name]
                if end is None or not all(s in last for s in series):
                    continue
                assert end <= min(last[s] for s in series), f"{trace.name} drawn past its data"
                ends[trace.name] = end
                checked += 1
            if ends and max(ends.values()) - min(ends.values()) > pd.Timedelta(days=7):
                assert analysis.ENDS_NOTE in (fig.layout.title.text or ""), fig.layout.title.text
    assert checked >= 8, "the figures of notebook 04 name their series"


def test_00_draws_each_series_that_reaches_furthest_up_to_its_last_observation():
    """Notebook 00's weekly chart: one trace per asset, the daily series that reaches furthest
    (crypto spot, metal futures), named with its source; none drawn past its last observation
    in the data; and, as they end at different dates, the title says so."""
    import plotly.graph_objects as go

    (path,) = workbook.notebooks(["00"])
    nb = nbformat.read(path, as_version=4)
    assets = parameters("00")["ASSETS"]
    last = {  # plotly keeps the UTC times without their zone
        analysis.series_label(asset): data.load(analysis.daily_dataset(asset).key)["time"]
        .max()
        .tz_convert(None)
        for asset in assets
    }
    (figure,) = [
        go.Figure(out.data[workbook.PLOTLY_MIME])
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if workbook.PLOTLY_MIME in out.get("data", {})
    ]
    ends = {trace.name: _trace_end(trace) for trace in figure.data}
    assert sorted(ends) == sorted(last), "one trace per asset, named after its series"
    for name, end in ends.items():
        assert end <= last[name], f"{name} drawn past its data"
    assert max(last.values()) - min(last.values()) > pd.Timedelta(days=7)
    assert analysis.ENDS_NOTE in (figure.layout.title.text or ""), figure.layout.title.text
