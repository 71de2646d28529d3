"""Mistakes get one sentence that says what to do, in Python and in Jupyter alike."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lab_helpers import data, workbook
from lab_helpers.errors import UnknownAssetError


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
