"""Tests for lab_helpers.data: the catalogue, the loaders and the timestamp conventions."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from lab_helpers import data
from lab_helpers.errors import DataError, UnknownAssetError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

# Rows and first/last labels of every bundled file (data/README.md).
EXPECTED = {
    "btc_usd_daily": (4449, "2014-03-01", "2026-05-05"),
    "eth_usd_daily": (2792, "2018-01-01", "2025-08-23"),
    "xrp_usd_daily": (2792, "2018-01-01", "2025-08-23"),
    "ltc_usd_daily": (2792, "2018-01-01", "2025-08-23"),
    "sol_usd_daily": (1962, "2020-04-10", "2025-08-23"),
    "gold_usd_daily": (13167, "1968-04-01", "2020-08-25"),
    "silver_usd_daily": (13298, "1968-01-02", "2020-08-25"),
    "platinum_usd_daily": (7618, "1990-04-02", "2020-08-25"),
    "gold_futures_usd_daily": (1922, "2018-01-02", "2025-08-22"),
    "silver_futures_usd_daily": (1922, "2018-01-02", "2025-08-22"),
    "platinum_futures_usd_daily": (1922, "2018-01-02", "2025-08-22"),
    "gold_usd_monthly": (2322, "1833-01-01", "2026-06-01"),
    "btc_usd_1min": (50500, "2021-03-15T22:16:00Z", "2021-04-20T00:02:00Z"),
}


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def row_on(df: pd.DataFrame, day: str) -> pd.Series:
    match = df[df["date"] == pd.Timestamp(day)]
    assert len(match) == 1, f"expected one row dated {day}"
    return match.iloc[0]


# ---------------------------------------------------------------------------- catalogue


def test_catalogue_has_one_entry_per_csv_file():
    files = {p.stem for p in DATA_DIR.glob("*.csv")}
    assert set(data.DATASETS) == files == set(EXPECTED)


def test_catalog_frame_describes_every_data_set():
    cat = data.catalog()
    assert list(cat["dataset"]) == list(data.DATASETS)
    assert set(cat["asset"]) == set(data.ASSETS)
    assert set(cat["frequency"]) == set(data.FREQUENCIES)
    assert set(cat["source"]) == set(data.SOURCES)
    metals = cat["kind"] == "metal"
    assert (cat.loc[metals, "unit"] == "USD/ozt").all()
    assert (cat.loc[~metals, "unit"] == "USD/coin").all()
    assert cat["description"].str.len().gt(10).all()


@pytest.mark.parametrize(
    ("key", "source", "convention"),
    [
        ("btc_usd_daily", "spot", "crypto_close"),
        ("sol_usd_daily", "spot", "crypto_close"),
        ("btc_usd_1min", "spot", "bar_close_1min"),
        ("gold_usd_daily", "fix", "lbma_gold_pm"),
        ("silver_usd_daily", "fix", "lbma_silver"),
        ("platinum_usd_daily", "fix", "lppm_platinum_pm"),
        ("platinum_futures_usd_daily", "futures", "futures_settlement"),
        ("gold_usd_monthly", "average", "month_start"),
    ],
)
def test_catalogue_sources_and_conventions(key, source, convention):
    meta = data.DATASETS[key]
    assert (meta.source, meta.convention) == (source, convention)
    assert meta.convention in data.TIME_CONVENTIONS


# ---------------------------------------------------------------------------- load


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_load_returns_a_tidy_typed_sorted_table(key):
    rows, first, last = EXPECTED[key]
    df = data.load(key)
    meta = data.DATASETS[key]
    assert len(df) == rows
    assert isinstance(df.index, pd.RangeIndex)
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["price"].dtype == "float64"
    assert (df["price"] > 0).all()
    assert df["time"].is_monotonic_increasing
    assert (df["asset"] == meta.asset).all()
    expected_columns = {"time", "asset", "price"}
    if meta.frequency != "1min":
        expected_columns.add("date")
        assert str(df["date"].dtype) == "datetime64[ns]"
        assert (df["date"] == df["date"].dt.normalize()).all()
        assert (df["date"].iloc[0], df["date"].iloc[-1]) == (
            pd.Timestamp(first),
            pd.Timestamp(last),
        )
    extras = set(df.columns) - expected_columns
    assert expected_columns <= set(df.columns)
    for column in extras:
        assert column in ("open", "high", "low", "volume")
        assert df[column].dtype == "float64"


def test_load_keeps_extra_columns_of_each_file():
    assert list(data.load("btc_usd_1min").columns) == [
        "time",
        "asset",
        "price",
        "open",
        "high",
        "low",
        "volume",
    ]
    assert list(data.load("eth_usd_daily").columns) == ["time", "date", "asset", "price", "volume"]
    assert list(data.load("gold_usd_daily").columns) == ["time", "date", "asset", "price"]


def test_load_accepts_any_case_and_the_file_name():
    assert data.load("BTC_USD_Daily").equals(data.load("btc_usd_daily.csv"))


def test_the_one_minute_file_loads_fast():
    data.load("btc_usd_1min")  # warm the file cache
    started = time.perf_counter()
    data.load("btc_usd_1min")
    assert time.perf_counter() - started < 0.5


# ---------------------------------------------------------------------------- conventions


def test_crypto_daily_close_is_stamped_at_the_end_of_the_utc_day():
    btc = data.load("btc_usd_daily")
    row = row_on(btc, "2021-04-14")
    assert row["time"] == utc("2021-04-15 00:00")
    raw = pd.read_csv(DATA_DIR / "btc_usd_daily.csv").set_index("time")
    assert row["price"] == raw.loc["2021-04-14", "price"]
    assert (btc["time"] - btc["date"].dt.tz_localize("UTC") == pd.Timedelta(days=1)).all()


@pytest.mark.parametrize(
    ("key", "summer", "winter"),
    [
        # London fixes: BST (UTC+1) in summer, GMT in winter.
        ("gold_usd_daily", "2020-08-06 14:00", "2020-01-15 15:00"),
        ("silver_usd_daily", "2020-08-06 11:00", "2020-01-15 12:00"),
        ("platinum_usd_daily", "2020-08-06 13:00", "2020-01-15 14:00"),
        # New York 13:30: EDT (UTC-4) in summer, EST (UTC-5) in winter.
        ("gold_futures_usd_daily", "2020-08-06 17:30", "2020-01-15 18:30"),
    ],
)
def test_metal_prices_are_stamped_at_the_local_fix_or_settlement_time(key, summer, winter):
    df = data.load(key)
    assert row_on(df, summer[:10])["time"] == utc(summer)
    assert row_on(df, winter[:10])["time"] == utc(winter)


def test_us_and_uk_daylight_saving_start_on_different_days():
    # 2020-03-10: New York is already on EDT, London still on GMT.
    assert row_on(data.load("gold_futures_usd_daily"), "2020-03-10")["time"] == utc(
        "2020-03-10 17:30"
    )
    assert row_on(data.load("gold_usd_daily"), "2020-03-10")["time"] == utc("2020-03-10 15:00")


def test_gold_all_time_high_fix_is_on_record():
    row = row_on(data.load("gold_usd_daily"), "2020-08-06")
    assert row["price"] == 2067.15


def test_monthly_averages_are_stamped_at_the_first_of_the_month():
    gold = data.load("gold_usd_monthly")
    assert gold["time"].iloc[0] == utc("1833-01-01")
    assert (gold["time"].dt.day == 1).all() and (gold["time"].dt.hour == 0).all()
    # 1833-1959 are annual averages repeated for every month.
    assert gold.loc[gold["date"].dt.year == 1900, "price"].nunique() == 1


def test_one_minute_bars_are_stamped_at_their_close():
    bars = data.load("btc_usd_1min")
    assert bars["time"].iloc[0] == utc("2021-03-15 22:17")
    assert bars["time"].iloc[-1] == utc("2021-04-20 00:03")
    top = bars.loc[bars["price"].idxmax()]
    assert top["price"] == 64890.0  # the all-time high of April 2021


# ---------------------------------------------------------------------------- load_prices


def test_load_prices_defaults_to_every_daily_asset_with_fixes_for_metals():
    prices = data.load_prices()
    assert set(prices["asset"]) == set(data.ASSETS)
    assert len(prices) == sum(EXPECTED[f"{a}_usd_daily"][0] for a in data.ASSETS)
    gold = prices[prices["asset"] == "gold"]
    assert gold["date"].max() == pd.Timestamp("2020-08-25")  # the fixes, not the futures
    assert prices["time"].is_monotonic_increasing
    assert isinstance(prices.index, pd.RangeIndex)


def test_load_prices_can_use_futures_for_metals_only():
    prices = data.load_prices(["btc", "gold"], source="futures")
    assert set(prices["asset"]) == {"btc", "gold"}
    gold = prices[prices["asset"] == "gold"]
    assert len(gold) == EXPECTED["gold_futures_usd_daily"][0]
    assert gold["date"].max() == pd.Timestamp("2025-08-22")
    assert (prices["asset"] == "btc").sum() == EXPECTED["btc_usd_daily"][0]


@pytest.mark.parametrize(
    ("alias", "asset"),
    [
        ("BTC", "btc"),
        ("XBT", "btc"),
        ("bitcoin", "btc"),
        ("BTC-USD", "btc"),
        (" Ethereum ", "eth"),
        ("XAU", "gold"),
        ("gold", "gold"),
        ("xauusd", "gold"),
        ("XAG", "silver"),
        ("XPT", "platinum"),
        ("Solana", "sol"),
    ],
)
def test_asset_aliases(alias, asset):
    assert data.resolve_asset(alias) == asset
    assert set(data.load_prices(alias)["asset"]) == {asset}


def test_load_prices_other_frequencies():
    assert set(data.load_prices(frequency="monthly")["asset"]) == {"gold"}
    minutes = data.load_prices("xbt", frequency="1min")
    assert len(minutes) == EXPECTED["btc_usd_1min"][0]
    assert "date" not in minutes.columns


def test_unknown_asset_names_the_choices():
    with pytest.raises(UnknownAssetError) as err:
        data.load_prices(["btc", "doge"])
    assert str(err.value) == (
        "unknown asset 'doge': choose one of btc, eth, xrp, ltc, sol, gold, silver, platinum, "
        "or add it to the asset catalogue (assets.yaml in the data folder)"
    )
    assert isinstance(err.value, KeyError)  # a dict-like lookup error too
    assert data.normalize_asset("doge") is None
    assert data.normalize_asset(42) is None


def test_unknown_data_set_frequency_and_source_name_the_choices():
    with pytest.raises(UnknownAssetError, match="unknown data set 'btc_daily': choose one of "):
        data.load("btc_daily")
    with pytest.raises(UnknownAssetError, match="'weekly': choose one of 1min, daily, monthly"):
        data.load_prices(frequency="weekly")
    with pytest.raises(UnknownAssetError, match="'etf': choose one of spot, fix, futures, average"):
        data.load_prices(source="etf")
    with pytest.raises(UnknownAssetError, match="no monthly data for 'btc'"):
        data.load_prices("btc", frequency="monthly")
    with pytest.raises(UnknownAssetError, match="none of btc has daily 'fix' prices"):
        data.load_prices("btc", source="fix")


# ---------------------------------------------------------------------------- to_wide


def test_to_wide_lines_up_assets_by_calendar_date():
    wide = data.to_wide(data.load_prices(["gold", "btc"]))
    assert list(wide.columns) == ["btc", "gold"]  # ASSETS order
    assert wide.index.name == "date"
    assert wide.loc["2020-08-06", "gold"] == 2067.15
    assert (
        wide.loc["2021-04-14", "btc"] == row_on(data.load("btc_usd_daily"), "2021-04-14")["price"]
    )
    # Metals have no weekend rows: the gaps stay NaN for the analyst to handle.
    assert pd.isna(wide.loc["2020-08-08", "gold"]) and not pd.isna(wide.loc["2020-08-08", "btc"])


def test_to_wide_on_time_and_other_values():
    wide = data.to_wide(data.load("btc_usd_1min"), value="volume", on="time")
    assert wide.index.name == "time" and list(wide.columns) == ["btc"]
    assert len(wide) == EXPECTED["btc_usd_1min"][0]


def test_to_wide_refuses_what_it_cannot_pivot():
    with pytest.raises(DataError, match="1-minute data has no date: use on='time'"):
        data.to_wide(data.load("btc_usd_1min"))
    both = pd.concat([data.load("gold_usd_daily"), data.load("gold_futures_usd_daily")])
    with pytest.raises(DataError, match="several rows for the same date"):
        data.to_wide(both)
    with pytest.raises(DataError, match="use on='date' or on='time'"):
        data.to_wide(both, on="asset")


# ---------------------------------------------------------------------------- broken files


def test_missing_data_folder_says_where_and_mentions_lab_data_dir(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("LAB_DATA_DIR", str(missing))
    with pytest.raises(DataError) as err:
        data.load("btc_usd_daily")
    assert str(missing) in str(err.value) and "LAB_DATA_DIR" in str(err.value)


def test_missing_file_says_which_and_where(tmp_path, monkeypatch):
    shutil.copy(DATA_DIR / "assets.yaml", tmp_path)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        data.load("eth_usd_daily")
    message = str(err.value)
    assert "eth_usd_daily.csv" in message and str(tmp_path) in message
    assert "LAB_DATA_DIR" in message


def test_missing_catalogue_says_where_and_mentions_lab_data_dir(tmp_path, monkeypatch):
    (tmp_path / "sol_usd_daily.csv").write_text("time,price\n2024-01-01,100.5\n")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        data.load("sol_usd_daily")
    assert str(tmp_path / "assets.yaml") in str(err.value) and "LAB_DATA_DIR" in str(err.value)


def test_lab_data_dir_points_elsewhere(tmp_path, monkeypatch):
    shutil.copy(DATA_DIR / "assets.yaml", tmp_path)
    (tmp_path / "sol_usd_daily.csv").write_text("time,price\n2024-01-01,100.5\n")
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    sol = data.load("sol_usd_daily")
    assert sol["price"].tolist() == [100.5]
    assert sol["time"].tolist() == [utc("2024-01-02")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,close\n2024-01-01,1\n", "has no 'price' column"),
        ("date,price\n2024-01-01,1\n", "has no 'time' column"),
        ("time,price\n2024-01-01,1\n2024-01-02,abc\n", "'price' is not a number (first on line 3)"),
        ("time,price\n2024-01-01,1\n2024-01-02,\n", "'price' is not a number"),
        ("time,price\n2024-13-45,1\n", "unreadable time (first on line 2)"),
    ],
)
def test_malformed_file_names_the_file_and_the_problem(tmp_path, content, message):
    shutil.copy(DATA_DIR / "assets.yaml", tmp_path)
    (tmp_path / "ltc_usd_daily.csv").write_text(content)
    with pytest.raises(DataError, match="ltc_usd_daily.csv") as err:
        data.load("ltc_usd_daily", data_dir=tmp_path)
    assert message in str(err.value)
