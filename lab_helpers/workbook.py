"""Run the lab's notebooks headless with papermill (``make run``, the tests, teachers).

Command line::

    python -m lab_helpers.workbook run              # every notebook, in order
    python -m lab_helpers.workbook run 00 03        # the notebooks whose names start so

Each notebook runs in its own fresh kernel, with the ``notebooks/`` folder as working
directory, and is written with its outputs to ``build/notebooks/``. The kernel is always
``python3`` (the environment's own), so notebook metadata never decides which one runs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import project_root
from .errors import LabError

NOTEBOOK_DIR = project_root() / "notebooks"
BUILD_DIR = project_root() / "build" / "notebooks"


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order; optionally only those whose
    names start with one of ``prefixes``."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
        if not found:
            raise LabError(f"no notebook starts with {', '.join(prefixes)}: see {NOTEBOOK_DIR}")
    return found


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


def run_notebook(
    path: Path, output_dir: Path = BUILD_DIR, parameters: dict | None = None, timeout: int = 600
) -> RunResult:
    """Execute one notebook with papermill; returns a :class:`RunResult` (never raises on a
    failing cell: the error is in ``result.error`` and in the output notebook)."""
    import papermill as pm

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / path.name
    started = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(path), str(out), parameters=parameters or {}, kernel_name="python3",
            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout,
        )  # fmt: skip
    except pm.PapermillExecutionError as err:
        error = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    return RunResult(path.name, time.perf_counter() - started, error, out)


def run(prefixes: list[str] | None = None, output_dir: Path = BUILD_DIR) -> list[RunResult]:
    """Run the notebooks in order and print one line per notebook."""
    results = []
    for path in notebooks(prefixes):
        result = run_notebook(path, output_dir)
        mark = "✅" if result.ok else "⛔"
        print(
            f"{mark} {result.notebook:<40} {result.seconds:6.1f} s  {result.error or ''}",
            flush=True,
        )
        results.append(result)
    total = sum(r.seconds for r in results)
    print(f"{len(results)} notebooks in {total:.1f} s; outputs in {output_dir}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "run":
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        results = run(argv[1:] or None)
    except LabError as err:
        print(f"⛔ {err}", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
