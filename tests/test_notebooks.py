"""Every notebook runs top to bottom, headless, against a real local stack of its own.

The notebooks converted to the workbook's full rules (``workbook.converted()``, the one list
in ``lab_helpers.answers.MODULES``) run in tests/test_workbook.py instead, in the same run
that tries every exercise's checker on the empty, the wrong and the right answer; the others
run here.
"""

import nbformat
import pytest

from lab_helpers import workbook
from lab_helpers.stack import LocalStack

from .conftest import require_servers

NOTEBOOKS = workbook.notebooks()
CONVERTED = workbook.converted()
PLAIN = [p for p in NOTEBOOKS if p not in CONVERTED]


def outputs_text(path) -> str:
    """All the text a run printed or displayed (not the notebook's own sources)."""
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
            parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def test_there_is_a_workbook():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", PLAIN, ids=[p.stem for p in PLAIN])
def test_notebook_runs(path, tmp_path):
    # A stack of its own, from nothing: the notebook has to start all it needs, and notebook
    # 06, which stops every process of its stack, cannot stop the servers other tests share.
    require_servers()
    lab = LocalStack(tmp_path / "lab")
    try:
        result = workbook.run_notebook(
            path, tmp_path / "out", lab_dir=lab.lab_dir, static_images=False
        )
    finally:
        lab.down()  # whatever the notebook started (06 leaves nothing to stop)
    assert result.ok, f"{path.name} failed at {result.error}"
    text = outputs_text(result.output)
    assert "✅" in text and "⛔" not in text, "a step check failed"
    for role in ("admin", "ingest", "reader"):
        assert lab.settings.credentials(role).password not in text, "a secret leaked"
