"""The committed notebook outputs are what a fresh run gives.

nbval re-runs a copy of each notebook, against a local stack of its own, and compares every
cell's output with the committed one. Every notebook follows the workbook's full rules (the
one list in ``lab_helpers.exercises.MODULES``): tests/test_workbook.py tries each exercise's
checker on the empty, the wrong and the right answers, so the copy here is the notebook as
it is.

What legitimately differs between two runs (ports, process ids, uuids...) is sanitized by
``tests/nbval_sanitize.cfg``; cells whose output changes from run to run (times, live data,
figures of live data) carry the tag ``nbval-ignore-output``. After changing a notebook,
``python -m lab_helpers.workbook refresh NN`` writes its new reference outputs.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lab_helpers import workbook
from lab_helpers.stack import LocalStack

from .conftest import require_servers

NOTEBOOKS = workbook.notebooks()
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


def has_outputs(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_match_a_fresh_run(path, tmp_path):
    assert has_outputs(path), (
        f"{path.name} has no committed outputs: run `python -m lab_helpers.workbook refresh "
        f"{path.name[:2]}`"
    )
    require_servers()
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
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
