"""Every notebook runs top to bottom, headless, against a real local stack."""

import nbformat
import pytest

from lab_helpers import workbook
from lab_helpers.stack import APPS

NOTEBOOKS = workbook.notebooks()


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, stack, tmp_path, monkeypatch):
    # The kernel inherits LAB_DIR, so the notebook uses the test stack, not the learner's .lab/.
    monkeypatch.setenv("LAB_DIR", str(stack.lab_dir))
    try:
        result = workbook.run_notebook(path, tmp_path)
    finally:
        # The notebooks start the services; stop them so they do not outlive the test.
        stack.down(only=list(APPS))
    assert result.ok, f"{path.name} failed at {result.error}"
    text = outputs_text(result.output)
    assert "✅" in text and "⛔" not in text, "a step check failed"
    for role in ("admin", "ingest", "reader"):
        assert stack.settings.credentials(role).password not in text, "a secret leaked"
