"""Tests for lab_helpers.catalogue: the one file that lists the assets, and adding one."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lab_helpers import catalogue, data, etl, live
from lab_helpers.catalogue import CatalogueError
from lab_helpers.errors import UnknownAssetError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CATALOGUE = DATA_DIR / catalogue.FILE_NAME

DOGE = {
    "title": "Dogecoin",
    "kind": "crypto",
    "unit": "USD/coin",
    "earliest": "2013-12-15",
    "ceiling": 100.0,
    "jump": 0.5,
    "aliases": ["dogecoin"],
    "files": [
        {
            "file": "doge_usd_daily.csv",
            "frequency": "daily",
            "source": "spot",
            "time": "crypto_close",
            "description": "Dogecoin daily close (made up for the test)",
        }
    ],
}


@pytest.fixture
def folder(tmp_path):
    """A data folder of its own: the lab's catalogue, and the CSV of a new asset."""
    shutil.copy(CATALOGUE, tmp_path)
    (tmp_path / "doge_usd_daily.csv").write_text("time,price\n2021-05-07,0.6\n2021-05-08,0.5\n")
    return tmp_path


# ---------------------------------------------------------------------------- the bundled file


def test_every_bundled_file_belongs_to_one_asset_of_the_catalogue():
    assets = catalogue.load(DATA_DIR)
    listed = [d.file for a in assets.assets.values() for d in a.datasets]
    assert sorted(listed) == sorted(p.name for p in DATA_DIR.glob("*.csv"))
    assert assets.names == ("btc", "eth", "xrp", "ltc", "sol", "gold", "silver", "platinum")
    for asset in assets.assets.values():
        assert set(asset.live) <= set(live.APIS), asset.name
        assert asset.earliest.tz is not None and asset.ceiling > 0 and 0 < asset.jump < 1


def test_every_field_of_the_file_is_known():
    raw = yaml.safe_load(CATALOGUE.read_text())
    fields = {key for entry in raw.values() for key in entry}
    assert fields == {"title", "kind", "unit", "earliest", "ceiling", "jump", "aliases", "live",
                      "files"}  # fmt: skip
    file_fields = {key for entry in raw.values() for f in entry["files"] for key in f}
    assert file_fields == {"file", "frequency", "source", "time", "publisher", "description"}


def test_the_catalogue_as_a_table():
    table = catalogue.load().frame()
    assert table.loc["btc", "earliest"] == pd.Timestamp("2010-03-17").date()
    assert table.loc["gold", "unit"] == "USD/ozt" and table.loc["eth", "kind"] == "crypto"
    assert "btc_usd_1min.csv" in table.loc["btc", "files"]


@pytest.mark.parametrize(
    ("text", "asset"),
    [
        ("btc", "btc"),
        (" BTC ", "btc"),
        ("XBT", "btc"),
        ("btc-usd", "btc"),
        ("BTC/USD", "btc"),
        ("xauusd", "gold"),
        ("Ethereum", "eth"),
        ("pt", "platinum"),
        ("doge", None),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_names_aliases_and_tickers(text, asset):
    assert catalogue.load().normalize(text) == asset


def test_an_unknown_name_says_how_to_add_it():
    with pytest.raises(UnknownAssetError, match="add it to the asset catalogue"):
        catalogue.load().resolve("doge")


# ---------------------------------------------------------------------------- invalid entries


def entry_text(**changes) -> str:
    fields = {**DOGE, **changes}
    fields = {k: v for k, v in fields.items() if v is not None}
    return yaml.safe_dump({"doge": fields}, sort_keys=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"title": None}, "the field 'title' is missing"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"unit": "EUR/coin"}, "prices are in US dollars"),
        ({"kind": "Crypto Coin"}, "use one lower-case word"),
        ({"earliest": "someday"}, "not a date: write it as 2013-12-15"),
        ({"earliest": "2999-01-01"}, "use a date from 1678 to today"),
        ({"ceiling": -1}, "ceiling -1 is out of range"),
        ({"ceiling": "lots"}, "ceiling 'lots' is not a number"),
        ({"jump": 0}, "jump 0 is out of range"),
        ({"aliases": "dogecoin"}, "should be a list of lower-case names"),
        ({"live": ["coinbase"]}, "should map API names to symbols"),
        ({"files": []}, "files should list at least one CSV file"),
        ({"files": [{"file": "Doge.xlsx"}]}, "the field 'frequency' is missing"),
        ({"files": [{**DOGE["files"][0], "file": "Doge.xlsx"}]}, "ending with .csv"),
        ({"files": [{**DOGE["files"][0], "frequency": "hourly"}]}, "use one of 1min, daily"),
        ({"files": [{**DOGE["files"][0], "time": "noon"}]}, "time 'noon' is not valid"),
        ({"aliases": ["xbt"]}, "'xbt' names both 'btc' and 'doge'"),
        ({"files": [{**DOGE["files"][0], "file": "btc_usd_daily.csv"}]}, "a file belongs to one"),
    ],
)
def test_an_invalid_entry_says_which_field_and_what_to_write(changes, message):
    text = CATALOGUE.read_text() + "\n" + entry_text(**changes)
    with pytest.raises(CatalogueError) as err:
        catalogue.parse(text, "assets.yaml")
    assert message in str(err.value)
    assert "doge" in str(err.value)


def test_a_name_that_is_not_a_plain_word_is_refused():
    with pytest.raises(CatalogueError, match="'Doge Coin' is not valid: use lower-case letters"):
        catalogue.parse(yaml.safe_dump({"Doge Coin": DOGE}))


def test_a_file_that_is_not_yaml_says_near_which_line():
    with pytest.raises(CatalogueError, match="not valid YAML near line 2"):
        catalogue.parse("btc:\n  title: [unclosed\n")


# ---------------------------------------------------------------------------- adding an asset


def test_add_asset_appends_one_entry_and_everything_knows_the_asset(folder):
    before = (folder / catalogue.FILE_NAME).read_text()
    asset = catalogue.add_asset("doge", data_dir=folder, **DOGE)
    assert asset.name == "doge" and asset.title == "Dogecoin"
    after = (folder / catalogue.FILE_NAME).read_text()
    assert after.startswith(before.rstrip("\n"))  # comments and other entries untouched
    assert after.count("\ndoge:\n") == 1

    assets = catalogue.load(folder)
    assert assets.names[-1] == "doge" and assets.normalize("DOGECOIN") == "doge"
    prices = data.load_prices("doge", data_dir=folder)
    assert prices["price"].tolist() == [0.6, 0.5]
    assert prices["time"].tolist() == [pd.Timestamp("2021-05-08", tz="UTC"),
                                       pd.Timestamp("2021-05-09", tz="UTC")]  # fmt: skip
    result = etl.clean(prices, assets=assets)
    assert len(result.clean) == 2 and result.quarantine.empty
    early = etl.clean(pd.DataFrame([{"time": "2013-01-01", "asset": "doge", "price": 0.001}]),
                      assets=assets)  # fmt: skip
    assert early.counts == {"timestamp too early": 1}


def test_add_asset_refuses_and_changes_nothing_when_something_is_wrong(folder):
    file = folder / catalogue.FILE_NAME
    before = file.read_text()
    with pytest.raises(CatalogueError, match="'btc' is already in"):
        catalogue.add_asset("btc", data_dir=folder, **DOGE)
    with pytest.raises(CatalogueError, match="ceiling"):
        catalogue.add_asset("doge", data_dir=folder, **{**DOGE, "ceiling": 0})
    missing = {**DOGE["files"][0], "file": "shib_usd_daily.csv"}
    with pytest.raises(CatalogueError, match="shib_usd_daily.csv is not in"):
        catalogue.add_asset("shib", data_dir=folder, **{**DOGE, "aliases": [], "files": [missing]})
    assert file.read_text() == before


def test_add_asset_takes_numpy_numbers_and_timestamps(folder):
    import numpy as np

    fields = {**DOGE, "ceiling": np.float64(100), "earliest": pd.Timestamp("2013-12-15")}
    assert catalogue.add_asset("doge", data_dir=folder, **fields).ceiling == 100.0


def test_remove_asset_takes_the_entry_out_again(folder):
    before = (folder / catalogue.FILE_NAME).read_text()
    catalogue.add_asset("doge", data_dir=folder, **DOGE)
    catalogue.remove_asset("doge", data_dir=folder)
    assert (folder / catalogue.FILE_NAME).read_text() == before
    assert "doge" not in catalogue.load(folder)
    with pytest.raises(UnknownAssetError, match="has no entry 'doge'"):
        catalogue.remove_asset("doge", data_dir=folder)


def test_a_change_of_the_file_is_seen_at_the_next_load(folder):
    assert "doge" not in catalogue.load(folder)
    file = folder / catalogue.FILE_NAME
    file.write_text(file.read_text() + "\n" + entry_text())  # an edit by hand
    assert "doge" in catalogue.load(folder)


def test_a_broken_edit_keeps_the_last_good_catalogue_and_says_why(folder):
    good = catalogue.load(folder)
    file = folder / catalogue.FILE_NAME
    file.write_text(file.read_text() + "\n" + entry_text(unit="EUR"))
    with pytest.warns(UserWarning, match="prices are in US dollars.*previous version"):
        assert catalogue.load(folder) is good
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per version of the file, not at each call
        assert catalogue.load(folder) is good


def test_a_missing_catalogue_says_where_and_how(tmp_path):
    with pytest.raises(CatalogueError, match="LAB_DATA_DIR"):
        catalogue.load(tmp_path)
