"""Extra local ingest workers: the process-level `kubectl scale deployment ingest`."""

import os
import signal
from pathlib import Path

import pytest
import requests

from lab_helpers.errors import StackError
from lab_helpers.stack import LocalStack, _process_matches, port_open
from lab_helpers.wait import wait_for

from .conftest import require_servers


@pytest.fixture
def stack(tmp_path):
    require_servers()
    running = LocalStack(tmp_path, services=("ingest",))
    yield running
    running.down()


def workers(stack) -> dict[str, int]:
    return {s.name: s.pid for s in stack.status() if s.name.startswith("ingest") and s.pid}


@pytest.mark.integration
def test_scale_starts_reconciles_and_down_stops_every_replica(stack):
    with pytest.raises(StackError, match="not running"):
        stack.scale_ingest(2)
    stack.up()
    rows = stack.scale_ingest(3, env={"INGEST_BATCH": "7"})
    assert [r.name for r in rows] == ["ingest", "ingest-2", "ingest-3"]
    assert all(r.healthy for r in rows) and len({r.url for r in rows}) == 3
    first = workers(stack)
    environ = Path(f"/proc/{first['ingest-2']}/environ").read_bytes().split(b"\0")
    assert b"INGEST_BATCH=7" in environ
    for row in rows:  # each one joins the shared consumer and becomes ready
        assert requests.get(row.url + "/healthz", timeout=5).status_code == 200

    assert workers(stack) == first and stack.scale_ingest(3) and workers(stack) == first

    os.kill(first["ingest-3"], signal.SIGKILL)  # a crashed replica ...
    wait_for(lambda: "ingest-3" not in workers(stack), 10, every=0.02, error=None)
    assert {s.name: s.state for s in stack.status()}["ingest-3"].startswith("stale")
    stack.scale_ingest(3)  # ... is started again
    healed = workers(stack)
    assert set(healed) == {"ingest", "ingest-2", "ingest-3"}
    assert healed["ingest-3"] != first["ingest-3"] and healed["ingest-2"] == first["ingest-2"]

    ports = [int(r.url.rsplit(":", 1)[1]) for r in stack.status() if r.url]
    assert [r.name for r in stack.scale_ingest(1)] == ["ingest"]
    marker = f"LAB_DIR={stack.lab_dir.resolve()}"
    assert not _process_matches(healed["ingest-2"], marker)

    stack.scale_ingest(2)
    replica = workers(stack)["ingest-2"]
    stopped = stack.down()
    assert "ingest-2" in stopped and stopped.index("ingest-2") < stopped.index("nats")
    assert not _process_matches(replica, marker)
    assert not any(port_open(p) for p in ports)


def test_a_bad_replica_count_is_one_sentence(tmp_path):
    with pytest.raises(StackError, match="whole number of 1 or more"):
        LocalStack(tmp_path).scale_ingest(0)
