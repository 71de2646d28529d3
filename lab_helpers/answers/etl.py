"""How the exercises of notebook 03 (ETL and streaming) are checked.

- 03.1, a cleaning rule of one's own, plugged into the rule list: the checker runs the real
  `etl.clean` with the learner's list on a generated batch of real one-minute bars, some
  damaged on purpose, and compares where each row ends (clean, or quarantined with which
  reason) with the outcome of a reference rule in its right place.
- 03.2, a new asset: the checker reads the practice catalogue, then loads and cleans the new
  asset's CSV file with it (the real `catalogue`, `data` and `etl`).
- 03.3, what happens to a batch stored but not acknowledged: a multiple choice.
- 03.4, the SQL of the hourly means: the real SQLite runs it on readings of its own, compared
  with means computed by pandas.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .. import catalogue, data, etl, practice, sensors, stores
from ..errors import DataError
from ..exercises import Wrong

REASON = "inconsistent bar"
"""The reason the learner's rule of 03.1 gives."""
BATCH_ROWS = 240  # rows of the generated batch of 03.1
SEED = 31


# -- 03.1 a rule of one's own ----------------------------------------------------------------
def reference_rule(batch: etl.Batch) -> None:
    """Quarantine a bar whose close is outside its low-high range, or whose low is above its
    high; a row without a high or a low is not judged."""
    frame = batch.frame
    if "high" not in frame or "low" not in frame:
        return
    price, high, low = frame["price"], frame["high"], frame["low"]
    batch.reject((price > high) | (price < low) | (low > high), REASON)


def with_rule(rule: Callable, after: Callable = etl.reject_impossible) -> tuple:
    """`etl.RULES` with `rule` just after the rule `after`."""
    at = etl.RULES.index(after) + 1
    return (*etl.RULES[:at], rule, *etl.RULES[at:])


# What each kind of generated row is, and what it is made of from a real bar.
KINDS = (
    "consistent bar", "close above its high", "close below its low", "low above its high",
    "no high or low", "close as text", "missing close", "unknown asset with a broken bar",
    "the same bar twice",
)  # fmt: skip


def bad_bars(seed: int = SEED, rows: int = BATCH_ROWS) -> pd.DataFrame:
    """A batch of real one-minute bitcoin bars (the bundled file), a third of them damaged
    in the ways of `KINDS`; the column `case` says how."""
    rng = np.random.default_rng(seed)
    bars = data.load("btc_usd_1min")
    first = int(rng.integers(0, len(bars) - rows))
    batch = bars.iloc[first : first + rows][["time", "asset", "price", "open", "high", "low"]]
    batch = batch.astype({"price": object, "asset": object}).reset_index(drop=True)
    batch["time"] = batch["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    damages = len(KINDS) - 2  # the first kind is intact, the last is added below
    kinds = rng.choice(len(KINDS) - 1, size=rows, p=[0.64] + [0.36 / damages] * damages)
    batch["case"] = [KINDS[k] for k in kinds]
    for i in batch.index:
        case, high, low = batch.at[i, "case"], batch.at[i, "high"], batch.at[i, "low"]
        if case == "close above its high":
            batch.at[i, "price"] = round(high * 1.002, 2)
        elif case == "close below its low":
            batch.at[i, "price"] = round(low * 0.998, 2)
        elif case == "low above its high":
            batch.at[i, "high"], batch.at[i, "low"] = low, high
        elif case == "no high or low":
            batch.at[i, "high"] = batch.at[i, "low"] = np.nan
        elif case == "close as text":
            batch.at[i, "price"] = f" {batch.at[i, 'price']} "
        elif case == "missing close":
            batch.at[i, "price"] = ""
        elif case == "unknown asset with a broken bar":
            batch.at[i, "asset"], batch.at[i, "price"] = "doge", round(high * 1.01, 2)
    again = batch[batch["case"] == "consistent bar"].sample(6, random_state=seed)
    again = again.assign(case="the same bar twice")
    return pd.concat([batch, again], ignore_index=True)


def outcomes(result: etl.CleanResult, rows: int) -> pd.Series:
    """Where each input row ended: `clean` or its quarantine reason (`both` for a row in
    the two tables, `lost` for a row in none), by input position."""
    where = pd.Series("lost", index=range(rows), dtype=object)
    clean_rows = result.clean["row_id"].astype(int)
    quarantined = result.quarantine["row"].astype(int)
    where[clean_rows] = "clean"
    where[quarantined] = result.quarantine["reason"].to_numpy()
    where[sorted(set(clean_rows) & set(quarantined))] = "both"
    return where


def _run(rules, batch: pd.DataFrame) -> pd.Series:
    now = pd.Timestamp("2024-06-01", tz="UTC")  # the bars are from 2021
    result = etl.clean(batch.assign(row_id=batch.index), rules=rules, now=now)
    return outcomes(result, len(batch))


def _check_the_list(my_rules) -> None:
    """The learner's list: the lab's rules in order, and one more, in a possible place."""
    if not isinstance(my_rules, list | tuple):
        raise Wrong(f"`my_rules` should be a tuple of rules, not a {type(my_rules).__name__}")
    if not all(callable(rule) for rule in my_rules):
        raise Wrong("every item of `my_rules` is a rule: a function of the batch")
    kept = [rule for rule in my_rules if rule in etl.RULES]
    if kept != list(etl.RULES):
        raise Wrong("keep every rule of etl.RULES, in their order, and add yours among them")
    added = [rule for rule in my_rules if rule not in etl.RULES]
    if not added:
        raise Wrong("`my_rules` is etl.RULES as it was: add your rule to it")
    if len(added) > 1:
        raise Wrong("add one rule, yours, once")
    at = list(my_rules).index(added[0])
    if at <= list(my_rules).index(etl.parse_prices):
        raise Wrong(
            "your rule runs before parse_prices, while prices may still be text: put it after"
        )
    if at > list(my_rules).index(etl.drop_duplicates):
        raise Wrong(
            "your rule runs after drop_duplicates, which has already chosen the clean rows: "
            "put it before"
        )


def verify_rules(my_rules) -> None:
    _check_the_list(my_rules)
    daily = data.load("btc_usd_daily").head(5)  # closes only: no high, no low
    try:
        plain = etl.clean(daily, rules=my_rules)
    except (KeyError, AttributeError) as err:
        raise Wrong(
            f"on a batch without high and low columns (daily closes) your rule raised "
            f"{type(err).__name__}: {err}; leave such a batch as it is"
        ) from None
    if len(plain.clean) != len(daily):
        raise Wrong("on a batch without high and low columns (daily closes) keep every row")
    batch = bad_bars()
    want, got = _run(with_rule(reference_rule), batch), _run(my_rules, batch)
    if (got == "both").any() or (got == "lost").any():
        raise Wrong("some rows end up both clean and quarantined, or nowhere: use batch.reject")
    other = sorted(set(got) - set(want))
    if other:
        raise Wrong(f"quarantine with the reason {REASON!r} (yours: {other[0]!r})")
    for kind in KINDS:
        rows = batch["case"] == kind
        if got[rows].equals(want[rows]):
            continue
        first = got[rows][got[rows] != want[rows]].index[0]
        said, right = got[first], want[first]
        if right == "clean":
            raise Wrong(f"a row '{kind}' was quarantined as {said!r}: it should stay clean")
        if said == REASON:
            raise Wrong(
                f"a row quarantined by an earlier rule ({right!r}) now says {REASON!r}: "
                "batch.reject keeps the first reason, let it"
            )
        raise Wrong(f"a row '{kind}' passed: it should be quarantined as {right!r}")


# -- 03.2 a new asset ------------------------------------------------------------------------
def verify_new_asset(copper, PRACTICE) -> None:
    if practice.ASSET in catalogue.load():
        raise Wrong(
            "copper is in the lab's own catalogue (data/assets.yaml): take it out with "
            "catalogue.remove_asset('copper'), then add it with data_dir=PRACTICE"
        )
    try:
        assets = catalogue.load(PRACTICE)
    except DataError as err:
        raise Wrong(f"the practice catalogue does not read: {err}") from None
    if practice.ASSET not in assets:
        raise Wrong("the practice catalogue has no asset 'copper' yet")
    asset = assets[practice.ASSET]
    if not isinstance(copper, catalogue.Asset) or copper.name != practice.ASSET:
        raise Wrong("`copper` should be what catalogue.add_asset returns for copper")
    files = [d for d in asset.datasets if d.file == practice.FILE]
    if not files:
        raise Wrong(f"list the file {practice.FILE} in the entry's files")
    (dataset,) = files
    if asset.unit != "USD/lb":
        per = " (troy ounces are for precious metals)" if asset.unit == "USD/ozt" else ""
        raise Wrong(f"the file's prices are US dollars per pound, not {asset.unit}{per}")
    if dataset.frequency != "daily" or dataset.source != "futures":
        raise Wrong("the file has one futures settlement a day: frequency and source say so")
    if dataset.convention != "futures_settlement":
        raise Wrong(
            f"{dataset.convention!r} is not when a COMEX settlement is set (13:30 New York): "
            "choose the time rule that says so"
        )
    rows = data.load(dataset.key, data_dir=PRACTICE)
    result = etl.clean(rows, assets=assets)
    reasons = dict(result.counts)
    if "timestamp too early" in reasons:
        raise Wrong(
            f"{reasons['timestamp too early']} prices come before `earliest` "
            f"({asset.earliest.date()}) and are quarantined: choose a date before the first"
        )
    if "price implausible" in reasons:
        raise Wrong(f"the ceiling ({asset.ceiling:g}) is below some of the file's prices")
    highest = practice.copper_prices()["price"].max()
    if asset.ceiling > 1000 * highest:
        raise Wrong(
            f"a ceiling of {asset.ceiling:,g} USD per pound lets typos and wrong units through: "
            "the lab's ceilings are 100 times the highest price of the asset's files"
        )
    if int(result.clean["suspect"].sum()):
        raise Wrong("ordinary days are flagged suspect: a metal's `jump` is a larger move")
    if reasons != {"duplicate": 1}:
        raise Wrong(f"cleaning the file gives {result.summary()}; only the repeated row should go")


# -- 03.4 the hourly means in SQL --------------------------------------------------------------
CHECK_SENSORS, CHECK_POINTS = 6, 60_000  # the checker's own readings: 27.8 hours of 6 sensors
COLUMNS = "three columns in this order: the sensor, the hour's start in epoch seconds, the mean"


def _reference(readings: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """The hourly `how` of each sensor, as `stores.hourly` gives it."""
    hour = readings["time"].dt.floor("h").astype("datetime64[s, UTC]").astype("int64")
    grouped = readings.groupby([readings["sensor"], hour])["temp_c"].agg(how)
    return stores.hourly(list(grouped.reset_index().itertuples(index=False, name=None)))


def verify_hourly_sql(hourly_sql) -> None:
    if not isinstance(hourly_sql, str) or not hourly_sql.strip():
        raise Wrong("`hourly_sql` is the SQL query, as text")
    readings = sensors.readings(CHECK_POINTS, CHECK_SENSORS)
    store = stores.SQLiteStore(":memory:")
    try:
        store.load(readings)
        try:
            rows = store.query(hourly_sql)
        except DataError as err:
            raise Wrong(str(err)) from None
    finally:
        store.close()
    want = _reference(readings)
    if not rows or len(rows[0]) != 3:
        raise Wrong(f"return {COLUMNS}")
    if len(rows) == CHECK_SENSORS * 24:
        raise Wrong("these are hours of the day (0 to 23): group by each hour of the data")
    if len(rows) == len(want) // CHECK_SENSORS:
        raise Wrong("one row per sensor and hour: group by the sensor too")
    if len(rows) != len(want):
        raise Wrong(f"{len(rows)} rows: there should be one per sensor and hour of the data")
    try:
        got = stores.hourly(rows)
    except (ValueError, TypeError, OverflowError):
        raise Wrong(f"return {COLUMNS}") from None
    if not got[["sensor", "hour"]].equals(want[["sensor", "hour"]]):
        raise Wrong("the hours are not those of the data: give each one's start in epoch "
                    "seconds, as in the column `time`")  # fmt: skip
    if not np.allclose(got["mean"].astype(float), want["mean"], rtol=1e-9):
        for how in ("max", "min", "sum"):
            if np.allclose(got["mean"].astype(float), _reference(readings, how)["mean"]):
                raise Wrong(f"that is each hour's {how}: the mean is asked")
        raise Wrong("the third column is not each hour's mean temperature")
