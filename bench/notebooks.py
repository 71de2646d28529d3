"""Benchmark 6, notebooks: the wall time of each notebook run headless, and of the suite.

Each `notebooks/NN_*.ipynb` that exists when the benchmark runs is executed with papermill
(`lab_helpers.workbook.run_notebook`, a fresh `python3` kernel) in local mode, against
a stack of its own: the kernel inherits `LAB_DIR` pointing at a temporary folder, so the
notebooks start and use that stack, never the learner's `.lab/`. The services a notebook
starts are stopped after it, so every notebook starts from the same state (as in the tests).
Outputs go to `build/bench/notebooks/`.

Targets: each notebook under 60 s, the whole suite under 5 minutes.
"""

from __future__ import annotations

import os

from lab_helpers import workbook
from lab_helpers.config import project_root
from lab_helpers.stack import APPS

from .common import Result, bench_stack

NAME = "notebooks"
TITLE = "Notebooks: headless run time (papermill, local mode)"
EACH_S = 60.0
SUITE_S = 300.0


def run(size: str = "full") -> Result:
    result = Result(NAME, TITLE, size)
    paths = workbook.notebooks()
    if size == "tiny":
        paths = paths[:1]
    out_dir = project_root() / "build" / "bench" / "notebooks"
    total = 0.0
    with bench_stack(NAME) as stack:
        before = os.environ.get("LAB_DIR")
        os.environ["LAB_DIR"] = str(stack.lab_dir)  # the kernels inherit it
        try:
            for path in paths:
                try:
                    run = workbook.run_notebook(path, out_dir)
                finally:
                    stack.down(only=list(APPS))  # the services this notebook started
                total += run.seconds
                result.figure(
                    path.name, run.seconds, "s", "ok" if run.ok else f"failed: {run.error}"
                )
                result.check(f"{path.name} runs without error", run.ok, run.error or "")
                result.target(path.name, run.seconds, EACH_S, "<", "s")
        finally:
            if before is None:
                os.environ.pop("LAB_DIR", None)
            else:
                os.environ["LAB_DIR"] = before
    result.figure("the whole suite", total, "s", f"{len(paths)} notebooks")
    result.target("the whole suite", total, SUITE_S, "<", "s")
    result.note(
        "Each notebook in a fresh kernel, one after the other, against the same stack (its "
        "servers already running); the times include papermill's start-up (a few seconds each)."
    )
    return result
