"""Step checks and exercise checkers for the notebooks: ✅ when right, ⛔ with a hint when not.

A check never raises: a learner sees at once what is wrong and what to try, and the rest of
the notebook still runs. The notebook tests count the ⛔ marks in the outputs, so a reference
run of a notebook must print none.

Example::

    check(len(df) > 0, "the query returned rows", hint="is the stack running? make stack-status")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OK, FAIL = "✅", "⛔"


def check(condition: Any, what: str, hint: str = "") -> bool:
    """Print ``✅ what`` if ``condition`` is true, else ``⛔ what: hint``; return the outcome.

    ``condition`` may also be a function of no arguments: an exception it raises counts as a
    failure and its message is shown, so a checker cell never stops with a traceback.
    """
    error = ""
    if callable(condition):
        try:
            condition = condition()
        except Exception as err:  # a learner's unfinished code: show it, do not crash
            error = f" ({type(err).__name__}: {err})"
            condition = False
    ok = bool(condition)
    if ok:
        print(f"{OK} {what}")
    else:
        print(f"{FAIL} {what}{error}" + (f": {hint}" if hint else ""))
    return ok


def check_exercise(test: Callable[[], Any], what: str, hint: str) -> bool:
    """The checker cell after an exercise: runs ``test`` (which asserts on the learner's
    result) and prints ✅ or ⛔ with ``hint``. An unanswered exercise (``NotImplementedError``,
    a missing name, ``...`` left in place) gets the hint, never a traceback."""

    def run():
        result = test()
        return True if result is None else result

    return check(run, what, hint)
