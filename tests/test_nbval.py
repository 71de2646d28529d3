"""The committed notebook outputs are what a fresh run gives.

nbval re-runs a copy of each notebook, against a local stack of its own, and compares every
cell's output with the committed one. For the notebooks not converted to the workbook's full
rules yet, each checker also runs once *before* its solution, on the learner's starting point
exactly as the student edition has it (``python -m lab_helpers.workbook student``), and must
print ⛔ there; after the solution the checker's committed output (✅) must come out again.
The converted notebooks (``workbook.converted()``, the one list in
``lab_helpers.answers.MODULES``) have their checkers tried on the empty, the wrong and the
right answers by tests/test_workbook.py, so their copy here is the notebook as it is.

What legitimately differs between two runs (ports, process ids, uuids...) is sanitized by
``tests/nbval_sanitize.cfg``; cells whose output changes from run to run (times, live data,
figures of live data) carry the tag ``nbval-ignore-output``. After changing a notebook,
``python -m lab_helpers.workbook refresh NN`` writes its new reference outputs.
"""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_output

from lab_helpers import workbook
from lab_helpers.exercises import FAIL
from lab_helpers.stack import LocalStack

from .conftest import require_servers

NOTEBOOKS = workbook.notebooks()
CONVERTED = workbook.converted()
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
UNANSWERED = "unanswered"
# What the sanitizer makes of any ⛔ line (see nbval_sanitize.cfg).
FAILED_LINE = f"{FAIL} (a failed check)\n"


def has_outputs(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


def with_unanswered_checks(reference: Path) -> nbformat.NotebookNode:
    """The reference notebook, with each exercise's checker run once more before its solution,
    expected to print one ⛔ line (and nothing else); a converted notebook as it is."""
    nb = nbformat.read(reference, as_version=4)
    if reference in CONVERTED:
        return nb
    cells = []
    for at, cell in enumerate(nb.cells):
        if workbook.SOLUTION in workbook.tags(cell):
            checker = nb.cells[at + 1]
            unanswered = new_code_cell(checker.source, metadata={"tags": [UNANSWERED]})
            unanswered.execution_count = 1  # nbval compares only cells that have run
            unanswered.outputs = [new_output("stream", name="stdout", text=FAILED_LINE)]
            cells.append(unanswered)
        cells.append(cell)
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def test_every_exercise_gets_an_unanswered_check():
    for path in [p for p in NOTEBOOKS if p not in CONVERTED]:
        nb = with_unanswered_checks(path)
        checkers = [c for c in nb.cells if workbook.CHECKER in workbook.tags(c)]
        unanswered = [c for c in nb.cells if UNANSWERED in workbook.tags(c)]
        assert checkers and len(unanswered) == len(checkers), path.name


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_match_a_fresh_run_and_checkers_fail_unanswered(path, tmp_path):
    assert has_outputs(path), (
        f"{path.name} has no committed outputs: run `python -m lab_helpers.workbook refresh "
        f"{path.name[:2]}`"
    )
    require_servers()
    copy = tmp_path / path.name
    nbformat.write(with_unanswered_checks(path), copy)
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "LAB_DIR": str(lab_dir)}
    command = [
        sys.executable, "-m", "pytest", "--nbval", str(copy), "-q", "--tb=short",
        "-p", "no:cacheprovider", "-o", "addopts=", "--nbval-kernel-name", "python3",
        "--nbval-sanitize-with", str(SANITIZE),
    ]  # fmt: skip
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    finally:
        LocalStack(lab_dir).down()  # whatever the notebook started
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
