"""The settings of the README's configuration table reach every component.

``LAB_DIR`` and ``LAB_INFLUX_DB`` set to other values, and the services' usual ports
8000-8002 taken by another program: ``python -m lab_helpers.stack up`` (the bootstrap and the
three services), then notebooks 00 and 04 as papermill runs them, and the benchmarks. Every
point must land in the chosen database, and nothing may touch the default one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import requests

from bench.run import main as bench_main
from lab_helpers import workbook
from lab_helpers.influx import InfluxDB
from lab_helpers.stack import APPS, LocalStack
from lab_helpers.wait import wait_for

from .conftest import require_servers

DATABASE = "other_prices"
USUAL_PORTS = sorted(port for port, _ in APPS.values())  # 8000, 8001, 8002


@contextlib.contextmanager
def ports_taken(ports: list[int]):
    """Another program listening on ``ports`` (those that nothing holds yet)."""
    code = textwrap.dedent(
        f"""
        import socket, sys, time
        held = []
        for port in {ports!r}:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken already: by someone else, which is just as good
            sock.listen()
            held.append(sock)
        print("ready", flush=True)
        time.sleep(3600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for port in ports:
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) == 0, f"port {port} is free"
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """``LAB_DIR`` and ``LAB_INFLUX_DB`` set to other values for this test and its children."""
    require_servers()
    lab_dir = tmp_path / ".lab-other"
    monkeypatch.setenv("LAB_DIR", str(lab_dir))
    monkeypatch.setenv("LAB_INFLUX_DB", DATABASE)
    stack = LocalStack()
    assert stack.lab_dir == lab_dir.resolve()
    try:
        yield stack
    finally:
        stack.down()


def test_the_stack_the_services_and_notebooks_00_and_04_honour_lab_dir_and_lab_influx_db(
    elsewhere, tmp_path
):
    with ports_taken(USUAL_PORTS):
        up = subprocess.run(
            [sys.executable, "-m", "lab_helpers.stack", "up"],
            capture_output=True, text=True, timeout=180, env=os.environ,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads(elsewhere.state_file.read_text())
        for name in APPS:
            assert state[name]["port"] not in USUAL_PORTS, (name, state[name]["port"])
        urls = {name: state[name]["url"] for name in APPS}
        for path in workbook.notebooks(["00", "04"]):
            result = workbook.run_notebook(path, tmp_path / "out", lab_dir=elsewhere.lab_dir)
            assert result.ok, f"{path.name} failed at {result.error}"

        admin = InfluxDB.connect("admin", settings=elsewhere.settings)
        assert admin.database == DATABASE
        # The services: the ingest workers stored the source's ticks, the api reads them.
        wait_for(lambda: requests.get(urls["ingest"] + "/stats", timeout=5).json()["stored"], 60,
                 "the ingest worker to store ticks")  # fmt: skip
        assets = requests.get(urls["api"] + "/api/assets", timeout=10).json()["assets"]
        assert all(a["points"] > 0 for a in assets), assets  # the backfilled history

    # Every point is in the chosen database; the default one was never even created.
    assert admin.databases() == [DATABASE]
    measurements = {row[0] for row in values(admin, "SHOW MEASUREMENTS")}
    assert {"welcome_price", "daily_price", "price"} <= measurements  # 00, 04, the services
    for role, right in (("ingest", "WRITE"), ("reader", "READ")):  # granted by the bootstrap
        user = elsewhere.settings.credentials(role).username
        assert values(admin, f'SHOW GRANTS FOR "{user}"') == [[DATABASE, right]]


def values(db: InfluxDB, statement: str) -> list[list]:
    """The rows of a SHOW statement's answer."""
    (result,) = db.execute(statement)
    return [row for series in result.get("series", []) for row in series["values"]]


def test_the_benchmarks_use_the_chosen_database(tmp_path, monkeypatch):
    require_servers()
    monkeypatch.setenv("LAB_INFLUX_DB", "bench_elsewhere")
    used = set()
    write, query = InfluxDB.write, InfluxDB.query

    def recorded(method):
        def call(self, *args, database=None, **kw):
            used.add(database or self.database)
            return method(self, *args, database=database, **kw)

        return call

    monkeypatch.setattr(InfluxDB, "write", recorded(write))
    monkeypatch.setattr(InfluxDB, "query", recorded(query))
    code = bench_main(["--size", "tiny", "--only", "query", "--out", str(tmp_path)])
    assert used == {"bench_elsewhere"}
    report = json.loads((tmp_path / "results.json").read_text())
    (query,) = report["benchmarks"]
    assert query["error"] is None, query["error"]
    assert all(check["ok"] for check in query["checks"]), query["checks"]
    assert code == 0
