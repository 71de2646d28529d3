"""Tests for lab_helpers.etl: every cleaning rule, passing and failing, and the invariants."""

from __future__ import annotations

import datetime as dt
import decimal
import time
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab_helpers import data, etl
from lab_helpers.errors import DataError
from lab_helpers.etl import clean

NOW = pd.Timestamp("2024-06-01 12:00", tz="UTC")
T0 = "2021-04-14T10:00:00Z"
T0_UTC = pd.Timestamp(T0)


def rows(*records: dict, **options) -> etl.CleanResult:
    """Clean hand-made rows (as a streaming worker would pass them) with a fixed ``now``."""
    options.setdefault("now", NOW)
    return clean(pd.DataFrame(list(records)), **options)


def tick(price=63000.0, time=T0, asset="btc", **extra) -> dict:
    return {"time": time, "asset": asset, "price": price, **extra}


def reasons(result: etl.CleanResult) -> list[str]:
    return result.quarantine.sort_values("row")["reason"].tolist()


def only_reason(result: etl.CleanResult) -> str:
    assert result.clean.empty, result.clean
    (reason,) = result.quarantine["reason"]
    return reason


# ---------------------------------------------------------------------------- the frame


def test_clean_output_types_and_order():
    result = rows(
        tick("2", time="2021-04-14T10:02Z", asset="ETH", volume="5"),
        tick("1", time="2021-04-14T10:01Z", asset="eth"),
        tick("63000", time="2021-04-14T10:00Z", asset="XBT"),
    )
    df = result.clean
    assert list(df.columns) == ["time", "asset", "price", "volume", "filled", "suspect"]
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["price"].dtype == "float64" and df["volume"].dtype == "float64"
    assert df["filled"].dtype == bool and df["suspect"].dtype == bool
    assert df["asset"].tolist() == ["btc", "eth", "eth"]  # sorted by asset, then time
    assert df["price"].tolist() == [63000.0, 1.0, 2.0]
    assert isinstance(df.index, pd.RangeIndex)
    assert result.quarantine.empty and result.counts == {}


def test_quarantine_keeps_original_values_row_labels_and_reason():
    raw = pd.DataFrame(
        [tick("12,5"), tick(" 63000 "), tick(None, asset="doge")], index=[10, 20, 30]
    )
    result = clean(raw, now=NOW)
    q = result.quarantine
    assert list(q.columns) == ["row", "time", "asset", "price", "reason"]
    assert q["row"].tolist() == [10, 30]
    assert q["price"].tolist()[0] == "12,5"  # untouched, not parsed
    assert q["asset"].tolist()[1] == "doge"
    assert q["reason"].tolist() == ["price not a number", "missing price"]
    assert result.clean["price"].tolist() == [63000.0]


def test_clean_does_not_modify_its_input():
    raw = pd.DataFrame([tick("1"), tick(" 2 ", asset="XBT", time="2021-04-14"), tick("")])
    before = raw.copy()
    clean(raw, now=NOW)
    pd.testing.assert_frame_equal(raw, before)


def test_counts_and_summary():
    result = rows(tick(""), tick("x", asset="eth"), tick("y", asset="ltc"), tick(1.0))
    assert result.counts == {"missing price": 1, "price not a number": 2}
    assert sum(result.counts.values()) == len(result.quarantine)
    assert result.summary() == (
        "4 rows: 1 clean (0 filled, 0 suspect), 3 quarantined "
        "(1 missing price, 2 price not a number)"
    )
    assert "CleanResult" in repr(result) and result.summary() in repr(result)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"time": [T0]}), "no 'price' column"),
        (pd.DataFrame({"price": [1.0]}), "no 'time' column"),
        (pd.DataFrame({"asset": ["btc"]}), "no 'time' and no 'price' column"),
        (pd.DataFrame([[T0, 1, 2]], columns=["time", "price", "Price"]), "several columns"),
    ],
)
def test_unusable_frames_raise_a_data_error(frame, message):
    with pytest.raises(DataError, match=message) as err:
        clean(frame)
    if "several" not in message:
        assert "needs the columns 'time' and 'price'" in str(err.value)


def test_not_a_data_frame_raises_a_data_error():
    with pytest.raises(DataError, match="needs a pandas DataFrame, not list: wrap the rows"):
        clean([tick()])


def test_unknown_time_zone_raises_a_data_error():
    with pytest.raises(DataError, match="unknown time zone 'Mars/Olympus'"):
        rows(tick(), source_tz="Mars/Olympus")


def test_nullable_and_categorical_columns():
    raw = pd.DataFrame(
        {
            "time": pd.array([1618394400, None, 1618394460], dtype="Int64"),
            "price": pd.array([1.5, 2.5, None], dtype="Float64"),
            "asset": pd.Categorical(["btc", "eth", "btc"]),
        }
    )
    result = clean(raw, now=NOW, fill_missing=True)
    assert result.clean["price"].tolist() == [1.5, 1.5]
    assert result.clean["filled"].tolist() == [False, True]
    assert reasons(result) == ["bad timestamp"]


def test_column_names_ignore_case_and_spaces():
    result = clean(pd.DataFrame({" Time": [T0], "PRICE": ["5"], "Asset": ["BTC"]}), now=NOW)
    assert result.clean[["asset", "price"]].values.tolist() == [["btc", 5.0]]


def test_rules_are_named_documented_and_in_order():
    assert [rule.__name__ for rule in etl.RULES] == [
        "normalize_empty",
        "parse_prices",
        "normalize_assets",
        "parse_times",
        "convert_units",
        "reject_impossible",
        "fill_gaps",
        "drop_duplicates",
        "flag_jumps",
    ]
    assert all(rule.__doc__ and len(rule.__doc__) > 80 for rule in etl.RULES)


def test_a_rule_of_your_own_runs_where_the_list_puts_it_and_its_reason_is_counted():
    def reject_round_prices(batch: etl.Batch) -> None:
        batch.reject(batch.frame["price"] % 1000 == 0, "round price")

    at = etl.RULES.index(etl.reject_impossible) + 1
    rules = (*etl.RULES[:at], reject_round_prices, *etl.RULES[at:])
    result = rows(tick(63000.0), tick(63000.5, time="2021-04-14T10:01:00Z"), tick("abc"),
                  tick(-1000.0, time="2021-04-14T10:02:00Z"), rules=rules)  # fmt: skip
    # An earlier rule's reason stays (batch.reject keeps it); the new one comes after them all.
    assert reasons(result) == ["round price", "price not a number", "price not positive"]
    assert list(result.counts) == ["price not a number", "price not positive", "round price"]
    assert result.clean["price"].tolist() == [63000.5]
    assert "1 round price" in result.summary()
    # Without `rules`, the lab's own.
    assert reasons(rows(tick(63000.0))) == []


# ---------------------------------------------------------------------------- rule 1: empties


@pytest.mark.parametrize(
    "empty", ["", "   ", None, np.nan, "nan", "NaN", "null", "None", "-", "N/A"]
)
def test_empty_price_is_quarantined_as_missing(empty):
    assert only_reason(rows(tick(empty))) == "missing price"


@pytest.mark.parametrize("value", ["0.5", "-5", "NaNa", "none of it"])
def test_text_that_is_not_an_empty_token_is_not_missing(value):
    result = rows(tick(value))
    assert "missing price" not in reasons(result)
    assert len(result.clean) + len(result.quarantine) == 1


def test_missing_optional_fields_stay_nan():
    result = rows(tick("1", volume=""), tick("2", time="2021-04-14T10:01Z", volume="null"))
    assert result.clean["volume"].isna().all()
    assert len(result.clean) == 2


def test_fill_missing_copies_the_previous_price_within_the_gap():
    result = rows(
        tick("100", time="2021-04-14T00:00Z"),
        tick("", time="2021-04-16T00:00Z"),  # 2 days later: filled
        tick("", time="2021-04-20T00:00Z"),  # 6 days after the last real price: too old
        tick("7", asset="eth", time="2021-04-13T00:00Z"),
        fill_missing=True,
    )
    btc = result.clean[result.clean["asset"] == "btc"]
    assert btc["price"].tolist() == [100.0, 100.0]
    assert btc["filled"].tolist() == [False, True]
    assert reasons(result) == ["missing price"]
    assert result.quarantine["row"].tolist() == [2]


def test_fill_missing_respects_max_fill_gap_and_assets():
    records = [tick("100", time="2021-04-14T00:00Z"), tick(None, time="2021-04-14T02:00Z")]
    assert rows(*records, fill_missing=True, max_fill_gap="1h").clean["filled"].sum() == 0
    assert rows(*records, fill_missing=True, max_fill_gap="2h").clean["filled"].sum() == 1
    other_asset = [tick("100", asset="eth"), tick(None, time="2021-04-14T11:00Z")]
    assert only_reason(rows(*other_asset[1:], fill_missing=True)) == "missing price"
    assert rows(*other_asset, fill_missing=True).counts == {"missing price": 1}


def test_fill_missing_never_fills_from_the_future_or_a_rejected_price():
    result = rows(
        tick("", time="2021-04-14T09:00Z"),  # nothing before it
        tick("100", time="2021-04-14T10:00Z"),
        tick("999", time="2021-04-14T10:00Z"),  # conflicting: rule 7 drops it
        tick(None, time="2021-04-14T10:05Z"),
        fill_missing=True,
    )
    assert reasons(result) == ["missing price", "conflicting duplicate"]
    filled = result.clean[result.clean["filled"]]
    assert filled["price"].tolist() == [100.0]


def test_a_filled_row_never_wins_over_a_real_price_at_the_same_time():
    result = rows(
        tick("100", time="2021-04-14T10:00Z"),
        tick(None, time="2021-04-14T10:05Z"),  # seen first, but only a copy of 100
        tick("200", time="2021-04-14T10:05Z"),
        fill_missing=True,
    )
    assert result.clean["price"].tolist() == [100.0, 200.0]
    assert not result.clean["filled"].any()
    assert reasons(result) == ["duplicate"]
    assert result.quarantine["row"].tolist() == [1]


# ---------------------------------------------------------------------------- rule 2: numbers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("63000.5", 63000.5),
        (" 7 ", 7.0),
        ("1e3", 1000.0),
        (42, 42.0),
        (np.float32(2.5), 2.5),
        (decimal.Decimal("3.25"), 3.25),
    ],
)
def test_numbers_and_numeric_text_are_prices(value, expected):
    assert rows(tick(value)).clean["price"].tolist() == [expected]


@pytest.mark.parametrize("value", ["abc", "1,234.5", "$5", True, [1], {"p": 1}, b"5", 3 + 2j])
def test_other_values_are_not_a_number(value):
    assert only_reason(rows(tick(value))) == "price not a number"


@pytest.mark.parametrize("value", ["inf", "-Infinity", float("inf"), "1e400", 10**400])
def test_infinite_prices_are_not_finite(value):
    assert only_reason(rows(tick(value))) == "price not finite"


def test_extra_fields_become_float_or_stay_text():
    result = rows(
        tick("1", volume="2.5", exchange="gemini", seq="7"),
        tick("2", time="2021-04-14T10:01Z", volume="lots", exchange="kraken", seq=8),
    )
    df = result.clean
    assert df["volume"].tolist()[0] == 2.5 and np.isnan(df["volume"].tolist()[1])
    assert df["seq"].dtype == "float64" and df["seq"].tolist() == [7.0, 8.0]
    assert df["exchange"].tolist() == ["gemini", "kraken"]


# ---------------------------------------------------------------------------- rule 3: assets


@pytest.mark.parametrize(
    ("name", "asset"),
    [(" BTC ", "btc"), ("XBT", "btc"), ("Bitcoin", "btc"), ("btc/usd", "btc"), ("XAU", "gold")],
)
def test_asset_names_are_normalised(name, asset):
    assert rows(tick(asset=name, price=1.0)).clean["asset"].tolist() == [asset]


@pytest.mark.parametrize("name", ["doge", "", None, 5, "btc eth"])
def test_unknown_assets_are_quarantined(name):
    assert only_reason(rows(tick(asset=name))) == "unknown asset"


def test_a_batch_without_asset_column_is_all_unknown_assets():
    result = clean(pd.DataFrame({"time": [T0, T0], "price": [1, 2]}), now=NOW)
    assert result.counts == {"unknown asset": 2}


# ---------------------------------------------------------------------------- rule 4: times


@pytest.mark.parametrize(
    "value",
    [
        "2021-04-14T10:00:00Z",
        "2021-04-14T12:00:00+02:00",
        "2021-04-14T05:00:00-0500",
        "2021-04-14 10:00",
        " 2021-04-14T10:00:00.000Z ",
        1618394400,  # epoch seconds
        1618394400.0,
        "1618394400",
        1618394400000,  # ms
        1618394400000000,  # us
        1618394400000000000,  # ns
        dt.datetime(2021, 4, 14, 10),
        dt.datetime(2021, 4, 14, 11, tzinfo=ZoneInfo("Europe/London")),
        pd.Timestamp("2021-04-14 06:00", tz="America/New_York"),
        np.datetime64("2021-04-14T10:00"),
    ],
)
def test_time_forms_all_give_the_same_utc_instant(value):
    assert rows(tick(time=value)).clean["time"].tolist() == [T0_UTC]


def test_typed_and_mixed_time_columns():
    typed = pd.DataFrame({"time": pd.to_datetime([T0]), "asset": ["btc"], "price": [1.0]})
    assert clean(typed, now=NOW).clean["time"].tolist() == [T0_UTC]
    mixed = rows(
        tick(1.0, time="2021-04-14T10:00Z"),
        tick(2.0, time="2021-04-14T12:00:00+02:00", asset="eth"),
        tick(3.0, time="2021-04-14 10:00", asset="ltc"),
        tick(4.0, time=1618394400000, asset="xrp"),
    )
    assert mixed.clean["time"].tolist() == [T0_UTC] * 4


def test_epoch_unit_thresholds():
    just_seconds = 99_999_999_999  # < 1e11: seconds -> the year 5138: out of range
    as_ms = 100_000_000_000  # >= 1e11: milliseconds -> 1973-03-03: gold's price then
    result = rows(tick(time=just_seconds), tick(1500.0, time=as_ms, asset="gold"))
    assert reasons(result) == ["timestamp out of range"]
    assert result.clean["time"].tolist() == [pd.Timestamp("1973-03-03 09:46:40", tz="UTC")]
    assert etl.EPOCH_UNITS[0][:2] == (1e11, "s")


def test_naive_times_are_read_in_source_tz():
    summer = rows(tick(time="2021-04-14 11:00"), source_tz="Europe/London")
    assert summer.clean["time"].tolist() == [T0_UTC]
    winter = rows(tick(time=dt.datetime(2021, 1, 14, 11)), source_tz="Europe/London")
    assert winter.clean["time"].tolist() == [pd.Timestamp("2021-01-14 11:00", tz="UTC")]
    # An explicit offset wins over source_tz.
    explicit = rows(tick(time="2021-04-14T10:00:00Z"), source_tz="Asia/Tokyo")
    assert explicit.clean["time"].tolist() == [T0_UTC]


@pytest.mark.parametrize(
    "value",
    ["garbage", "2021-02-30", "14/04/2021", True, [2021, 4, 14], None, "", float("nan"), "inf"],
)
def test_unreadable_times_are_bad_timestamps(value):
    assert only_reason(rows(tick(time=value))) == "bad timestamp"


def test_wall_clock_times_that_do_not_exist_are_bad_timestamps():
    # London skips 01:00-02:00 on 2021-03-28 and repeats 01:00-02:00 on 2021-10-31.
    result = rows(
        tick(time="2021-03-28 01:30"),
        tick(time="2021-10-31 01:30", asset="eth", price=4000),
        tick(time="2021-10-31 03:30", asset="ltc", price=200),
        source_tz="Europe/London",
    )
    assert reasons(result) == ["bad timestamp", "bad timestamp"]
    assert result.clean["time"].tolist() == [pd.Timestamp("2021-10-31 03:30", tz="UTC")]


@pytest.mark.parametrize(
    "value",
    [
        "9999-01-01T00:00:00.123456789Z",
        10**11 - 1,  # seconds: the year 5138
        "2024-06-02T12:00:00.000000001Z",  # a nanosecond more than a day after NOW
        "2024-06-03T00:00:00Z",
    ],
)
def test_times_too_far_in_the_future_are_out_of_range(value):
    assert only_reason(rows(tick(time=value))) == "timestamp out of range"


@pytest.mark.parametrize(
    "value",
    [
        -1,  # 1969-12-31T23:59:59Z: a negative epoch, the broken clock of a bitcoin tick
        0,  # 1970-01-01
        "1969-12-31",
        "2010-03-16T23:59:59.999999999Z",  # a nanosecond before bitcoin's earliest date
        "1799-12-31",
        "1500-01-01T00:00:00Z",
        dt.datetime(1, 1, 1),
        -(10**10),  # 1653
    ],
)
def test_times_before_the_assets_earliest_date_are_too_early(value):
    assert only_reason(rows(tick(time=value))) == "timestamp too early"


def test_times_at_the_edges_of_the_range_are_accepted():
    earliest = data.catalogue.load()["btc"].earliest
    assert earliest == pd.Timestamp("2010-03-17", tz="UTC")
    result = rows(
        tick(1.0, time="2010-03-17T00:00:00Z"),  # bitcoin's earliest plausible date
        tick(time="2024-06-02T12:00Z", asset="eth"),  # exactly FUTURE_TOLERANCE after NOW
        tick(20.0, time="1833-01-01", asset="gold"),  # the first bundled gold price
    )
    assert len(result.clean) == 3, result.quarantine
    assert etl.FUTURE_TOLERANCE == pd.Timedelta(days=1)


def test_the_earliest_date_is_per_asset():
    # 2012: bitcoin traded, ether did not exist yet.
    result = rows(tick(5.0, time="2012-01-01"), tick(5.0, time="2012-01-01", asset="eth"))
    assert reasons(result) == ["timestamp too early"]
    assert result.clean["asset"].tolist() == ["btc"]


def test_now_defaults_to_the_current_time():
    soon = pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)
    later = soon + pd.Timedelta(days=3)
    result = clean(pd.DataFrame([tick(time=soon.isoformat()), tick(time=later.isoformat())]))
    assert reasons(result) == ["timestamp out of range"]


# ---------------------------------------------------------------------------- rule 5: units


@pytest.mark.parametrize(
    ("asset", "price", "unit", "expected"),
    [
        ("gold", 60.0, "USD/g", 60.0 * 31.1034768),
        ("gold", 60000.0, "USD/kg", 60000.0 * 31.1034768 / 1000),
        ("silver", 80.0, "USc/g", 0.8 * 31.1034768),
        ("btc", 6_300_000, "USc", 63000.0),
        ("gold", 1900.0, "USD/ozt", 1900.0),
        ("gold", 1900.0, " usd / OZT ", 1900.0),
        ("btc", 63000.0, "USD/coin", 63000.0),
        ("btc", 63000.0, "USD", 63000.0),
        ("btc", 63000.0, None, 63000.0),
        ("btc", 63000.0, "", 63000.0),
    ],
)
def test_units_are_converted_to_usd_per_coin_or_troy_ounce(asset, price, unit, expected):
    result = rows(tick(price, asset=asset, unit=unit))
    assert result.clean["price"].tolist() == [pytest.approx(expected)]
    assert "unit" not in result.clean.columns


@pytest.mark.parametrize(
    ("asset", "unit"),
    [("gold", "furlongs"), ("gold", "EUR/ozt"), ("btc", "USD/g"), ("gold", "USD/coin"), ("btc", 5)],
)
def test_unknown_or_unfitting_units_are_quarantined(asset, unit):
    assert only_reason(rows(tick(1.0, asset=asset, unit=unit))) == "unknown unit"


def test_ohlc_fields_are_converted_like_the_price():
    result = rows(tick(100.0, asset="gold", unit="USD/g", open="99", high=101, low=98.5))
    row = result.clean.iloc[0]
    for column, raw in [("price", 100), ("open", 99), ("high", 101), ("low", 98.5)]:
        assert row[column] == pytest.approx(raw * etl.TROY_OUNCE_GRAMS)


def test_unit_factor():
    assert etl.unit_factor("USD/g", "USD/ozt") == 31.1034768
    assert etl.unit_factor("USc", "USD/coin") == 0.01
    assert etl.unit_factor("USD/g", "USD/coin") is None
    assert etl.unit_factor(None, "USD/ozt") is None
    # Units of other assets: pounds of copper, shares, barrels (only as themselves).
    assert etl.unit_factor("USD/kg", "USD/lb") == pytest.approx(0.45359237)
    assert etl.unit_factor("USc/lb", "USD/lb") == 0.01
    assert etl.unit_factor("USD/share", "USD/share") == 1.0
    assert etl.unit_factor("USD/bbl", "USD/bbl") == 1.0
    assert etl.unit_factor("USD/g", "USD/bbl") is None
    assert etl.unit_factor("USD/coin", "USD/share") is None


# ---------------------------------------------------------------------------- rule 6: values


@pytest.mark.parametrize("value", [0, "0", -5.0, "-0.01"])
def test_prices_not_positive(value):
    assert only_reason(rows(tick(value))) == "price not positive"


def test_price_ceiling_is_the_catalogues():
    ceiling = data.catalogue.load()["btc"].ceiling
    assert ceiling == 100 * 124_723.0
    assert rows(tick(ceiling)).clean["price"].tolist() == [ceiling]
    assert only_reason(rows(tick(ceiling * 1.01))) == "price implausible"
    assert only_reason(rows(tick(1900 * 31.1 * 1000, asset="gold"))) == "price implausible"


def test_each_ceiling_is_100x_the_bundled_high():
    highs = {}
    for key, meta in data.DATASETS.items():
        highs[meta.asset] = max(highs.get(meta.asset, 0.0), data.load(key)["price"].max())
    ceilings = {name: a.ceiling for name, a in data.catalogue.load().assets.items()}
    assert ceilings == {asset: pytest.approx(100 * high) for asset, high in highs.items()}


def test_each_bundled_price_is_after_its_assets_earliest_date():
    assets = data.catalogue.load()
    for key, meta in data.DATASETS.items():
        assert data.load(key)["time"].min() >= assets[meta.asset].earliest, key


# ---------------------------------------------------------------------------- rule 7: duplicates


def test_duplicates_are_judged_per_source_when_the_batch_names_one():
    result = rows(
        tick(63000.0, source="coinbase"),
        tick(63010.0, source="kraken"),  # another exchange, same instant: its own series
        tick(63000.0, source="coinbase"),  # the same tick again
        tick(64000.0, source="kraken"),  # the same instant, another price, same source
        tick(99000.0, time="2021-04-14T10:01:00Z", source="coinbase"),  # +57 %: suspect
        tick(63020.0, time="2021-04-14T10:01:00Z", source="kraken"),  # not a jump
    )
    assert reasons(result) == ["duplicate", "conflicting duplicate"]
    clean = result.clean
    assert clean["source"].tolist() == ["coinbase", "coinbase", "kraken", "kraken"]
    assert clean["price"].tolist() == [63000.0, 99000.0, 63010.0, 63020.0]
    assert clean["suspect"].tolist() == [False, True, False, False]
    filled = rows(tick(1.0, source="a"), tick(2.0, source="b"),
                  tick(None, time="2021-04-14T10:01Z", source="b"), fill_missing=True)  # fmt: skip
    assert filled.clean["price"].tolist() == [1.0, 2.0, 2.0]  # from its own source


def test_exact_duplicates_keep_the_first_and_quarantine_the_rest():
    result = rows(tick(1.0), tick("1"), tick(1.0, time=1618394400))
    assert reasons(result) == ["duplicate", "duplicate"]
    assert result.quarantine["row"].tolist() == [1, 2]
    assert len(result.clean) == 1


def test_conflicting_duplicates_keep_the_first_seen():
    result = rows(
        tick(2.0, time="2021-04-14T10:00Z"),
        tick(1.0, time="2021-04-14T09:00Z"),
        tick(3.0, time="2021-04-14T10:00Z"),
        tick(2.0, time="2021-04-14T10:00Z"),
    )
    assert reasons(result) == ["conflicting duplicate", "duplicate"]
    assert result.quarantine["row"].tolist() == [2, 3]
    assert result.clean["price"].tolist() == [1.0, 2.0]  # sorted by time


def test_same_time_for_different_assets_is_not_a_duplicate():
    result = rows(tick(1.0), tick(1.0, asset="eth"), tick(1.0, asset="XBT", time="2021-04-15"))
    assert result.quarantine.empty and len(result.clean) == 3


# ---------------------------------------------------------------------------- rule 8: jumps


def series(asset: str, prices: list[float]) -> list[dict]:
    start = pd.Timestamp("2021-04-01", tz="UTC")
    return [
        tick(p, asset=asset, time=(start + pd.Timedelta(days=i)).isoformat())
        for i, p in enumerate(prices)
    ]


def test_big_crypto_jumps_are_flagged_not_quarantined():
    result = rows(*series("btc", [100, 140, 220, 110]))
    assert result.quarantine.empty
    # +40 % is fine, +57 % is flagged, -50 % is not *more* than 50 %.
    assert result.clean["suspect"].tolist() == [False, False, True, False]


def test_metal_jump_threshold_is_25_percent():
    result = rows(*series("gold", [1000, 1200, 1560, 1000]))
    assert result.clean["suspect"].tolist() == [False, False, True, True]


def test_jumps_are_measured_per_asset():
    result = rows(*series("btc", [60000, 61000]), *series("eth", [2000, 2010]))
    assert not result.clean["suspect"].any()


def test_bundled_history_is_clean_and_the_known_silver_jump_is_flagged():
    btc = clean(data.load("btc_usd_daily").drop(columns="date"))
    assert btc.quarantine.empty and not btc.clean["suspect"].any()
    silver = clean(data.load("silver_usd_daily").drop(columns="date"))
    flagged = silver.clean.loc[silver.clean["suspect"], "time"].dt.strftime("%Y-%m-%d")
    assert "1979-09-18" in flagged.tolist()
    assert len(flagged) == 2


# ---------------------------------------------------------------------------- invariants

MESSY = st.one_of(
    st.none(),
    st.sampled_from(["", "  ", "nan", "NaN", "null", "None", "-", "N/A", "inf", "-1", "0", "abc"]),
    st.sampled_from(["2021-04-14", T0, "2021-04-14T12:00+02:00", "1618394400", "9999-01-01"]),
    st.text(max_size=8),
    st.integers(min_value=-(10**22), max_value=10**22),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from([dt.UTC, ZoneInfo("Europe/London")])),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.lists(st.integers(), max_size=2),
)
ASSET_NAMES = st.one_of(st.sampled_from(["btc", "XBT", " gold ", "xau", "doge", "ETH", ""]), MESSY)
UNITS = st.one_of(st.sampled_from(["USD", "USD/g", "USc", "USD/kg", "furlongs", None]), MESSY)


@st.composite
def messy_batches(draw):
    optional = draw(st.sets(st.sampled_from(["asset", "unit", "volume"])))
    strategies = {"time": MESSY, "price": MESSY, "asset": ASSET_NAMES, "unit": UNITS}
    strategies["volume"] = MESSY
    columns = ["time", "price", *sorted(optional)]
    records = draw(
        st.lists(st.fixed_dictionaries({c: strategies[c] for c in columns}), max_size=25)
    )
    if records and draw(st.booleans()):  # exact repeats exercise rule 7
        records += draw(st.lists(st.sampled_from(records), max_size=5))
    return pd.DataFrame(records, columns=columns)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=messy_batches(), fill_missing=st.booleans())
def test_every_row_ends_in_exactly_one_place(raw, fill_missing):
    result = clean(raw, fill_missing=fill_missing, now=NOW)
    assert len(result.clean) + len(result.quarantine) == len(raw)
    assert sum(result.counts.values()) == len(result.quarantine)
    assert set(result.quarantine["reason"]) <= set(etl.REASONS)
    assert result.quarantine["row"].is_unique
    df = result.clean
    assert str(df["time"].dtype) == "datetime64[ns, UTC]" and df["price"].dtype == "float64"
    assert np.isfinite(df["price"]).all() and (df["price"] > 0).all()
    assert df["asset"].isin(data.ASSETS).all()
    earliest = df["asset"].map(data.catalogue.load().earliest).astype("datetime64[ns, UTC]")
    assert ((df["time"] >= earliest) & (df["time"] <= NOW + etl.FUTURE_TOLERANCE)).all()
    assert not df.duplicated(["asset", "time"]).any()
    assert fill_missing or not df["filled"].any()


def test_a_large_batch_cleans_fast():
    n = 100_000
    times = pd.date_range("2021-01-01", periods=n, freq="min", tz="UTC")
    raw = pd.DataFrame(
        {
            "time": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "asset": np.where(np.arange(n) % 2, "BTC", "eth"),
            "price": (np.arange(n) % 100 + 1000).astype(str),
            "volume": np.arange(n) * 0.5,
        }
    )
    raw.loc[::50, "price"] = ""
    started = time.perf_counter()
    result = clean(raw, now=NOW)
    assert time.perf_counter() - started < 1.0
    assert result.counts == {"missing price": n // 50}
