"""Shared fixtures: a real local stack (influxd + nats-server) for the integration tests.

The stack runs in a temporary folder on free loopback ports, so the tests never touch a
learner's own ``.lab/`` and can run beside a running lab.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from lab_helpers.errors import StackError
from lab_helpers.stack import INSTALL_HINT, SERVERS, LocalStack, find_binary


def _missing_servers() -> list[str]:
    missing = []
    for binary in INSTALL_HINT:
        try:
            find_binary(binary)
        except StackError:
            missing.append(binary)
    return missing


def require_servers() -> None:
    """Skip (or, in CI, fail) when influxd or nats-server is missing."""
    missing = _missing_servers()
    if missing:
        why = f"{', '.join(missing)} not installed: run `make setup` (it uses apt-get)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the integration tests, but {why}")
        pytest.skip(f"integration test skipped: {why}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running LocalStack for the whole test session, stopped at the end."""
    require_servers()
    lab_dir = tmp_path_factory.mktemp("lab")
    with LocalStack(lab_dir, services=SERVERS) as running:
        yield running
        # A notebook may have started the services in this folder too: stop everything.
        running.down()
    shutil.rmtree(lab_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack):
    return stack.settings


@pytest.fixture
def admin(settings):
    """An admin client on a fresh database of its own, dropped after the test."""
    from lab_helpers.influx import InfluxDB

    name = f"test_{uuid.uuid4().hex[:8]}"
    db = InfluxDB.connect("admin", settings=settings, database=name)
    db.create_database(name)
    yield db
    db.drop_database(name)
