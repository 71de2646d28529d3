"""A practice data folder, where a notebook adds an asset without touching `data/`.

`folder(path)` makes it afresh: a copy of the lab's asset catalogue (`assets.yaml`) beside
the CSV file of an asset the lab does not know yet, copper. Adding copper there
(`catalogue.add_asset("copper", data_dir=path, ...)`) is what adding an asset to `data/`
is, and the lab's own catalogue stays as it was.

The copper prices are made up (a seeded random walk around the 2024 level of COMEX copper
futures, in US dollars per pound), and the file has what real files have: a week missing
and one row twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import catalogue

ASSET = "copper"
FILE = "copper_usd_daily.csv"
"""The new asset's CSV file: `time,price`, one row per trading day of 2024."""
MISSING_WEEK = ("2024-07-08", "2024-07-12")
"""The days left out of the file (a gap, which stays a gap)."""
TWICE = "2024-03-15"
"""The day whose row the file has twice (the cleaner quarantines the copy as a duplicate)."""


def copper_prices(seed: int = 2024) -> pd.DataFrame:
    """The made-up daily settlements of copper in 2024 (USD per pound): `time` (the day, as
    text) and `price`, as the CSV file has them (the gap and the repeated row included)."""
    days = pd.bdate_range("2024-01-02", "2024-12-31")
    steps = np.random.default_rng(seed).normal(0.0004, 0.012, len(days))
    prices = np.round(3.85 * np.exp(np.cumsum(steps)), 4)
    table = pd.DataFrame({"time": days.strftime("%Y-%m-%d"), "price": prices})
    gap = (days >= MISSING_WEEK[0]) & (days <= MISSING_WEEK[1])
    table = table[~gap]
    again = table[table["time"] == TWICE]
    return pd.concat([table, again]).sort_values("time", kind="stable", ignore_index=True)


def folder(path: Path | str) -> Path:
    """Make the practice folder at `path` afresh (what was there goes): a copy of the lab's
    `assets.yaml` and the copper CSV file. Returns the folder, for `data_dir=`."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    shutil.copyfile(catalogue.path(), path / catalogue.FILE_NAME)
    copper_prices().to_csv(path / FILE, index=False)
    return path
