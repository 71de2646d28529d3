"""The workbook's tooling: run the notebooks headless, keep them to the conventions, and make
the student edition.

Command line::

    python -m lab_helpers.workbook run              # every notebook, in order, into build/notebooks
    python -m lab_helpers.workbook run 00 03        # only the notebooks whose names start so
    python -m lab_helpers.workbook nav              # rewrite the badges and navigation cells
    python -m lab_helpers.workbook check            # does every notebook follow the conventions?
    python -m lab_helpers.workbook student          # the student edition, into build/student
    python -m lab_helpers.workbook refresh          # run them and commit the outputs to notebooks/

Each notebook runs in its own fresh kernel, with the ``notebooks/`` folder as working
directory. The kernel is always ``python3`` (the environment's own), so notebook metadata never
decides which one runs.

The conventions every notebook ``notebooks/NN_snake_case.ipynb`` follows (``check`` tests them):

1. a markdown cell tagged ``header``: ``# NN · Title``, the scope in italics, the Binder badge,
   **What you will learn** bullets and ``**Time needed:** about N minutes``;
2. a markdown cell tagged ``navigation`` (written by ``nav``: previous, contents, next);
3. the code cell tagged ``parameters`` (papermill replaces it when a run sets parameters);
4. the setup code cell (the first code cell after the parameters):
   ``from lab_helpers.workbook import setup`` and ``versions = setup()``;
5. ... the lesson ... then a ``## Summary`` markdown cell, then the exercises, each four cells:
   a markdown cell tagged ``exercise`` (the task), a code cell tagged ``exercise`` (the
   learner's starting point), a code cell tagged ``solution`` and a code cell tagged
   ``checker`` that calls :func:`lab_helpers.exercises.check_exercise`;
6. a last markdown cell tagged ``navigation``.

Cells whose output changes from run to run carry the tag ``nbval-ignore-output``.
"""

from __future__ import annotations

import contextlib
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
TIME_NEEDED = re.compile(r"\*\*Time needed:\*\* about \d+ minutes")


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
    """The numbered notebooks (``NN_name.ipynb``), in order; optionally only those whose
    names start with one of ``prefixes``."""
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

    @property
    def ok(self) -> bool:
        return self.error is None


@contextlib.contextmanager
def _lab_dir(lab_dir: Path | str | None) -> Iterator[None]:
    """Point ``LAB_DIR`` (which the kernel inherits) at ``lab_dir`` for a while."""
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
) -> RunResult:
    """Execute one notebook with papermill; returns a :class:`RunResult` (never raises on a
    failing cell: the error is in ``result.error`` and in the output notebook). A step check
    that printed ⛔ counts as a failure too.

    ``lab_dir`` runs it against the local stack in that folder instead of ``LAB_DIR``/``.lab``.
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
    return RunResult(path.name, time.perf_counter() - started, error, out)


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
    print(f"{mark} {result.notebook:<40} {result.seconds:6.1f} s  {result.error or ''}", flush=True)


def run(prefixes: list[str] | None = None, output_dir: Path = BUILD_DIR) -> list[RunResult]:
    """Run the notebooks in order and print one line per notebook."""
    results = []
    for path in notebooks(prefixes):
        result = run_notebook(path, output_dir)
        _print_result(result)
        results.append(result)
    total = sum(r.seconds for r in results)
    print(f"{len(results)} notebooks in {total:.1f} s; outputs in {output_dir}")
    return results


def run_isolated(path: Path, output_dir: Path, timeout: int = 600) -> RunResult:
    """Run one notebook against a local stack of its own, in a fresh temporary folder, then
    stop that stack and delete the folder: the notebook has to start everything it needs,
    and leaves nothing behind. ``refresh`` and the output tests run notebooks this way."""
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
    """Write ``nb`` to ``path`` if that changes the file; returns True when it did."""
    text = _text(nb)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def tags(cell) -> list[str]:
    """The tags of a cell (``[]`` when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def clean_metadata(nb, *, keep_outputs: bool = True):
    """Strip what changes on every run and only clutters diffs: papermill's timings, the
    kernel's timing records, empty tag lists, the Python patch version; the kernel is always
    ``python3``. With ``keep_outputs=False`` the outputs and execution counts go too."""
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
    """``NN · Title`` from the notebook's header cell (or from its file name)."""
    nb = _read(path)
    first = nb.cells[0].source.strip().splitlines()[0] if nb.cells else ""
    match = TITLE.fullmatch(first.strip())
    if match:
        return f"{match.group(1)} · {match.group(2).strip()}"
    number, _, rest = path.stem.partition("_")
    return f"{number} · {rest.replace('_', ' ').capitalize()}"


def binder_url(notebook: str) -> str:
    """The mybinder.org address that opens ``notebooks/<notebook>`` in JupyterLab."""
    repo = REPOSITORY.removeprefix("https://github.com/").strip("/")
    return f"https://mybinder.org/v2/gh/{repo}/{BRANCH}?urlpath=lab/tree/notebooks/{notebook}"


def badge(notebook: str) -> str:
    """The Binder badge line of a notebook's header."""
    return f"[![Binder]({BINDER_BADGE})]({binder_url(notebook)})"


def navigation(path: Path, paths: list[Path], titles: dict[str, str] | None = None) -> str:
    """The navigation line of ``path`` among ``paths``: previous, contents, next."""
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
    """What in ``path`` breaks the workbook's conventions (see the module help); ``[]`` if
    nothing. ``paths`` is the whole workbook, for the navigation (default: ``notebooks/``)."""
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

    # 5. summary, then the exercises
    summary = [
        i
        for i, c in enumerate(cells)
        if c.cell_type == "markdown" and c.source.startswith("## Summary")
    ]
    if not summary:
        problems.append("a '## Summary' markdown cell is missing")
    problems += _check_exercises(cells, summary[-1] if summary else None)

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


def _check_exercises(cells, summary: int | None) -> list[str]:
    if summary is None:
        return []  # reported once already: everything below is relative to the summary
    problems = []
    groups = 0
    i = (summary or 0) + 1
    last = len(cells) - 1
    while i < last:
        cell = cells[i]
        if EXERCISE in tags(cell) and cell.cell_type == "markdown":
            kinds = [(c.cell_type, tags(c)) for c in cells[i + 1 : i + 4]]
            shape = [("code", EXERCISE), ("code", SOLUTION), ("code", CHECKER)]
            if len(kinds) < 3 or any(
                k[0] != t or tag not in k[1] for k, (t, tag) in zip(kinds, shape)
            ):
                problems.append(
                    f"the exercise at cell {i + 1} must be followed by code cells tagged "
                    "'exercise', 'solution' and 'checker'"
                )
                i += 1
                continue
            if "check_exercise(" not in cells[i + 3].source:
                problems.append(f"the checker at cell {i + 4} must call check_exercise(...)")
            groups += 1
            i += 4
        elif cell.cell_type == "code":
            problems.append(f"cell {i + 1}: after the summary only exercises may have code")
            i += 1
        else:
            i += 1  # free text between exercises (e.g. '## Exercises')
    outside = [
        n + 1
        for n, c in enumerate(cells[: (summary or len(cells))])
        if {EXERCISE, SOLUTION, CHECKER} & set(tags(c))
    ]
    if outside:
        problems.append(f"exercise cells {outside} come before the summary")
    if summary is not None and not groups:
        problems.append("there is no exercise after the summary")
    return problems


def check(folder: Path | None = None) -> dict[str, list[str]]:
    """The convention problems of every notebook: ``{file name: [problem, ...]}``."""
    paths = notebooks(folder=folder)
    return {p.name: check_notebook(p, paths) for p in paths}


# -- the student edition and the reference outputs -----------------------------------------
def student_notebook(nb):
    """The student edition of a notebook: no solution cells, no outputs, clean metadata."""
    nb.cells = [c for c in nb.cells if SOLUTION not in tags(c)]
    return clean_metadata(nb, keep_outputs=False)


def student(output_dir: Path = STUDENT_DIR, folder: Path | None = None) -> list[Path]:
    """Write the student edition of every notebook into ``output_dir``; returns the files."""
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
    notebooks back into ``notebooks/`` as the committed reference outputs (clean metadata).
    A notebook that fails (an error, a ⛔ check) or is edited while it runs is left as it was."""
    results = []
    with tempfile.TemporaryDirectory(prefix="lab-refresh-") as tmp:
        for path in notebooks(prefixes):
            source = path.read_text()
            result = run_isolated(path, Path(tmp))
            if result.ok and path.read_text() != source:
                # Someone saved the notebook meanwhile: their edit wins over this run.
                result.error = "the notebook changed while it ran: refresh it again"
            if result.ok:
                _save(clean_metadata(_read(result.output)), path)
            _print_result(result)
            results.append(result)
    return results


@command_line
def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m lab_helpers.workbook run|nav|check|student|refresh``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = ("run", "nav", "check", "student", "refresh")
    if not argv or argv[0] not in commands:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    command, prefixes = argv[0], argv[1:] or None
    if command == "run":
        return 0 if all(r.ok for r in run(prefixes)) else 1
    if command == "refresh":
        return 0 if all(r.ok for r in refresh(prefixes)) else 1
    if command == "nav":
        changed = nav()
        print(f"navigation written; {len(changed)} notebook(s) changed")
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
