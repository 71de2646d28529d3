"""The workbook's tooling: run the notebooks headless, keep them to the conventions, and make
the student edition.

Command line:

    python -m lab_helpers.workbook run              # every notebook, in order, into build/notebooks
    python -m lab_helpers.workbook run 00 03        # only the notebooks whose names start so
    python -m lab_helpers.workbook run 01 --mode kind   # with MODE = "kind": the cluster steps run
    python -m lab_helpers.workbook nav              # rewrite the badges and navigation cells
    python -m lab_helpers.workbook check            # does every notebook follow the conventions?
    python -m lab_helpers.workbook student          # the student edition, into build/student
    python -m lab_helpers.workbook refresh          # run them and commit the outputs to notebooks/
    python -m lab_helpers.workbook notes            # the tables of docs/teaching.md

Each notebook runs in its own fresh kernel, with the `notebooks/` folder as working
directory. The kernel is always `python3` (the environment's own), so notebook metadata never
decides which one runs. A headless run adds a static PNG copy to every plotly figure (kaleido
with the system's Chromium), so that GitHub, nbviewer and nbconvert show the charts;
JupyterLab keeps showing the interactive one.

The conventions every notebook `notebooks/NN_snake_case.ipynb` follows (`check` tests them):

1. a markdown cell tagged `header`: `# NN · Title`, the scope in italics, the Binder badge,
   **What you will learn** bullets and `**Time needed:** about N minutes`;
2. a markdown cell tagged `navigation` (written by `nav`: previous, contents, next);
3. the code cell tagged `parameters` (papermill replaces it when a run sets parameters);
4. the setup code cell (the first code cell after the parameters):
   `from lab_helpers.workbook import setup` and `versions = setup()`;
5. ... the lesson, with its exercises where they belong, each four cells: a markdown cell
   tagged `exercise` (the task), a code cell tagged `exercise` (the learner's starting
   point), a code cell tagged `solution` and a code cell tagged `checker` that calls
   `lab_helpers.exercises.check_exercise`; then a `## Summary` markdown cell (after it,
   only exercises may have code);
6. a last markdown cell tagged `navigation`.

The notebooks that have exercises (`lab_helpers.exercises.MODULES`: see
`converted`) follow the workbook's full rules too: each checker cell is exactly
`check_exercise("NN.k")` for the exercises declared there, in order; the exercise and
solution cells define the answer's name; at least two exercises; and the budgets of
`WORDS_PER_NOTEBOOK` and `WORDS_PER_CELL` words of markdown.

Cells whose output changes from run to run carry the tag `nbval-ignore-output`.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import project_root
from .errors import LabError, command_line

NOTEBOOK_DIR = project_root() / "notebooks"
BUILD_DIR = project_root() / "build" / "notebooks"
STUDENT_DIR = project_root() / "build" / "student" / "notebooks"

# The public repository the Binder badges launch. Set it to where the lab is published.
REPOSITORY = "https://github.com/k8s-data-lab/data-science-on-kubernetes"
BRANCH = "main"
BINDER_BADGE = "https://mybinder.org/badge_logo.svg"
CONTENTS = "../README.md#notebooks"

HEADER, NAVIGATION, PARAMETERS = "header", "navigation", "parameters"
EXERCISE, SOLUTION, CHECKER = "exercise", "solution", "checker"
IGNORE_OUTPUT = "nbval-ignore-output"
# The kernel every notebook names, and the language_info kept in the committed files.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}

NAME = re.compile(r"(\d\d)_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb")
TITLE = re.compile(r"# (\d\d) · (\S.*)")
TIME_NEEDED = re.compile(r"\*\*Time needed:\*\* about (\d+) minutes")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
STATIC_MIME = "image/png"
FIGURE_SIZE = (900, 500)  # pixels of a static figure whose layout sets no size
TEACHING_NOTES = project_root() / "docs" / "teaching.md"

# The pace of the workbook (notebooks that follow the full rules, see `converted`).
WORDS_PER_NOTEBOOK = 1_500
WORDS_PER_CELL = 200
WORDS_PER_MINUTE = 200  # reading speed of the pace table
# The workshop's core path: every notebook's reading and its exercises that are not optional,
# 00 to 06 in local mode, fits three hours. The header's "Time needed" is that sum per
# notebook, to the nearest 5 minutes.
CORE_PATH_MINUTES = 180
IF_TIME_ALLOWS = "*(if time allows)*"


def setup(min_python: tuple[int, int] = (3, 11)) -> dict[str, str]:
    """The first code cell of every notebook: check the versions the lab needs and print them.

    Returns the versions, so a notebook can show them in a table. A version too old is a
    ⛔ line saying what to do (the notebook keeps running, but results may differ).
    """
    import pandas as pd
    import plotly

    from . import __version__
    from .exercises import check

    versions = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "pandas": pd.__version__,
        "plotly": plotly.__version__,
        "lab_helpers": __version__,
    }
    check(
        sys.version_info[:2] >= min_python,
        f"Python {versions['python']}",
        f"the lab needs Python {'.'.join(map(str, min_python))} or newer: run `make lab`",
    )
    check(int(pd.__version__.split(".")[0]) >= 2, f"pandas {pd.__version__}", "needs pandas 2+")
    check(int(plotly.__version__.split(".")[0]) >= 6, f"plotly {plotly.__version__}", "needs 6+")
    return versions


def notebooks(prefixes: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (`NN_name.ipynb`), in order; optionally only those whose
    names start with one of `prefixes`."""
    folder = folder or NOTEBOOK_DIR
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
        if not found:
            raise LabError(f"no notebook starts with {', '.join(prefixes)}: see {folder}")
    return found


# -- running -------------------------------------------------------------------------------
@dataclass
class RunResult:
    """How one notebook run went."""

    notebook: str
    seconds: float
    error: str | None = None
    output: Path | None = None
    note: str = ""  # what the run could not do and is not an error (e.g. no static images)

    @property
    def ok(self) -> bool:
        return self.error is None


@contextlib.contextmanager
def _lab_dir(lab_dir: Path | str | None) -> Iterator[None]:
    """Point `LAB_DIR` (which the kernel inherits) at `lab_dir` for a while."""
    if lab_dir is None:
        yield
        return
    before = os.environ.get("LAB_DIR")
    os.environ["LAB_DIR"] = str(lab_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LAB_DIR", None)
        else:
            os.environ["LAB_DIR"] = before


def run_notebook(
    path: Path,
    output_dir: Path = BUILD_DIR,
    parameters: dict | None = None,
    timeout: int = 600,
    lab_dir: Path | str | None = None,
    static_images: bool = True,
) -> RunResult:
    """Execute one notebook with papermill; returns a `RunResult` (never raises on a
    failing cell: the error is in `result.error` and in the output notebook). A step check
    that printed ⛔ counts as a failure too. With `static_images`, every plotly figure of
    the output also gets a PNG copy (see `add_static_images`); when that is not
    possible here, `result.note` says why.

    `lab_dir` runs it against the local stack in that folder instead of `LAB_DIR`/`.lab`.
    """
    import papermill as pm

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    started = time.perf_counter()
    error = None
    try:
        with _lab_dir(lab_dir):
            pm.execute_notebook(
                str(path), str(out), parameters=parameters or {}, kernel_name="python3",
                cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
            )  # fmt: skip
    except pm.PapermillExecutionError as err:
        error = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    else:
        error = _failed_check(_read(out))
    note = ""
    if static_images and error is None:
        try:
            executed = _read(out)
            if add_static_images(executed):
                _save(executed, out)
        except LabError as err:
            note = str(err)
    return RunResult(path.name, time.perf_counter() - started, error, out, note)


def _figure_outputs(nb) -> list[dict]:
    return [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if PLOTLY_MIME in out.get("data", {})
    ]


def add_static_images(nb) -> int:
    """Give every plotly figure output of `nb` a PNG copy (`image/png`) beside its
    interactive JSON, drawn by kaleido with the system's Chromium: GitHub, nbviewer and
    nbconvert show the PNG, JupyterLab the interactive figure. Returns how many figures it
    drew; raises `LabError` with what to install when it cannot draw."""
    figures = _figure_outputs(nb)
    if not figures:
        return 0
    try:
        import kaleido
        import plotly.graph_objects as go
    except ImportError:
        raise LabError(
            "no static images: kaleido is missing (pip install kaleido, or make setup)"
        ) from None
    import warnings

    try:
        with warnings.catch_warnings():
            # One Chromium for all the figures: plotly then warns that per-call options are
            # ignored, which is what we want.
            warnings.simplefilter("ignore")
            kaleido.start_sync_server(silence_warnings=True)
            try:
                for out in figures:
                    fig = go.Figure(out["data"][PLOTLY_MIME])
                    width = fig.layout.width or FIGURE_SIZE[0]
                    height = fig.layout.height or FIGURE_SIZE[1]
                    png = fig.to_image(format="png", width=width, height=height)
                    out["data"][STATIC_MIME] = base64.b64encode(png).decode("ascii")
            finally:
                kaleido.stop_sync_server(silence_warnings=True)
    except Exception as err:
        raise LabError(
            f"no static images: kaleido could not draw with Chromium ({type(err).__name__}: "
            f"{err}); install Debian's chromium (scripts/setup.sh browser)"
        ) from err
    return len(figures)


def _failed_check(nb) -> str | None:
    """The first ⛔ line a notebook printed (a step check that failed), or None."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in str(output.get("text", "")).splitlines():
                if line.startswith("⛔"):
                    return f"cell {cell.get('execution_count')}: {line}"
    return None


def _print_result(result: RunResult) -> None:
    mark = "✅" if result.ok else "⛔"
    detail = result.error or (f"(note: {result.note})" if result.note else "")
    print(f"{mark} {result.notebook:<40} {result.seconds:6.1f} s  {detail}", flush=True)


def run(
    prefixes: list[str] | None = None,
    output_dir: Path = BUILD_DIR,
    parameters: dict | None = None,
) -> list[RunResult]:
    """Run the notebooks in order and print one line per notebook. `parameters` replace the
    notebooks' parameters cell values (`{"MODE": "kind"}` runs the cluster steps for real)."""
    results = []
    for path in notebooks(prefixes):
        result = run_notebook(path, output_dir, parameters=parameters)
        _print_result(result)
        results.append(result)
    total = sum(r.seconds for r in results)
    print(f"{len(results)} notebooks in {total:.1f} s; outputs in {output_dir}")
    return results


def run_isolated(path: Path, output_dir: Path, timeout: int = 600) -> RunResult:
    """Run one notebook against a local stack of its own, in a fresh temporary folder, then
    stop that stack and delete the folder: the notebook has to start everything it needs,
    and leaves nothing behind. `refresh` and the output tests run notebooks this way."""
    from .stack import LocalStack

    lab_dir = Path(tempfile.mkdtemp(prefix="lab-run-"))
    try:
        return run_notebook(path, output_dir, timeout=timeout, lab_dir=lab_dir)
    finally:
        LocalStack(lab_dir).down()
        shutil.rmtree(lab_dir, ignore_errors=True)


# -- reading and writing notebooks ---------------------------------------------------------
def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _text(nb) -> str:
    import nbformat

    return nbformat.writes(nb) + "\n"


def _save(nb, path: Path) -> bool:
    """Write `nb` to `path` if that changes the file; returns True when it did."""
    text = _text(nb)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def tags(cell) -> list[str]:
    """The tags of a cell (`[]` when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def clean_metadata(nb, *, keep_outputs: bool = True):
    """Strip what changes on every run and only clutters diffs: papermill's timings, the
    kernel's timing records, empty tag lists, the Python patch version; the kernel is always
    `python3`. With `keep_outputs=False` the outputs and execution counts go too."""
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "tags" in cell.metadata and not cell.metadata["tags"]:
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            if not keep_outputs:
                cell.outputs = []
                cell.execution_count = None
            for output in cell.outputs:
                if "execution_count" in output:
                    output["execution_count"] = cell.execution_count
    return nb


def _title(path: Path) -> str:
    """`NN · Title` from the notebook's header cell (or from its file name)."""
    nb = _read(path)
    first = nb.cells[0].source.strip().splitlines()[0] if nb.cells else ""
    match = TITLE.fullmatch(first.strip())
    if match:
        return f"{match.group(1)} · {match.group(2).strip()}"
    number, _, rest = path.stem.partition("_")
    return f"{number} · {rest.replace('_', ' ').capitalize()}"


def binder_url(notebook: str) -> str:
    """The mybinder.org address that opens `notebooks/<notebook>` in JupyterLab."""
    repo = REPOSITORY.removeprefix("https://github.com/").strip("/")
    return f"https://mybinder.org/v2/gh/{repo}/{BRANCH}?urlpath=lab/tree/notebooks/{notebook}"


def badge(notebook: str) -> str:
    """The Binder badge line of a notebook's header."""
    return f"[![Binder]({BINDER_BADGE})]({binder_url(notebook)})"


def navigation(path: Path, paths: list[Path], titles: dict[str, str] | None = None) -> str:
    """The navigation line of `path` among `paths`: previous, contents, next."""
    titles = titles or {p.name: _title(p) for p in paths}
    names = [p.name for p in paths]
    at = names.index(path.name)
    parts = []
    if at > 0:
        parts.append(f"[← {titles[names[at - 1]]}]({names[at - 1]})")
    parts.append(f"[Contents]({CONTENTS})")
    if at + 1 < len(names):
        parts.append(f"[{titles[names[at + 1]]} →]({names[at + 1]})")
    return " | ".join(parts)


def _nav_cell(text: str, cell_id: str):
    import nbformat

    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [NAVIGATION]})
    cell["id"] = cell_id
    return cell


def _with_badge(source: str, notebook: str) -> str:
    """The header text with its Binder badge line written (or replaced)."""
    lines = source.rstrip("\n").split("\n")
    line = badge(notebook)
    for i, text in enumerate(lines):
        if text.startswith("[![Binder]"):
            lines[i] = line
            return "\n".join(lines)
    # No badge yet: put it after the scope line (italics), else after the title.
    at = next((i for i, t in enumerate(lines) if re.fullmatch(r"\*[^*].*\*", t.strip())), 0)
    return "\n".join([*lines[: at + 1], "", line, *lines[at + 1 :]])


def nav(folder: Path | None = None) -> list[Path]:
    """Write every notebook's Binder badge and its two navigation cells (after the header,
    and last) from the list of notebooks. Idempotent; returns the files it changed."""
    paths = notebooks(folder=folder)
    titles = {p.name: _title(p) for p in paths}
    changed = []
    for path in paths:
        nb = _read(path)
        text = navigation(path, paths, titles)
        if nb.cells and HEADER in tags(nb.cells[0]):
            nb.cells[0].source = _with_badge(nb.cells[0].source, path.name)
        if len(nb.cells) > 1 and NAVIGATION in tags(nb.cells[1]):
            nb.cells[1].source = text
        else:
            nb.cells.insert(1, _nav_cell(text, "navigation-top"))
        if NAVIGATION in tags(nb.cells[-1]) and len(nb.cells) > 2:
            nb.cells[-1].source = text
        else:
            nb.cells.append(_nav_cell(text, "navigation-bottom"))
        if _save(nb, path):
            changed.append(path)
    return changed


# -- the conventions -----------------------------------------------------------------------
def check_notebook(path: Path, paths: list[Path] | None = None) -> list[str]:
    """What in `path` breaks the workbook's conventions (see the module help); `[]` if
    nothing. `paths` is the whole workbook, for the navigation (default: `notebooks/`)."""
    problems = []
    match = NAME.fullmatch(path.name)
    if not match:
        problems.append("the file name is not NN_snake_case.ipynb")
    nb = _read(path)
    cells = nb.cells
    if len(cells) < 6:
        return problems + ["too few cells for header, navigation, parameters, setup, ..., nav"]

    # 1. the header
    head = cells[0]
    lines = [t.strip() for t in head.source.strip().splitlines()]
    title = TITLE.fullmatch(lines[0]) if lines else None
    if head.cell_type != "markdown" or HEADER not in tags(head):
        problems.append("cell 1 must be a markdown cell tagged 'header'")
    if not title or (match and title.group(1) != match.group(1)):
        problems.append("the header must start with '# NN · Title', NN as in the file name")
    if not any(re.fullmatch(r"\*[^*].*\*", t) for t in lines[1:4]):
        problems.append("the header needs a one-line scope in *italics* under the title")
    if badge(path.name) not in lines:
        problems.append(
            "the Binder badge is missing or stale: run `python -m lab_helpers.workbook nav`"
        )
    learn = lines.index("**What you will learn**") if "**What you will learn**" in lines else -1
    if learn < 0 or not any(t.startswith("- ") for t in lines[learn + 1 : learn + 3]):
        problems.append("the header needs '**What you will learn**' followed by bullets")
    if not any(TIME_NEEDED.match(t) for t in lines):
        problems.append("the header needs '**Time needed:** about N minutes'")

    # 2-4. navigation, parameters, setup
    paths = paths or notebooks(folder=path.parent)
    expected = navigation(path, paths) if path in paths else None
    for at, where in ((1, "second"), (len(cells) - 1, "last")):
        cell = cells[at]
        if cell.cell_type != "markdown" or NAVIGATION not in tags(cell):
            problems.append(f"the {where} cell must be a markdown cell tagged 'navigation'")
        elif expected is not None and cell.source.strip() != expected:
            problems.append(
                f"the {where} navigation cell is stale: run `python -m lab_helpers.workbook nav`"
            )
    if cells[2].cell_type != "code" or PARAMETERS not in tags(cells[2]):
        problems.append("the third cell must be the code cell tagged 'parameters'")
    # The setup cell is the first code cell after the parameters (a markdown cell may
    # introduce it).
    setup_cell = next((c for c in cells[3:] if c.cell_type == "code"), None)
    if setup_cell is None or not (
        "from lab_helpers.workbook import setup" in setup_cell.source
        and "versions = setup()" in setup_cell.source
    ):
        problems.append(
            "the first code cell after the parameters must run "
            "`from lab_helpers.workbook import setup` and `versions = setup()`"
        )
    for i, cell in enumerate(cells):
        for tag, allowed in ((HEADER, {0}), (NAVIGATION, {1, len(cells) - 1}), (PARAMETERS, {2})):
            if tag in tags(cell) and i not in allowed:
                problems.append(f"cell {i + 1} is tagged '{tag}' out of place")

    # 5. the exercises, the summary
    summary = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "markdown" and c.source.startswith("## Summary")
    ]
    if not summary:
        problems.append("a '## Summary' markdown cell is missing")
    groups, shape_problems = exercise_groups(cells)
    problems += shape_problems
    if not groups:
        problems.append("there is no exercise")
    in_groups = {at + k for at in groups for k in range(4)}
    if summary:
        problems += [
            f"cell {i + 1}: after the summary only exercises may have code"
            for i in range(summary[-1] + 1, len(cells))
            if cells[i].cell_type == "code" and i not in in_groups
        ]
    if match and match.group(1) in converted_numbers():
        problems += _check_full_rules(match.group(1), cells, groups)

    # committed outputs: a reference run prints no ⛔ and raises nothing
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("the kernelspec must be 'python3'")
    if "papermill" in nb.metadata or any(
        "papermill" in c.metadata or "execution" in c.metadata for c in cells
    ):
        problems.append("run timings are saved in the file: write it with `workbook refresh`")
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" or "⛔" in str(out.get("text", "")):
                problems.append(f"cell {i + 1} has a failed check or an error in its saved output")
    return problems


EXERCISE_SHAPE = ((EXERCISE, "markdown"), (EXERCISE, "code"), (SOLUTION, "code"), (CHECKER, "code"))
"""The four cells of an exercise: the task, the learner's start, the solution, the checker."""


def exercise_groups(cells) -> tuple[list[int], list[str]]:
    """Where each exercise starts (the index of its task cell), and what is wrong with the
    shape of the exercises (see `EXERCISE_SHAPE`)."""
    starts, problems = [], []
    i = 0
    while i < len(cells):
        cell = cells[i]
        if EXERCISE in tags(cell) and cell.cell_type == "markdown":
            group = cells[i : i + 4]
            if len(group) == 4 and all(
                tag in tags(c) and c.cell_type == kind
                for c, (tag, kind) in zip(group, EXERCISE_SHAPE)
            ):
                if "check_exercise(" not in group[3].source:
                    problems.append(f"the checker at cell {i + 4} must call check_exercise(...)")
                starts.append(i)
                i += 4
                continue
            problems.append(
                f"the exercise at cell {i + 1} must be followed by code cells tagged "
                "'exercise', 'solution' and 'checker'"
            )
        elif {EXERCISE, SOLUTION, CHECKER} & set(tags(cell)):
            problems.append(f"cell {i + 1} is an exercise cell outside an exercise's four cells")
        i += 1
    return starts, problems


def converted_numbers() -> tuple[str, ...]:
    """The numbers of the notebooks that follow the workbook's full rules: those whose
    exercises are declared (`lab_helpers.exercises.MODULES`, the one list)."""
    from .exercises import MODULES

    return tuple(MODULES)


def converted(folder: Path | None = None) -> list[Path]:
    """The notebooks that follow the workbook's full rules (see `converted_numbers`)."""
    numbers = converted_numbers()
    return [p for p in notebooks(folder=folder) if p.name[:2] in numbers]


def solution(key: str, folder: Path | None = None) -> str:
    """The solution cell of exercise `key` (`"NN.k"`), as the notebook holds it: the one
    home of every solution (the tests build the wrong answers from it)."""
    from .exercises import exercises

    found = [p for p in notebooks(folder=folder) if p.name[:2] == key[:2]]
    if len(found) != 1:
        raise LabError(f"exercise {key}: {len(found)} notebooks are numbered {key[:2]}, not one")
    path = found[0]
    cells = _read(path).cells
    starts, _ = exercise_groups(cells)
    keys = [ex.key for ex in exercises(key[:2])]
    if key not in keys:
        raise LabError(f"exercise {key} is not declared in lab_helpers/answers/exercises.yaml")
    if len(starts) != len(keys):
        raise LabError(
            f"{path.name} has {len(starts)} exercises in four cells, and {len(keys)} declared"
        )
    return cells[starts[keys.index(key)] + 2].source


def _defines(source: str, name: str) -> bool:
    """Does this code assign `name` or define a function of that name?"""
    return bool(
        re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(|^{re.escape(name)}\s*=", source, re.M)
    )


def _check_full_rules(number: str, cells, groups: list[int]) -> list[str]:
    from .exercises import exercises

    problems = []
    declared = exercises(number)
    found = [cells[at + 3].source.strip() for at in groups]
    wanted = [f'check_exercise("{ex.key}")' for ex in declared]
    if found != wanted:
        problems.append(
            f"the checker cells must be exactly {wanted} (the exercises declared in "
            f"lab_helpers.answers), in order; found {found}"
        )
    if len(groups) < 2:
        problems.append("a notebook needs at least two exercises")
    for at, ex in zip(groups, declared):
        task = cells[at].source.lstrip()
        if not task.startswith(f"**Exercise {ex.key} · "):
            problems.append(f"the task at cell {at + 1} must start with '**Exercise {ex.key} · '")
        if ex.optional != (IF_TIME_ALLOWS in task.partition("\n")[0]):
            problems.append(
                f"the task of exercise {ex.key} says {IF_TIME_ALLOWS} on its first line if and "
                "only if lab_helpers.answers declares it optional"
            )
        for offset, what in ((1, "starting"), (2, "solution")):
            if not _defines(cells[at + offset].source, ex.answer):
                problems.append(f"the {what} cell of exercise {ex.key} must define `{ex.answer}`")
    words = markdown_words(cells)
    if sum(words) > WORDS_PER_NOTEBOOK:
        problems.append(f"{sum(words):,} words of markdown, more than {WORDS_PER_NOTEBOOK:,}")
    header = TIME_NEEDED.search(cells[0].source)
    core = sum(words) / WORDS_PER_MINUTE + sum(e.minutes for e in declared if not e.optional)
    if header and int(header.group(1)) != time_needed(core):
        problems.append(
            f"the header says about {header.group(1)} minutes; reading and the exercises of the "
            f"core path take {core:.0f}: write about {time_needed(core)} minutes"
        )
    problems += [
        f"cell {i + 1} has {n} words of markdown, more than {WORDS_PER_CELL}"
        for i, n in enumerate(words)
        if n > WORDS_PER_CELL
    ]
    return problems


# -- the pace and the teaching notes ------------------------------------------------------
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")


def count_words(text: str) -> int:
    """Words of a markdown text as a reader meets them: link targets and HTML tags do not
    count, a token counts when it holds a letter or a digit."""
    text = _HTML_TAG.sub(" ", _LINK_TARGET.sub("]", text))
    return sum(1 for token in text.split() if re.search(r"[^\W_]", token))


def markdown_words(cells) -> list[int]:
    """The words of each cell (0 for code and navigation cells), cell by cell."""
    return [
        count_words(c.source) if c.cell_type == "markdown" and NAVIGATION not in tags(c) else 0
        for c in cells
    ]


def time_needed(core_minutes: float) -> int:
    """The header's "Time needed" for a notebook whose core path takes `core_minutes`: the
    nearest multiple of 5 minutes (at least 5)."""
    return max(5, 5 * math.floor(core_minutes / 5 + 0.5))  # halves round up


@dataclass
class Pace:
    """How long one notebook takes a learner: reading, and its exercises' estimates (those of
    the core path, and the optional ones apart)."""

    notebook: str
    words: int
    longest_cell: int
    exercises: int
    exercise_minutes: int | None  # the core path's exercises; None: no estimate yet
    time_needed: int | None  # the header's "Time needed"
    optional_minutes: int = 0  # the exercises "if time allows"

    @property
    def reading_minutes(self) -> float:
        return self.words / WORDS_PER_MINUTE

    @property
    def core_minutes(self) -> float | None:
        """Reading plus the core path's exercises."""
        if self.exercise_minutes is None:
            return None
        return self.reading_minutes + self.exercise_minutes


def pace(folder: Path | None = None, *, every: bool = False) -> list[Pace]:
    """The `Pace` of the notebooks that follow the full rules (`converted`), or
    of every notebook with `every`."""
    from .exercises import exercises

    numbers = converted_numbers()
    rows = []
    for path in notebooks(folder=folder) if every else converted(folder):
        cells = _read(path).cells
        words = markdown_words(cells)
        groups, _ = exercise_groups(cells)
        number = path.name[:2]
        declared = exercises(number) if number in numbers else []
        minutes = sum(e.minutes for e in declared if not e.optional) if declared else None
        optional = sum(e.minutes for e in declared if e.optional)
        header = TIME_NEEDED.search(cells[0].source) if cells else None
        rows.append(
            Pace(path.stem, sum(words), max(words, default=0), len(groups), minutes,
                 int(header.group(1)) if header else None, optional)
        )  # fmt: skip
    return rows


def pace_table(rows: list[Pace]) -> str:
    """The pace of the notebooks as a markdown table, with a total."""

    def minutes(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f}"

    lines = [
        "| notebook | words of markdown | longest cell | reading (min) | exercises | "
        "exercises (min) | reading + exercises (min) | header's time needed (min) | "
        "exercises if time allows (min) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.notebook} | {r.words:,} | {r.longest_cell} | {minutes(r.reading_minutes)} | "
            f"{r.exercises} | {minutes(r.exercise_minutes)} | {minutes(r.core_minutes)} | "
            f"{minutes(r.time_needed)} | {r.optional_minutes} |"
        )
    total_words = sum(r.words for r in rows)
    known = [r.exercise_minutes for r in rows]
    exercise_total = None if None in known else sum(known)
    both = None if exercise_total is None else total_words / WORDS_PER_MINUTE + exercise_total
    lines.append(
        f"| all | {total_words:,} | {max((r.longest_cell for r in rows), default=0)} | "
        f"{minutes(total_words / WORDS_PER_MINUTE)} | {sum(r.exercises for r in rows)} | "
        f"{minutes(exercise_total)} | {minutes(both)} | "
        f"{minutes(sum(r.time_needed or 0 for r in rows))} | "
        f"{sum(r.optional_minutes for r in rows)} |"
    )
    return "\n".join(lines)


def exercise_table(folder: Path | None = None) -> str:
    """The exercises of the notebooks that follow the full rules, as a markdown table: what
    the learner writes, what checks it, and the wrong answers the tests try on it."""
    from .exercises import exercises

    lines = [
        "| exercise | the learner writes | checked by | wrong answers tried (each gets ⛔) | min |",
        "|---|---|---|---|--:|",
    ]
    for path in converted(folder):
        for ex in exercises(path.name[:2]):
            wrong = "; ".join(ex.wrong)
            minutes = f"{ex.minutes}, if time allows" if ex.optional else f"{ex.minutes}"
            lines.append(
                f"| {ex.key} {ex.title} | {ex.writes} | {ex.checked_by} | {wrong} | {minutes} |"
            )
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- {name}: written by `python -m lab_helpers.workbook notes`; do not edit -->",
        f"<!-- /{name} -->",
    )


def notes_section(text: str, name: str, table: str) -> str:
    """`text` (the teaching notes) with the table between the markers of `name`
    (`pace` or `exercises`) replaced."""
    start, end = _markers(name)
    if start not in text or end not in text:
        raise LabError(f"docs/teaching.md has no {name} markers: add {start} and {end}")
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    return f"{before}{start}\n{table}\n{end}{after}"


def teaching_notes(text: str, folder: Path | None = None) -> str:
    """The teaching notes with their generated tables (pace and exercises) brought up to
    date."""
    text = notes_section(text, "pace", pace_table(pace(folder)))
    return notes_section(text, "exercises", exercise_table(folder))


def write_notes(path: Path = TEACHING_NOTES, folder: Path | None = None) -> bool:
    """Write the generated tables into the teaching notes; True when that changed the file."""
    text = path.read_text()
    new = teaching_notes(text, folder)
    if new == text:
        return False
    path.write_text(new)
    return True


def check(folder: Path | None = None) -> dict[str, list[str]]:
    """The convention problems of every notebook: `{file name: [problem, ...]}`."""
    paths = notebooks(folder=folder)
    return {p.name: check_notebook(p, paths) for p in paths}


# -- the student edition and the reference outputs -----------------------------------------
def student_notebook(nb):
    """The student edition of a notebook: no solution cells, no outputs, clean metadata."""
    nb.cells = [c for c in nb.cells if SOLUTION not in tags(c)]
    return clean_metadata(nb, keep_outputs=False)


def student(output_dir: Path = STUDENT_DIR, folder: Path | None = None) -> list[Path]:
    """Write the student edition of every notebook into `output_dir`; returns the files."""
    written = []
    if output_dir.exists():
        for old in output_dir.glob("*.ipynb"):
            old.unlink()
    for path in notebooks(folder=folder):
        out = output_dir / path.name
        _save(student_notebook(_read(path)), out)
        written.append(out)
    return written


def refresh(prefixes: list[str] | None = None) -> list[RunResult]:
    """Run the notebooks, each against a fresh local stack of its own, and write the executed
    notebooks back into `notebooks/` as the committed reference outputs (clean metadata).
    A notebook that fails (an error, a ⛔ check) or is edited while it runs is left as it was."""
    results = []
    with tempfile.TemporaryDirectory(prefix="lab-refresh-") as tmp:
        for path in notebooks(prefixes):
            source = path.read_text()
            result = run_isolated(path, Path(tmp))
            if result.ok and path.read_text() != source:
                # Someone saved the notebook meanwhile: their edit wins over this run.
                result.error = "the notebook changed while it ran: refresh it again"
            if result.ok and result.note:
                result.error = result.note  # the committed figures must show everywhere
            if result.ok:
                _save(clean_metadata(_read(result.output)), path)
            _print_result(result)
            results.append(result)
    return results


@command_line
def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m lab_helpers.workbook run|nav|check|student|refresh|notes`."""
    argv = sys.argv[1:] if argv is None else argv
    commands = ("run", "nav", "check", "student", "refresh", "notes")
    if not argv or argv[0] not in commands:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    parameters = None
    if command == "run" and "--mode" in args:
        at = args.index("--mode")
        if at + 1 >= len(args) or args[at + 1] not in ("local", "kind", "aks"):
            raise LabError("--mode takes local, kind or aks")
        parameters = {"MODE": args[at + 1]}
        args = args[:at] + args[at + 2 :]
    prefixes = args or None
    if command == "run":
        return 0 if all(r.ok for r in run(prefixes, parameters=parameters)) else 1
    if command == "refresh":
        return 0 if all(r.ok for r in refresh(prefixes)) else 1
    if command == "nav":
        changed = nav()
        print(f"navigation written; {len(changed)} notebook(s) changed")
        return 0
    if command == "notes":
        changed = write_notes()
        print(pace_table(pace(every=True)))
        print(f"{TEACHING_NOTES} {'updated' if changed else 'already up to date'}")
        return 0
    if command == "student":
        written = student()
        print(f"student edition of {len(written)} notebooks in {STUDENT_DIR}")
        return 0
    failed = 0
    for name, problems in check().items():
        print(f"{'⛔' if problems else '✅'} {name}")
        for problem in problems:
            print(f"     - {problem}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
