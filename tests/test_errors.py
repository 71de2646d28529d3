"""Mistakes get one sentence that says what to do, in Python and in Jupyter alike."""

import re

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab_helpers import data, etl, workbook
from lab_helpers.config import load_settings
from lab_helpers.errors import LabError, UnknownAssetError
from lab_helpers.influx import InfluxDB
from lab_helpers.lineprotocol import encode_point
from lab_helpers.replay import ReplayConfig
from lab_helpers.stack import LocalStack


def test_unknown_asset_is_one_sentence():
    with pytest.raises(UnknownAssetError) as caught:
        data.load_prices(["doge"])
    message = str(caught.value)
    assert "doge" in message and "btc" in message and "\n" not in message


def test_in_jupyter_a_lab_error_shows_as_one_line_and_still_fails_the_cell(tmp_path):
    path = tmp_path / "mistake.ipynb"
    nb = new_notebook(cells=[
        new_code_cell("from lab_helpers import data"),
        new_code_cell("data.load_prices(['doge'])"),
        new_code_cell("print('never reached')"),
    ])  # fmt: skip
    nbformat.write(nb, path)
    result = workbook.run_notebook(path, tmp_path / "out")
    assert not result.ok and "UnknownAssetError" in result.error
    executed = nbformat.read(result.output, as_version=4)
    cells = {c.source: c for c in executed.cells if c.cell_type == "code"}
    (error,) = cells["data.load_prices(['doge'])"].outputs
    assert error.output_type == "error" and len(error.traceback) == 1
    assert error.traceback[0].startswith("⛔ UnknownAssetError: unknown asset 'doge'")
    assert not cells["print('never reached')"].outputs


WRONG_CALLS = {
    "an InfluxDB address without scheme": lambda: InfluxDB("localhost:8086"),
    "an unknown data set": lambda: data.load("btc_usd_weekly"),
    "an unknown frequency": lambda: data.load_prices(["btc"], frequency="weekly"),
    "an unknown asset alias": lambda: data.load_prices("bitcoins"),
    "cleaning something that is not a table": lambda: etl.clean("btc,1.0"),
    "cleaning a table without prices": lambda: etl.clean(pd.DataFrame({"time": ["2024"]})),
    "an unknown service": lambda: LocalStack("/tmp/never-used", services=["mongodb"]),
    "an unknown mode": lambda: load_settings(env={"LAB_MODE": "cloud"}),
    "an unknown role": lambda: load_settings(env={}).credentials("root"),
    "a share of bad records above 1": lambda: ReplayConfig(bad_share=1.5),
    "an unknown bad-record kind": lambda: ReplayConfig(bad_share=0.1, bad_kinds=("typo",)),
    "a start that is not a time": lambda: ReplayConfig(start="yesterday"),
    "a point without fields": lambda: encode_point({"measurement": "price"}),
}


@pytest.mark.parametrize("call", WRONG_CALLS.values(), ids=WRONG_CALLS.keys())
def test_wrong_arguments_raise_one_clear_sentence(call):
    with pytest.raises(LabError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message and len(message) < 400, message
    # It says what to do, not only what went wrong.
    assert re.search(
        r"\b(use|choose|give|pass|set|start|expected|needs?|one of|e\.g\.)\b", message
    ), message
