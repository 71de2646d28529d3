"""Errors the lab raises on purpose, each with one sentence that says what to do.

Every error a learner can cause (a typo in an asset name, a stopped server, a wrong
password) is a `LabError`. In Jupyter, importing `lab_helpers` installs a
handler that shows a `LabError` as its one-line message instead of a long traceback;
the cell still fails, so papermill and the tests still see the error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class LabError(Exception):
    """Base class: a problem the learner can fix; `str(err)` says how."""


class ConfigError(LabError):
    """A setting is missing or invalid."""


class StackError(LabError):
    """The local stack (influxd, nats-server) cannot be started, stopped or found."""


class UnknownAssetError(LabError, KeyError):
    """An asset or data set name that the lab does not know."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(LabError, ValueError):
    """Input data that cannot be used as it is (malformed rows, wrong columns, wrong types)."""


class InfluxError(LabError):
    """InfluxDB refused a request or could not be reached."""


class InfluxConnectionError(InfluxError):
    """InfluxDB did not answer (not started, wrong address, or went away)."""


class InfluxAuthError(InfluxError):
    """InfluxDB rejected the credentials (401) or the user lacks the permission (403)."""


class PartialWriteError(InfluxError):
    """Some lines were rejected by InfluxDB; every other line was stored.

    `rejected` is a list of `(line, reason)` pairs; `written` counts the stored points.
    """

    def __init__(self, message: str, rejected: list[tuple[str, str]], written: int):
        super().__init__(message)
        self.rejected = rejected
        self.written = written


def command_line(main: Callable[..., int]) -> Callable[..., int]:
    """For the `main()` of a `python -m lab_helpers.X` command: a `LabError` becomes
    one ⛔ line on stderr and exit code 1, never a traceback."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except LabError as err:
            print(f"⛔ {err}", file=sys.stderr)
            return 1

    return run


def _show_lab_error(shell, etype, value, tb, tb_offset=None):
    """IPython custom exception handler: one line instead of a traceback."""
    return [f"⛔ {etype.__name__}: {value}"]


def install_notebook_handler() -> bool:
    """Show lab errors as one sentence in IPython/Jupyter; returns True if installed."""
    # A kernel has imported IPython already; a service or script need not pay for it (~9 MB).
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return False

    def handler(shell, etype, value, tb, tb_offset=None):
        stb = _show_lab_error(shell, etype, value, tb, tb_offset)
        # ipykernel publishes the structured traceback as the cell's error output.
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((LabError,), handler)
    return True
