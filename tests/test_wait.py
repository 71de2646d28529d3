"""The lab's one polling loop (`lab_helpers.wait.wait_for`), as the stack, the cluster code,
the tests and the benchmarks use it."""

import itertools

import pytest

from lab_helpers.errors import LabError, StackError
from lab_helpers.wait import WaitTimeout, wait_for


def test_returns_the_first_true_answer():
    answers = iter([0, None, "", "ready", "later"])
    assert wait_for(lambda: next(answers), 5, every=0) == "ready"


def test_a_timeout_says_what_was_awaited_and_is_a_timeout_and_a_lab_error():
    calls = itertools.count()
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.2 s waiting for the api") as err:
        wait_for(lambda: next(calls) < 0, 0.2, "the api", every=0.01)
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, LabError)
    assert next(calls) > 2  # asked again and again until the time ran out


def test_the_message_can_tell_the_last_state_seen():
    seen = iter(range(100))
    last = []

    def nothing_yet() -> bool:
        last.append(next(seen))
        return False

    with pytest.raises(WaitTimeout) as err:
        wait_for(nothing_yet, 0.05, lambda: f"pods ({last[-1]} seen last)", every=0.01)
    assert str(err.value).endswith(f"waiting for pods ({last[-1]} seen last)")


def test_a_caller_names_its_own_error_or_none():
    with pytest.raises(StackError, match="waiting for influxdb to answer"):
        wait_for(lambda: False, 0, "influxdb to answer", error=StackError)
    assert wait_for(lambda: 0, 0.02, every=0.01, error=None) == 0  # the last answer


def test_what_the_predicate_raises_ends_the_wait_at_once():
    calls = []

    def exited():
        calls.append(1)
        raise StackError("api exited with 2")

    with pytest.raises(StackError, match="exited with 2"):
        wait_for(exited, 60)
    assert len(calls) == 1
