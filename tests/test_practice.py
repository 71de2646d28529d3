"""The practice data folder (lab_helpers.practice): a copy of the catalogue beside a new
asset's CSV file, where adding the asset leaves the lab's own data folder untouched."""

import pandas as pd

from lab_helpers import catalogue, data, etl, practice


def test_the_copper_file_has_a_gap_and_a_repeated_row():
    prices = practice.copper_prices()
    days = pd.to_datetime(prices["time"])
    assert days.min() == pd.Timestamp("2024-01-02") and days.max() == pd.Timestamp("2024-12-31")
    assert not days.between(*practice.MISSING_WEEK).any()
    assert (prices["time"] == practice.TWICE).sum() == 2 and prices.duplicated().sum() == 1
    assert prices["price"].between(2, 8).all()
    assert prices.equals(practice.copper_prices())  # seeded: the same file every time


def test_adding_copper_in_the_practice_folder_leaves_data_untouched(tmp_path):
    lab_catalogue = catalogue.path().read_text()
    folder = practice.folder(tmp_path / "practice")
    assert (folder / catalogue.FILE_NAME).read_text() == lab_catalogue
    asset = catalogue.add_asset(
        "copper", data_dir=folder, title="Copper", kind="metal", unit="USD/lb",
        earliest="2024-01-01", ceiling=441, jump=0.25,
        files=[{"file": practice.FILE, "frequency": "daily", "source": "futures",
                "time": "futures_settlement", "description": "made up"}],
    )  # fmt: skip
    assert asset.name == "copper" and "copper" not in catalogue.load()
    assert catalogue.path().read_text() == lab_catalogue
    result = etl.clean(
        data.load("copper_usd_daily", data_dir=folder), assets=catalogue.load(folder)
    )
    assert (
        result.counts == {"duplicate": 1} and len(result.clean) == len(practice.copper_prices()) - 1
    )
    # Made afresh: the copy is the lab's catalogue again, without copper.
    practice.folder(folder)
    assert "copper" not in catalogue.load(folder)
