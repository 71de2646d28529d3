"""The checkers of notebooks 00 and 03, called directly (no kernel, no server): right answers
pass, and each kind of wrong answer gets the feedback that names its mistake.
tests/test_workbook.py runs the same checkers in the notebooks themselves."""

import math

import pandas as pd
import pytest

from lab_helpers import catalogue, etl, practice, workbook
from lab_helpers.answers import etl as a03
from lab_helpers.answers import welcome as a00
from lab_helpers.exercises import Wrong, exercises

ASSETS = ["btc", "eth", "gold", "silver"]


# -- 00 ----------------------------------------------------------------------------------------
def highest_from_files(asset: str, year: int) -> float:
    """What a right `highest` returns, computed from the files (a name nothing has: NaN)."""
    known = asset in ASSETS
    rows = a00.reference_prices(asset) if known else pd.DataFrame({"time": [], "price": []})
    return a00._highest_in(rows, year) if known else math.nan


def test_00_1_passes_a_right_function_and_catches_injection_and_whole_history():
    a00.verify_highest(highest_from_files, ASSETS)

    def pasted(asset, year):  # what a query pasted together answers for the hostile name
        return 1.0 if "'" in asset else highest_from_files(asset, year)

    with pytest.raises(Wrong, match="bound parameter"):
        a00.verify_highest(pasted, ASSETS)

    def whole(asset, year):
        return float(a00.reference_prices(asset)["price"].max())

    with pytest.raises(Wrong, match="whole history"):
        a00.verify_highest(whole, ASSETS)
    with pytest.raises(Wrong, match="one number"):
        a00.verify_highest(lambda asset, year: pd.DataFrame(), ASSETS)


def test_00_1_asks_about_years_that_do_not_hold_the_all_time_high():
    for asset in ASSETS:
        rows = a00.reference_prices(asset)
        top = rows.loc[rows["price"].idxmax(), "time"].year
        assert top not in a00._years(rows)


def test_00_2_growth_and_its_wrong_forms():
    right = pd.Series({a: a00.reference_growth(a, "2018-01-01") for a in ASSETS})
    a00.verify_growth(right, ASSETS, "2018-01-01")
    for wrong, says in (
        (right.where(right.index != "gold"), "NaN"),
        (100 * (right - 1), "percentage"),
        (1 / right, "upside down"),
        (right.drop("eth"), "one value per asset"),
        (right * 1.01, "not the last weekly close"),
    ):
        with pytest.raises(Wrong, match=says):
            a00.verify_growth(wrong, ASSETS, "2018-01-01")


# -- 03 ----------------------------------------------------------------------------------------
def test_03_1_the_generated_batch_has_every_kind_and_is_reproducible():
    batch = a03.bad_bars()
    assert set(batch["case"]) == set(a03.KINDS)
    assert batch.equals(a03.bad_bars())
    outcome = a03._run(a03.with_rule(a03.reference_rule), batch)
    assert (outcome[batch["case"] == "close above its high"] == a03.REASON).all()
    assert (outcome[batch["case"] == "no high or low"] == "clean").all()
    assert (outcome[batch["case"] == "unknown asset with a broken bar"] == "unknown asset").all()
    assert (outcome[batch["case"] == "the same bar twice"] == "duplicate").all()


def rules_from(code: str):
    namespace = {"etl": etl}
    exec(code, namespace)
    return namespace["my_rules"]


def test_03_1_the_right_rule_passes_and_each_wrong_one_is_named():
    solution = workbook.solution("03.1")
    a03.verify_rules(rules_from(solution))
    for wrong in exercises("03")[0].wrong.values():
        with pytest.raises(Wrong, match=wrong.says):
            a03.verify_rules(rules_from(wrong.cell(solution)))
    for bad, says in (
        (etl.RULES, "add your rule"),
        (etl.RULES[1:] + (a03.reference_rule,), "keep every rule"),
        ("rules", "tuple of rules"),
    ):
        with pytest.raises(Wrong, match=says):
            a03.verify_rules(bad)
    other = solution.replace(f'"{a03.REASON}"', '"broken bar"')
    assert other != solution
    with pytest.raises(Wrong, match="'inconsistent bar'"):
        a03.verify_rules(rules_from(other))


def test_03_2_a_right_entry_passes_and_each_wrong_one_is_named(tmp_path):
    folder = tmp_path / "practice-data"
    namespace = {"practice": practice, "catalogue": catalogue, "PRACTICE": folder,
                 "copper_file": practice.copper_prices()}  # fmt: skip
    solution = workbook.solution("03.2")
    for wrong in exercises("03")[1].wrong.values():
        exec(wrong.cell(solution), namespace)
        with pytest.raises(Wrong, match=wrong.says):
            a03.verify_new_asset(namespace["copper"], folder)
    exec(solution, namespace)
    a03.verify_new_asset(namespace["copper"], folder)
    practice.folder(folder)
    with pytest.raises(Wrong, match="no asset 'copper'"):
        a03.verify_new_asset(namespace["copper"], folder)


@pytest.mark.parametrize(
    "query, says",
    [
        ("SELECT sensor, time / 3600 * 3600 AS hour, avg(temp_c) FROM readings "
         "GROUP BY sensor, hour", None),
        ("SELECT sensor, strftime('%H', time, 'unixepoch') AS h, avg(temp_c) FROM readings "
         "GROUP BY sensor, h", "hours of the day"),
        ("SELECT sensor, time / 3600 AS hour, avg(temp_c) FROM readings GROUP BY sensor, hour",
         "epoch seconds"),
        ("SELECT sensor, time / 3600 * 3600 AS hour, max(temp_c) FROM readings "
         "GROUP BY sensor, hour", "max"),
        ("SELECT 'all', time / 3600 * 3600 AS hour, avg(temp_c) FROM readings GROUP BY hour",
         "group by the sensor too"),
        ("SELECT sensor, avg(temp_c) FROM readings GROUP BY sensor", "three columns"),
        ("SELECT FROM readings", "SQLite refused"),
    ],
)  # fmt: skip
def test_03_4_the_sql_is_run_by_sqlite_and_compared_with_pandas(query, says):
    if says is None:
        a03.verify_hourly_sql(query)
    else:
        with pytest.raises(Wrong, match=says):
            a03.verify_hourly_sql(query)
