"""The workbook: its conventions, navigation and student edition (lab_helpers.workbook), its
exercises (lab_helpers.exercises and lab_helpers.answers), and what a reader meets in the
committed notebooks.

Most rules here apply to the notebooks that follow the workbook's full rules, through ONE
explicit list: ``lab_helpers.exercises.MODULES`` (every notebook, 00 to 06; tests/test_notebooks.py
keeps it complete), read by ``workbook.converted()``. For those notebooks:

- every exercise, run in a real kernel against a stack of its own, says ⛔ on the learner's
  starting point, ⛔ on each plausible wrong answer it declares (with the feedback it
  declares), ✅ on the solution, and ✅ again when every checker is run once more, in
  reverse order;
- the student edition holds no line of any solution, and no hint holds one either;
- the word budgets, and the pace table of docs/teaching.md;
- the committed outputs: no frozen progress bar, temporary path, stderr, error, bare
  boolean, empty list item or overlong output; every figure with a static image, which an
  HTML rendering of notebook 04 shows.

tests/test_nbval.py compares the committed outputs with a fresh run.
"""

import base64
import re
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lab_helpers import exercises as exercises_module
from lab_helpers import workbook
from lab_helpers.errors import LabError
from lab_helpers.exercises import (
    FAIL,
    OK,
    Exercise,
    WrongAnswer,
    check_exercise,
    exercises,
    multiple_choice,
)
from lab_helpers.stack import LocalStack

from .conftest import require_servers

NOTEBOOKS = workbook.notebooks()
CONVERTED = workbook.converted()


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
            f'from lab_helpers.exercises import check_exercise\n\ncheck_exercise("{number}.1")',
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
    for number, title in (("10", "Start"), ("11", "Middle"), ("12", "End")):
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
        "[← 10 · Start](10_start.ipynb) | [Contents](../README.md#notebooks) | "
        "[12 · End →](12_end.ipynb)"
    )
    assert workbook.badge("11_middle.ipynb") in middle.cells[0].source
    assert "?urlpath=lab/tree/notebooks/11_middle.ipynb" in workbook.binder_url("11_middle.ipynb")
    first = nbformat.read(paths[0], as_version=4).cells[1].source
    assert first.startswith("[Contents]") and "←" not in first
    for path in paths:
        assert problems_of(path, folder) == []


def test_a_new_notebook_makes_the_navigation_stale_until_nav_runs(folder):
    nbformat.write(lesson("13", "Extra"), folder / "13_extra.ipynb")
    last = folder / "12_end.ipynb"
    assert any("stale" in p for p in problems_of(last, folder))
    assert set(workbook.nav(folder)) == {last, folder / "13_extra.ipynb"}
    assert "[13 · Extra →](13_extra.ipynb)" in nbformat.read(last, as_version=4).cells[1].source
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
    path = folder / "11_middle.ipynb"
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


# -- the exercises of the converted notebooks ------------------------------------------------


def test_the_converted_list_names_existing_notebooks():
    assert [p.name[:2] for p in CONVERTED] == list(workbook.converted_numbers())


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_every_exercise_is_declared_in_full(path):
    declared = exercises(path.name[:2])
    assert len(declared) >= 2
    answers = [ex.answer for ex in declared]
    assert len(set(answers)) == len(answers), "each exercise has its own answer variable"
    for ex in declared:
        assert ex.wrong, f"{ex.key} declares no plausible wrong answer"
        assert ex.hint and ex.writes and ex.checked_by and ex.minutes > 0, ex.key
        assert all(w.says for w in ex.wrong.values()), f"{ex.key}: say what each wrong one gets"
        solution = workbook.solution(ex.key)
        for label, wrong in ex.wrong.items():
            assert wrong.cell(solution) != solution, f"{ex.key} {label}: the solution itself"


def test_a_declaration_with_an_unknown_field_or_checker_is_a_sentence():
    entry = {"title": "t", "verify": "verify_growth", "minutes": 1, "hint": "h", "writes": "w",
             "checked_by": "c", "wrong": {"w": {"code": "x = 1\n", "says": "no"}}}  # fmt: skip
    assert exercises_module._declared("00.9", entry).verify.__name__ == "verify_growth"
    with pytest.raises(LabError, match="unknown field 'hnit'"):
        exercises_module._declared("00.9", {**entry, "hnit": "h"})
    with pytest.raises(LabError, match="`verify` names no function"):
        exercises_module._declared("00.9", {**entry, "verify": "verify_growht"})
    with pytest.raises(LabError, match="00.9: TypeError: .*'hint'"):
        exercises_module._declared("00.9", {k: v for k, v in entry.items() if k != "hint"})
    with pytest.raises(LabError, match="00.9: ValueError: .*either"):
        exercises_module._declared("00.9", {**entry, "wrong": {"w": {"says": "no"}}})
    with pytest.raises(LabError, match="numbered 99, not one"):
        workbook.solution("99.1")
    for broken, says in (
        ({**entry, "minutes": "5"}, "minutes: '5' is not what the field takes"),
        ({**entry, "hint": True}, "hint: True is not"),
        ({**entry, "wrong": {"w": {"code": "x = 1\n", "sayz": "no"}}},
         "wrong answer 'w': unknown field 'sayz'"),
        ({**entry, "wrong": {"w": {"edit": {"a": 1}, "says": "no"}}},
         "wrong answer 'w': edit: .* is not"),
        ({"title": "t", "answer": "pick", "choice": {"correct": "a", "asks": "q",
          "feedback": {"b": "no"}}, "minutes": 1, "hint": "h", "optional": True,
          "wrong": {"w": {"pick": "b", "says": "no"}}}, "unknown field 'optional'"),
    ):  # fmt: skip
        with pytest.raises(LabError, match=f"exercise 00.9: {says}"):
            exercises_module._declared("00.9", broken)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('"00.1":\n  title: a\n"00.1":\n  title: b\n', "'00.1' is given twice"),
        ("00.1:\n  title: a\n", "0.1 is not an exercise key"),
        ('"99.1":\n  title: a\n', "'99.1' is not an exercise key"),
        ('"00.1":\n', "exercise 00.1: its fields are missing"),
        ('"00.1": [\n', "is not valid YAML"),
    ],
)
def test_a_broken_declarations_file_is_one_sentence(text, says, tmp_path, monkeypatch, capsys):
    declarations = tmp_path / "exercises.yaml"
    declarations.write_text(text)
    monkeypatch.setattr(exercises_module, "DECLARATIONS", declarations)
    exercises_module._entries.cache_clear()
    exercises_module._exercises.cache_clear()
    try:
        with pytest.raises(LabError, match=says):
            exercises("00")
        check_exercise("00.1")  # in a notebook: the same sentence, not a traceback
        assert capsys.readouterr().out.startswith(f"{FAIL} ")
    finally:
        exercises_module._entries.cache_clear()
        exercises_module._exercises.cache_clear()


def test_a_wrong_answer_is_code_or_an_edit_of_the_solution_found_once():
    solution = 'hourly = "avg(x) FROM readings"\n'
    assert WrongAnswer(edit={"avg(": "max("}).cell(solution) == 'hourly = "max(x) FROM readings"\n'
    assert WrongAnswer("hourly = 1\n").cell(solution) == "hourly = 1\n"
    with pytest.raises(ValueError, match="0 times"):
        WrongAnswer(edit={"min(": "max("}).cell(solution)  # the solution changed: say so
    with pytest.raises(ValueError, match="2 times"):
        WrongAnswer(edit={"r": "R"}).cell(solution)
    with pytest.raises(ValueError, match="either"):
        WrongAnswer("x = 1\n", edit={"avg(": "max("})


def code_lines(source: str) -> list[str]:
    """The code lines of a cell, each with its white space folded; comments (whole lines, and
    the ``  # ...`` ending a line), docstrings and blank lines left out."""
    lines = []
    for line in source.splitlines():
        text = " ".join(line.split("  # ")[0].split())
        if text and not text.startswith(('"' * 3, "'" * 3, "#")):
            lines.append(text)
    return lines


def distinctive_lines(solution: str, start: str) -> list[str]:
    """The lines of a solution that its starting cell does not have: what the learner writes.
    Lines shorter than 8 characters (``try:``, ``)``) say nothing of the answer."""
    given = set(code_lines(start))
    return [line for line in code_lines(solution) if line not in given and len(line) >= 8]


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def token_runs(text: str, size: int = 6) -> set[tuple[str, ...]]:
    words = tokens(text)
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_the_student_edition_holds_no_solution(path, tmp_path):
    reference = nbformat.read(path, as_version=4)
    student = nbformat.read(workbook.student(tmp_path, path.parent)[NOTEBOOKS.index(path)], 4)
    student_lines = {line for cell in student.cells for line in code_lines(cell.source)}
    # Every cell as its tokens: spacing or a line break cannot hide a copied line.
    student_text = f" {' '.join(tokens(' '.join(cell.source for cell in student.cells)))} "
    groups, _ = workbook.exercise_groups(reference.cells)
    assert groups
    for at, ex in zip(groups, exercises(path.name[:2])):
        start, solution = reference.cells[at + 1].source, reference.cells[at + 2].source
        secret = distinctive_lines(solution, start)
        assert secret, f"{ex.key}: the solution adds nothing to the starting cell"
        leaked = [line for line in secret if line in student_lines]
        assert not leaked, f"{ex.key}: the student edition shows {leaked}"
        leaked = [line for line in secret if f" {' '.join(tokens(line))} " in student_text]
        assert not leaked, f"{ex.key}: the student edition shows {leaked}"
        # The hint and the task: not even a run of six tokens of what the learner writes.
        written = set().union(*(token_runs(line) for line in secret))
        for where, text in (("hint", ex.hint), ("task", reference.cells[at].source)):
            shared = written & token_runs(text)
            assert not shared, f"{ex.key}: the {where} holds {' '.join(next(iter(shared)))}"


def test_distinctive_lines_ignore_the_given_skeleton():
    start = "def f(x):\n    todo('00.1')  # your code\n    return result\n"
    solution = "def f(x):\n    result = sorted(x)[-3:]\n    return result\n"
    assert distinctive_lines(solution, start) == ["result = sorted(x)[-3:]"]


# -- a real kernel: every checker on the empty, the wrong and the right answer ---------------

TRIAL = "trial"  # metadata key of the cells a trial run adds


def trial_notebook(path) -> nbformat.NotebookNode:
    """The notebook with, for each exercise, its checker run on the learner's starting point
    and after each declared wrong answer (⛔ expected), then after the solution (✅), and, after
    the last exercise, every checker once more in reverse order (✅)."""
    nb = nbformat.read(path, as_version=4)
    groups, _ = workbook.exercise_groups(nb.cells)
    declared = exercises(path.name[:2])
    checker_of = {ex.key: nb.cells[at + 3].source for at, ex in zip(groups, declared)}
    by_solution = {at + 2: ex for at, ex in zip(groups, declared)}
    last_checker = groups[-1] + 3
    cells = []

    def trial(source, expect, what, says=""):
        cell = new_code_cell(source)
        cell.metadata[TRIAL] = {"expect": expect, "what": what, "says": says}
        cells.append(cell)

    for i, cell in enumerate(nb.cells):
        ex = by_solution.get(i)
        if ex is not None:
            trial(checker_of[ex.key], FAIL, f"{ex.key} unanswered")
            for label, wrong in ex.wrong.items():
                cells.append(new_code_cell(wrong.cell(cell.source)))
                trial(checker_of[ex.key], FAIL, f"{ex.key} {label}", wrong.says)
        cells.append(cell)
        if i == last_checker:
            for ex in reversed(declared):
                trial(checker_of[ex.key], OK, f"{ex.key} run again")
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"trial-{i}"
    return nb


def test_a_trial_notebook_tries_every_declared_answer():
    for path in CONVERTED:
        nb = trial_notebook(path)
        trials = [c.metadata[TRIAL] for c in nb.cells if TRIAL in c.metadata]
        declared = exercises(path.name[:2])
        wanted = sum(2 + len(ex.wrong) for ex in declared)  # unanswered, wrong ones, again
        assert len(trials) == wanted
        assert [t["what"] for t in trials if t["expect"] == OK] == [
            f"{ex.key} run again" for ex in reversed(declared)
        ]


def trial_outcomes(executed) -> list[str]:
    """What went wrong in an executed trial notebook, one line each ([] if nothing)."""
    problems = []
    for cell in executed.cells:
        text = "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream"
        )
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if errors:
            problems.append(f"{cell.source[:60]!r} raised {errors[0].ename}: {errors[0].evalue}")
        trial = cell.metadata.get(TRIAL)
        if trial is None:
            if FAIL in text:
                problems.append(f"a step failed: {text.strip()[:200]}")
            continue
        lines = text.splitlines()
        others = [o for o in cell.outputs if o.output_type != "stream"]
        if len(lines) != 1 or others or not lines[0].startswith(trial["expect"]):
            problems.append(f"{trial['what']}: expected one {trial['expect']} line, got {text!r}")
        elif trial["says"] not in lines[0]:
            problems.append(
                f"{trial['what']}: the feedback does not say {trial['says']!r}: {lines[0]}"
            )
    return problems


@pytest.mark.integration
@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_every_checker_on_the_empty_the_wrong_and_the_right_answer(path, tmp_path):
    """One run of the whole notebook in a real kernel against a local stack of its own: the
    trials above, every step check ✅, no error, no secret printed."""
    require_servers()
    copy = tmp_path / path.name
    nbformat.write(trial_notebook(path), copy)
    lab = LocalStack(tmp_path / "lab")
    try:
        result = workbook.run_notebook(copy, tmp_path / "out", lab_dir=lab.lab_dir,
                                       static_images=False)  # fmt: skip
    finally:
        lab.down()
    executed = nbformat.read(result.output, as_version=4)
    problems = trial_outcomes(executed)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
    text = nbformat.writes(executed)
    for role in ("admin", "ingest", "reader"):
        assert lab.settings.credentials(role).password not in text, "a secret leaked"


def test_trial_outcomes_catch_a_checker_that_passes_a_wrong_answer():
    cells = [new_code_cell("x = 1"), new_code_cell("check"), new_code_cell("check")]
    cells[1].metadata[TRIAL] = {"expect": FAIL, "what": "00.1 wrong", "says": "too small"}
    cells[2].metadata[TRIAL] = {"expect": FAIL, "what": "00.1 other", "says": "too big"}
    cells[1].outputs = [new_output("stream", name="stdout", text=f"{OK} Exercise 00.1\n")]
    cells[2].outputs = [new_output("stream", name="stdout", text=f"{FAIL} Exercise 00.1: hm\n")]
    problems = trial_outcomes(new_notebook(cells=cells))
    assert len(problems) == 2 and "expected one ⛔" in problems[0] and "too big" in problems[1]


# -- the pace ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_word_budgets(path):
    words = workbook.markdown_words(nbformat.read(path, as_version=4).cells)
    assert sum(words) <= workbook.WORDS_PER_NOTEBOOK, f"{sum(words)} words of markdown"
    assert max(words) <= workbook.WORDS_PER_CELL, f"cell {words.index(max(words)) + 1}"


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_the_header_time_is_reading_and_the_core_exercises(path):
    (row,) = [r for r in workbook.pace() if r.notebook == path.stem]
    assert row.time_needed == workbook.time_needed(row.core_minutes), (
        f"the header says {row.time_needed} minutes, the core path takes {row.core_minutes:.0f}"
    )


def test_the_core_path_fits_the_workshop():
    """00 to 06 in local mode, reading and the exercises that are not "if time allows"."""
    rows = workbook.pace(every=True)
    assert [r.notebook[:2] for r in rows] == [f"{n:02d}" for n in range(7)]
    total = sum(r.core_minutes for r in rows)
    assert total <= workbook.CORE_PATH_MINUTES, f"{total:.0f} minutes"
    assert sum(r.time_needed for r in rows) <= workbook.CORE_PATH_MINUTES + 5


def test_an_optional_exercise_says_so_and_only_then(tmp_path):
    path = next(p for p in CONVERTED if any(e.optional for e in exercises(p.name[:2])))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and workbook.IF_TIME_ALLOWS in cell.source:
            cell.source = cell.source.replace(workbook.IF_TIME_ALLOWS, "")
    copy = tmp_path / path.name
    nbformat.write(nb, copy)
    problems = workbook.check_notebook(copy, paths=[copy])
    assert any("if time allows" in p for p in problems), problems


def test_the_teaching_notes_show_the_current_pace_and_exercises():
    text = workbook.TEACHING_NOTES.read_text()
    assert workbook.teaching_notes(text) == text, (
        "the tables of docs/teaching.md are stale: run `python -m lab_helpers.workbook notes`"
    )
    for number in workbook.converted_numbers():
        for ex in exercises(number):
            assert f"| {ex.key} {ex.title} |" in text


def test_words_are_counted_as_a_reader_meets_them():
    assert workbook.count_words("A [link](https://example.org/a/b) and `code` <b>bold</b> - x") == 6


# -- what a reader meets in the committed outputs ---------------------------------------------

MAX_OUTPUT_LINES = 40
FROZEN_BAR = re.compile(r"\d+%\|[^\n|]*\|\s*\d+/\d+")
TEMPORARY = re.compile(r"/tmp/|/var/folders/|lab-run-|lab-refresh-|ipykernel_\d+")
BULLET_ONLY = re.compile(r"^\s*[-*•]\s*$")
DANGLING = re.compile(r"(:|=|,|\bto|\bfor|\bof|\bwith)\s*$")


def output_problems(nb) -> list[str]:
    """What a reader should not see in the saved outputs of ``nb``."""
    problems = []
    for i, cell in enumerate(nb.cells):
        where = f"cell {i + 1}"
        for out in cell.get("outputs", []):
            kind = out.output_type
            data = out.get("data", {})
            if kind == "error":
                problems.append(f"{where}: an error ({out.ename})")
            if kind == "stream" and out.name == "stderr":
                problems.append(f"{where}: text on stderr (a warning?): {out.text[:80]!r}")
            if "application/vnd.jupyter.widget-view+json" in data:
                problems.append(
                    f"{where}: a widget (a progress bar?) that a saved file cannot show"
                )
            text = out.get("text", "") if kind == "stream" else str(data.get("text/plain", ""))
            if kind == "execute_result" and text.strip() in (
                "True",
                "False",
                "np.True_",
                "np.False_",
            ):
                problems.append(f"{where}: a bare {text.strip()}")
            if FROZEN_BAR.search(text):
                problems.append(f"{where}: a progress bar frozen at {FROZEN_BAR.search(text)[0]!r}")
            if TEMPORARY.search(text):
                problems.append(f"{where}: a temporary path ({TEMPORARY.search(text)[0]!r})")
            lines = text.splitlines()
            if len(lines) > MAX_OUTPUT_LINES:
                problems.append(f"{where}: {len(lines)} lines of output")
            for at, line in enumerate(lines):
                after = lines[at + 1].strip() if at + 1 < len(lines) else ""
                if BULLET_ONLY.match(line) or (DANGLING.search(line) and not after):
                    problems.append(f"{where}: an item with nothing after it: {line.strip()!r}")
    return problems


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_the_committed_outputs_are_fit_to_read(path):
    problems = output_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize(
    "output, problem",
    [
        (
            new_output("stream", name="stdout", text="loading:   0%|          | 0/11 [00:00<?]"),
            "frozen",
        ),
        (new_output("stream", name="stdout", text="logs in /tmp/lab-run-x1/logs\n"), "temporary"),
        (new_output("stream", name="stderr", text="UserWarning: careful\n"), "stderr"),
        (new_output("execute_result", data={"text/plain": "True"}, execution_count=1), "bare True"),
        (
            new_output("stream", name="stdout", text="default-deny-ingress applies to\n"),
            "nothing after",
        ),
        (new_output("stream", name="stdout", text="- one\n-\n"), "nothing after"),
        (new_output("stream", name="stdout", text="x\n" * 41), "41 lines"),
        (
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {}}),
            "widget",
        ),
    ],
)
def test_the_output_scan_finds_each_class(output, problem):
    nb = new_notebook(cells=[new_code_cell("x")])
    nb.cells[0].outputs = [output]
    found = output_problems(nb)
    assert any(problem in p for p in found), found


def test_the_output_scan_passes_plain_results():
    nb = new_notebook(cells=[new_code_cell("x")])
    nb.cells[0].outputs = [
        new_output(
            "stream", name="stdout", text="✅ every tick arrived\nretry: 3000\n: connected\n"
        ),
        new_output("execute_result", data={"text/plain": "   a  b\n0  1  2"}, execution_count=1),
    ]
    assert output_problems(nb) == []


def figures(nb) -> list[dict]:
    return [
        out.data
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if workbook.PLOTLY_MIME in out.get("data", {})
    ]


@pytest.mark.parametrize("path", CONVERTED, ids=[p.stem for p in CONVERTED])
def test_every_committed_figure_has_a_static_image(path):
    found = figures(nbformat.read(path, as_version=4))
    assert found, f"{path.name} has no figure"
    for data in found:
        assert workbook.STATIC_MIME in data, "a figure without its PNG: run `workbook refresh`"
        png = base64.b64decode(data[workbook.STATIC_MIME])
        assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_notebook_04_rendered_to_html_shows_its_figures():
    from nbconvert import HTMLExporter

    (path,) = workbook.notebooks(["04"])
    nb = nbformat.read(path, as_version=4)
    html, _ = HTMLExporter().from_notebook_node(nb)
    shown = html.count('src="data:image/png;base64,')
    assert shown == len(figures(nb)) >= 5


def test_a_run_adds_the_static_image_beside_the_interactive_figure():
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium here for kaleido: scripts/setup.sh browser installs it")
    import plotly.graph_objects as go

    figure = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2])).to_plotly_json()
    nb = new_notebook(cells=[new_code_cell("fig.show()")])
    nb.cells[0].outputs = [new_output("display_data", data={workbook.PLOTLY_MIME: figure})]
    assert workbook.add_static_images(nb) == 1
    data = nb.cells[0].outputs[0].data
    assert workbook.PLOTLY_MIME in data and base64.b64decode(data["image/png"]).startswith(
        b"\x89PNG"
    )


# -- the checkers' building blocks --------------------------------------------------------------


def test_a_check_prints_one_line_and_returns_nothing(capsys):
    from lab_helpers.exercises import check

    assert check(True, "it works") is None
    assert check(lambda: 1 / 0, "it divides", "divide by something else") is None
    assert capsys.readouterr().out.splitlines() == [
        f"{OK} it works",
        f"{FAIL} it divides (ZeroDivisionError: division by zero): divide by something else",
    ]


def test_a_checker_answers_a_sentence_whatever_the_notebook_holds():
    from lab_helpers.exercises import _verdict, exercise, todo

    corr, returns = exercise("04.3"), exercise("04.1")
    start = {"START": "2018-01-01"}
    assert "`btc_gold_corr` is not defined yet" in _verdict(corr, start)
    assert "run the cells above first (START" in _verdict(corr, {"btc_gold_corr": 0.1})
    assert _verdict(corr, {**start, "btc_gold_corr": ...}) == "not answered yet"
    assert "one number, not a str" in _verdict(corr, {**start, "btc_gold_corr": "0.1"})
    assert "correlation" in _verdict(corr, {**start, "btc_gold_corr": 0.5})

    def unfinished(prices):
        todo("04.1")

    assert "not done yet" in _verdict(returns, {"log_returns": unfinished})
    failing = {"log_returns": lambda prices: prices["missing"]}
    assert "your code raised KeyError" in _verdict(returns, failing)


def test_multiple_choice_and_short_answers_give_feedback():
    from lab_helpers.exercises import Wrong, choice, short_answer

    pick = choice("c", {"a": "a loses what is published while it is away"}, ("a", "b", "c"))
    pick("c")
    pick(" C ")
    for answer, says in (("a", "away"), ("b", "not this one"), ("z", "one letter"), (3, "letter")):
        with pytest.raises(Wrong, match=says):
            pick(answer)
    words = short_answer(["at least once"], {"exactly once": "the broker cannot promise that"})
    words("At least once.")
    with pytest.raises(Wrong, match="cannot promise"):
        words("exactly once")
    with pytest.raises(Wrong, match="not this one"):
        words("at most once")


def test_an_exercise_takes_its_answer_and_uses_from_its_checker_s_parameters():
    def verify(my_answer, DATA, START):  # noqa: N803 - named after the notebook's names
        pass

    ex = Exercise(
        key="99.1", title="t", verify=verify, hint="h", writes="w", checked_by="c", minutes=1
    )
    assert (ex.answer, ex.uses) == ("my_answer", ("DATA", "START"))
    picked = multiple_choice(
        "99.2", "t", "pick", correct="a", feedback={"b": "no"}, hint="h", asks="q",
        wrong={"b": ("b", "no")}, options=("a", "b"),
    )  # fmt: skip
    assert (picked.answer, picked.uses) == ("pick", ())
    assert picked.wrong["b"].code == 'pick = "b"\n'
