"""End to end on loopback, with real processes: source -> NATS -> ingest -> InfluxDB -> api.

`LocalStack` brings the whole system up exactly as `make stack-up` does (in a folder of its
own), the source replays real 1-minute BTC bars with bad records mixed in, and the test checks
that exactly the valid ticks are stored, that every bad one is quarantined with its reason,
that the api returns them, and that the live stream delivers new ticks.
"""

import collections
import json
import time

import pandas as pd
import pytest
import requests

from lab_helpers.influx import InfluxDB
from lab_helpers.replay import EXPECTED_REASON, ReplayConfig, records
from lab_helpers.stack import SERVICES, LocalStack, port_open
from lab_helpers.wait import wait_for

from .conftest import require_servers
from .services import StreamListener, listening_addresses, run_app

N = 3000
CONFIG = ReplayConfig(dataset="btc_usd_1min", bad_share=0.1, seed=11)
SOURCE_ENV = {
    "SOURCE_DATASET": CONFIG.dataset,
    "SOURCE_LIMIT": str(N),
    "SOURCE_RATE": "2000",
    "SOURCE_BAD_SHARE": str(CONFIG.bad_share),
    "SOURCE_SEED": str(CONFIG.seed),
}


@pytest.fixture
def system(tmp_path, monkeypatch):
    """The whole system, started by LocalStack.up(), stopped by down() at the end."""
    require_servers()
    for key, value in SOURCE_ENV.items():
        monkeypatch.setenv(key, value)
    stack = LocalStack(tmp_path / "lab")
    try:
        rows = stack.up()
        assert [r.name for r in rows] == list(SERVICES) and all(r.healthy for r in rows), rows
        yield stack
    finally:
        state = json.loads(stack.state_file.read_text()) if stack.state_file.exists() else {}
        stack.down()
        ports = [v for rec in state.values() for k, v in rec.items() if k.endswith("port")]
        assert not [p for p in ports if port_open(p)], "a port is still open after down()"


def expected_outcome():
    """What the source sends, from the same deterministic generator it runs."""
    stored, reasons = {}, collections.Counter()
    for kind, tick in records(CONFIG, limit=N):
        if EXPECTED_REASON[kind] is None:  # valid, or valid but late (out_of_order)
            stored[pd.Timestamp(tick["time"])] = tick["price"]
        else:
            reasons[EXPECTED_REASON[kind]] += 1
    return stored, reasons


def test_replayed_ticks_flow_through_the_whole_system(system):
    state = json.loads(system.state_file.read_text())
    urls = {name: rec["url"] for name, rec in state.items()}
    want_stored, want_reasons = expected_outcome()
    assert sum(want_reasons.values()) > 100 and len(want_reasons) >= 6  # a real mix of faults

    source = wait_for(
        lambda: (s := requests.get(urls["source"] + "/stats", timeout=5).json())["state"]
        == "finished" and s,
        60, "the source to send its ticks",
    )  # fmt: skip
    want_kinds = collections.Counter(kind for kind, _ in records(CONFIG, limit=N))
    assert source["total"] == N and source["emitted"] == dict(want_kinds)
    ingest = wait_for(
        # Written, not just received: the last batch may still be on its way to InfluxDB.
        lambda: (s := requests.get(urls["ingest"] + "/stats", timeout=5).json())["stored"]
        + s["quarantined_total"] >= N and s,
        60, "ingest to take every tick",
    )  # fmt: skip
    assert ingest["received"] == N

    admin = InfluxDB.connect("admin", settings=system.settings)
    stored = admin.query("SELECT price, asset FROM price")
    assert len(stored) == len(want_stored), "exactly the valid ticks are stored, once each"
    assert set(stored["asset"]) == {"btc"}
    assert dict(zip(stored.index, stored["price"], strict=True)) == want_stored

    quarantine = admin.query("SELECT count(raw) FROM quarantine GROUP BY reason")
    got_reasons = dict(zip(quarantine["reason"], quarantine["count"].astype(int), strict=True))
    assert got_reasons == dict(want_reasons)
    assert ingest["quarantined"] == dict(want_reasons)
    assert ingest["stored"] == len(want_stored)

    # The api (read-only user) returns the same points and counts.
    first, last = min(want_stored), max(want_stored)
    resp = requests.get(
        urls["api"] + "/api/prices/btc",
        params={"start": first.isoformat(), "end": (last + pd.Timedelta("1min")).isoformat(),
                "limit": 10000},
        timeout=10,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    points = resp.json()["points"]
    assert {pd.Timestamp(p["time"]): p["price"] for p in points} == want_stored
    api_q = requests.get(urls["api"] + "/api/quarantine", timeout=10).json()
    assert {r["reason"]: r["count"] for r in api_q["reasons"]} == dict(want_reasons)
    assert api_q["total"] == sum(want_reasons.values())

    status = {row.name: row for row in system.status()}
    assert all(status[name].healthy for name in SERVICES)


def test_live_stream_delivers_new_ticks(system):
    """A browser's view: ticks a second source sends arrive on the api's SSE stream."""
    state = json.loads(system.state_file.read_text())
    listener = StreamListener(state["api"]["url"], count=20, timeout=30)
    received = listener.ticks
    listener.start()
    assert listener.connected.wait(10)
    time.sleep(0.5)  # the subscription is made when the stream opens; give it a moment
    env = {"SOURCE_DATASET": "btc_usd_daily", "SOURCE_LIMIT": "20", "SOURCE_RATE": "50",
           "SOURCE_BAD_SHARE": "0"}  # fmt: skip
    with run_app(system, "source", env):
        listener.join(timeout=30)
    assert len(received) == 20
    assert {t["asset"] for t in received} == {"btc"}
    assert all(isinstance(t["price"], float) and t["price"] > 0 for t in received)


def test_nothing_listens_beyond_loopback_and_no_log_holds_a_secret(system):
    """A learner's stack must not be open to the network, nor leak its passwords."""
    state = json.loads(system.state_file.read_text())
    addresses = {name: listening_addresses(rec["pid"]) for name, rec in state.items()}
    assert all(addresses.values()), addresses  # every process listens somewhere...
    for name, found in addresses.items():
        assert all(a.startswith("127.0.0.1:") for a in found), (name, found)  # ...on loopback
    # Let the system work a little, then read every log it wrote.
    requests.get(state["api"]["url"] + "/api/assets", timeout=10)
    logs = "\n".join(p.read_text(errors="replace") for p in (system.lab_dir / "logs").glob("*"))
    assert logs.strip(), "the services log something"
    for role in ("admin", "ingest", "reader"):
        assert system.settings.credentials(role).password not in logs
