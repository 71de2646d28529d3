"""Faults the system must survive, with real processes on loopback; each counts the points.

- `kill -9` of nats-server mid-stream (JetStream keeps its files): the source and the ingest
  worker reconnect by themselves, and nothing is lost or stored twice;
- the source stops and comes back: the ingest worker waits without spinning or crashing;
- a batch larger than InfluxDB accepts (413) is split, not dropped.

(`kill -9` of the ingest worker and of influxd are in tests/test_ingest.py; the api's 503
while InfluxDB is away is in tests/test_api.py.)
"""

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from lab_helpers.influx import InfluxDB
from lab_helpers.replay import ReplayConfig, records
from lab_helpers.stack import SERVERS, LocalStack
from lab_helpers.wait import wait_for

from .conftest import require_servers
from .services import run_app


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc (clock ticks -> seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def servers(tmp_path):
    """InfluxDB and NATS of their own, so they can be killed without harming other tests."""
    require_servers()
    stack = LocalStack(tmp_path / "lab", services=SERVERS)
    stack.up()
    yield stack
    stack.down()


def test_nats_killed_mid_stream_loses_nothing(servers):
    n = 600
    config = ReplayConfig(dataset="btc_usd_1min")
    want = {pd.Timestamp(t["time"]): t["price"] for _, t in records(config, limit=n)}
    source_env = {"SOURCE_DATASET": config.dataset, "SOURCE_LIMIT": str(n), "SOURCE_RATE": "100"}
    with run_app(servers, "ingest") as ingest, run_app(servers, "source", source_env) as source:
        wait_for(lambda: requests.get(ingest.url + "/stats", timeout=5).json()["stored"] >= 100,
                 30, "the first ticks to be stored")  # fmt: skip
        nats_pid = json.loads(servers.state_file.read_text())["nats"]["pid"]
        os.kill(nats_pid, signal.SIGKILL)
        time.sleep(2)  # the source keeps producing into a broker that is gone
        servers.up()  # same port, same JetStream folder
        wait_for(lambda: requests.get(source.url + "/stats", timeout=5).json()["state"]
                 == "finished", 60, "the source to finish")  # fmt: skip
        wait_for(lambda: requests.get(ingest.url + "/stats", timeout=5).json()["stored"] >= n,
                 60, "every tick to be stored")  # fmt: skip
        for service in (source, ingest):
            assert requests.get(service.url + "/readyz", timeout=5).status_code == 200
    admin = InfluxDB.connect("admin", settings=servers.settings)
    stored = admin.query("SELECT price FROM price")
    assert len(stored) == n, "each tick exactly once"
    assert dict(zip(stored.index, stored["price"], strict=True)) == want


def test_an_idle_worker_waits_without_spinning(servers):
    with run_app(servers, "ingest") as ingest:
        env = {"SOURCE_LIMIT": "50", "SOURCE_RATE": "200"}
        with run_app(servers, "source", env):
            wait_for(lambda: requests.get(ingest.url + "/stats", timeout=5).json()["stored"] >= 50,
                     30, "the ticks to be stored")  # fmt: skip
        # The source is gone. The worker must wait for the next one, not spin or crash.
        before = cpu_seconds(ingest.process.pid)
        time.sleep(5)
        used = cpu_seconds(ingest.process.pid) - before
        assert ingest.process.poll() is None
        assert used < 1.0, f"an idle worker used {used:.2f} s of CPU in 5 s (busy waiting?)"
        # A new source comes back: work resumes.
        env = {"SOURCE_LIMIT": "20", "SOURCE_RATE": "200", "SOURCE_START": "2021-04-01"}
        with run_app(servers, "source", env):
            wait_for(lambda: requests.get(ingest.url + "/stats", timeout=5).json()["stored"] >= 70,
                     30, "the new ticks to be stored")  # fmt: skip


def test_a_batch_larger_than_the_server_accepts_is_split(servers):
    admin = InfluxDB.connect("admin", settings=servers.settings, database="big")
    admin.create_database()
    # 30,000 points of ~1 KB: one 30 MB request, above influxd's 25 MB body limit (413).
    n = 30_000
    frame = pd.DataFrame(
        {"note": ["x" * 1000] * n, "price": range(n)},
        index=pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC"),
    )
    report = admin.write(frame, "big", batch_size=n, writers=1)
    assert report.written == n and not report.rejected
    assert report.requests > 1, "the oversized request was split"
    assert admin.count("big", "price") == n
