"""The workbook's conventions, navigation and student edition (lab_helpers.workbook).

That each checker prints ⛔ for the learner's unanswered starting point and ✅ after the
solution is checked in a real kernel by tests/test_nbval.py, in the same run that compares the
committed outputs.
"""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lab_helpers import workbook
from lab_helpers.exercises import FAIL

NOTEBOOKS = workbook.notebooks()


def tags(cell) -> list[str]:
    return workbook.tags(cell)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_conventions(path):
    problems = workbook.check_notebook(path, NOTEBOOKS)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_the_workbook_has_its_notebooks_in_order():
    names = [p.name for p in NOTEBOOKS]
    for expected in ("00_welcome_and_setup", "01_microservices_and_containers",
                     "02_kubernetes_on_aks", "06_teardown_and_costs"):  # fmt: skip
        assert f"{expected}.ipynb" in names
    assert names == sorted(names) and names[-1] == "06_teardown_and_costs.ipynb"


# -- a small workbook of our own, to break on purpose ---------------------------------------


def lesson(number: str, title: str) -> nbformat.NotebookNode:
    """A minimal notebook that follows every convention (once `nav` has run)."""
    cells = [
        new_markdown_cell(
            f"# {number} · {title}\n\n*One line of scope.*\n\n**What you will learn**\n"
            "- one thing\n\n**Time needed:** about 5 minutes.",
            metadata={"tags": ["header"]},
        ),
        new_code_cell("LIMIT = 3", metadata={"tags": ["parameters"]}),
        new_code_cell("from lab_helpers.workbook import setup\n\nversions = setup()"),
        new_code_cell("numbers = list(range(LIMIT))"),
        new_markdown_cell("## Summary\n\n- counting"),
        new_markdown_cell("Sum `numbers` into `total`.", metadata={"tags": ["exercise"]}),
        new_code_cell("total = ...  # your code here", metadata={"tags": ["exercise"]}),
        new_code_cell("total = sum(numbers)", metadata={"tags": ["solution"]}),
        new_code_cell(
            "from lab_helpers.exercises import check_exercise\n\n\n"
            "def test_total():\n    assert total == LIMIT * (LIMIT - 1) // 2\n\n\n"
            "check_exercise(test_total, 'the total', 'sum(numbers)')",
            metadata={"tags": ["checker"]},
        ),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": dict(workbook.KERNELSPEC)})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{number}-{i}"
    return nb


@pytest.fixture
def folder(tmp_path):
    """Three lessons, with their navigation written."""
    for number, title in (("00", "Start"), ("01", "Middle"), ("02", "End")):
        nbformat.write(lesson(number, title), tmp_path / f"{number}_{title.lower()}.ipynb")
    workbook.nav(tmp_path)
    return tmp_path


def problems_of(path, folder) -> list[str]:
    return workbook.check_notebook(path, workbook.notebooks(folder=folder))


def test_nav_writes_links_badges_and_is_idempotent(folder):
    paths = workbook.notebooks(folder=folder)
    texts = {p: p.read_text() for p in paths}
    assert workbook.nav(folder) == [] and {p: p.read_text() for p in paths} == texts
    middle = nbformat.read(paths[1], as_version=4)
    top, bottom = middle.cells[1], middle.cells[-1]
    assert tags(top) == tags(bottom) == ["navigation"] and top.source == bottom.source
    assert top.source == (
        "[← 00 · Start](00_start.ipynb) | [Contents](../README.md#notebooks) | "
        "[02 · End →](02_end.ipynb)"
    )
    assert workbook.badge("01_middle.ipynb") in middle.cells[0].source
    assert "?urlpath=lab/tree/notebooks/01_middle.ipynb" in workbook.binder_url("01_middle.ipynb")
    first = nbformat.read(paths[0], as_version=4).cells[1].source
    assert first.startswith("[Contents]") and "←" not in first
    for path in paths:
        assert problems_of(path, folder) == []


def test_a_new_notebook_makes_the_navigation_stale_until_nav_runs(folder):
    nbformat.write(lesson("03", "Extra"), folder / "03_extra.ipynb")
    last = folder / "02_end.ipynb"
    assert any("stale" in p for p in problems_of(last, folder))
    assert set(workbook.nav(folder)) == {last, folder / "03_extra.ipynb"}
    assert "[03 · Extra →](03_extra.ipynb)" in nbformat.read(last, as_version=4).cells[1].source
    assert problems_of(last, folder) == []


@pytest.mark.parametrize(
    "breakage, problem",
    [
        (lambda nb: nb.cells[2].metadata.pop("tags"), "tagged 'parameters'"),
        (lambda nb: nb.cells.pop(3), "versions = setup()"),
        (lambda nb: nb.cells.pop(9), "'exercise', 'solution' and 'checker'"),
        (
            lambda nb: setattr(
                nb.cells[0], "source", nb.cells[0].source.replace("about 5 minutes", "a while")
            ),
            "Time needed",
        ),  # fmt: skip
        (lambda nb: setattr(nb.cells[0], "source", "# 09 · Wrong\n\n*scope*"), "'# NN · Title'"),
        (lambda nb: nb.cells.insert(6, new_code_cell("1 + 1")), "only exercises may have code"),
        (lambda nb: nb.metadata.update(papermill={"duration": 1.0}), "run timings"),
        (
            lambda nb: nb.cells[4].outputs.append(
                nbformat.v4.new_output("stream", text=f"{FAIL} a step failed")
            ),
            "failed check",
        ),
    ],  # fmt: skip
)
def test_check_names_each_broken_convention(folder, breakage, problem):
    path = folder / "01_middle.ipynb"
    nb = nbformat.read(path, as_version=4)
    breakage(nb)
    nbformat.write(nb, path)
    found = problems_of(path, folder)
    assert any(problem in p for p in found), found


def test_command_line_check_and_usage(folder, monkeypatch, capsys):
    monkeypatch.setattr(workbook, "NOTEBOOK_DIR", folder)
    assert workbook.main(["check"]) == 0
    assert capsys.readouterr().out.count("✅") == 3
    assert workbook.main(["frobnicate"]) == 2


# -- the student edition ---------------------------------------------------------------------


def test_student_edition_has_no_solutions_and_no_outputs(tmp_path):
    written = workbook.student(tmp_path / "student")
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    for reference, edition in zip(NOTEBOOKS, written):
        ref = nbformat.read(reference, as_version=4)
        nb = nbformat.read(edition, as_version=4)
        assert not [c for c in nb.cells if "solution" in tags(c)]
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code")  # fmt: skip
        kept = [c.source for c in ref.cells if "solution" not in tags(c)]
        assert [c.source for c in nb.cells] == kept  # everything else, in order
        checkers = [c for c in nb.cells if "checker" in tags(c)]
        assert checkers and len(checkers) == len(
            [c for c in nb.cells if "exercise" in tags(c) and c.cell_type == "code"]
        )


def test_clean_metadata_keeps_outputs_but_not_timings():
    nb = lesson("00", "Start")
    nb.metadata["papermill"] = {"duration": 3.2}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    nb.cells[3].metadata.update(papermill={"duration": 0.1}, execution={"x": 1}, tags=[])
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="kept")]
    nb.cells[3].execution_count = 4
    cleaned = workbook.clean_metadata(nb)
    assert "papermill" not in cleaned.metadata and cleaned.metadata["language_info"] == {
        "name": "python"
    }
    assert dict(cleaned.cells[3].metadata) == {} and cleaned.cells[3].outputs[0].text == "kept"
    bare = workbook.clean_metadata(cleaned, keep_outputs=False)
    assert bare.cells[3].outputs == [] and bare.cells[3].execution_count is None
