"""Waiting until something is true: the one polling loop of the lab.

    from lab_helpers.wait import wait_for

    wait_for(lambda: port_open(8000), timeout=10, what="the api to listen")

The stack waits with it for its servers, the cluster code for pods and addresses, the tests
and the benchmarks for the services. A wait that runs out of time raises `WaitTimeout` (a
`TimeoutError`, and a `LabError`, so a notebook shows it as one sentence), or the error its
caller names (`StackError`, `ClusterError` ...); a wait whose end is no error returns the
last answer instead (`error=None`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import LabError

T = TypeVar("T")


class WaitTimeout(LabError, TimeoutError):
    """What was awaited did not happen in time; `str(err)` says what it was."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    what: str | Callable[[], str] = "the condition",
    *,
    every: float = 0.1,
    error: Callable[[str], Exception] | None = WaitTimeout,
) -> T:
    """Call `predicate()` every `every` seconds until it returns something true; return that.

    After `timeout` seconds, raise `error("timed out after 30 s waiting for <what>")`.
    `what` may be a function, called only then, so that the message can tell the last state
    seen (which pods are still missing, and why). With `error=None` there is no error: the
    last answer (false) is returned, for a wait whose end is no failure.

    An exception `predicate` raises goes through at once: that is how a wait stops early,
    for instance when the process it waits for has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(every, left))
    if error is None:
        return value
    text = what() if callable(what) else what
    raise error(f"timed out after {timeout:g} s waiting for {text}")
