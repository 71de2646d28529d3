"""The learner's path in a real browser: ``make lab`` exactly as a learner types it, then
JupyterLab in headless Chromium (the steps are in ``tests/jupyterlab.py``): notebook 00 opened
from the file browser and run from the menu, without an error and with its plotly chart, and
the dashboard through Jupyter's proxy, inline and from the launcher tile, with its live charts
growing. On a failure, screenshots of every page go to ``build/test-results/<test>/``.

The lab's state lives in a temporary ``LAB_DIR`` (never your ``.lab/``), Jupyter's settings in
a temporary ``JUPYTER_CONFIG_DIR``; the notebook file in the repository is not changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from lab_helpers.stack import LocalStack

from .browser import output_dir, require_browser
from .conftest import require_servers
from .jupyterlab import NOTEBOOK, follow_the_learner

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(600)
def test_make_lab_then_the_learner_s_path_in_a_browser(tmp_path, request):
    require_servers()
    require_browser()
    if shutil.which("make") is None:
        pytest.skip("make is not installed (apt-get install make)")
    notebook = ROOT / "notebooks" / NOTEBOOK
    before = digest(notebook)
    lab_dir = tmp_path / "lab"
    env = {**os.environ, "LAB_DIR": str(lab_dir)}
    # `make lab`, in the environment running these tests (.venv under `make test`).
    command = ["make", "--no-print-directory", "lab", f"VENV={sys.prefix}"]
    try:
        seen = follow_the_learner(
            command, cwd=ROOT, env=env, config_dir=tmp_path / "jupyter", lab_dir=lab_dir,
            results=output_dir(request),
        )  # fmt: skip
        print(f"the learner's path after `make lab`: {seen}")
    finally:
        LocalStack(lab_dir).down()  # what `make lab` started
    assert digest(notebook) == before, f"{notebook.name} was written by the test"
