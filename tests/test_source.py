"""The source service as a real process, publishing to the real NATS JetStream of the stack.

Every test purges the shared ``TICKS`` stream first, and uses its own settings, so that the
JetStream duplicate window (2 minutes) never links two tests.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass

import nats
import pytest
import requests
from nats.js.api import ConsumerConfig

from lab_helpers import broker, catalogue
from lab_helpers.replay import KINDS, ReplayConfig, backfill, message_id, records
from lab_helpers.stack import find_binary, free_port, port_open
from lab_helpers.wait import wait_for
from tests.services import run_app, service_modules

pytestmark = pytest.mark.integration

ASSETS = ("btc", "gold", "eth")
ENV = {
    "SOURCE_ASSETS": ",".join(ASSETS),
    "SOURCE_FREQUENCY": "daily",
    "SOURCE_START": "2020-01-01",
    "SOURCE_LIMIT": "80",
    "SOURCE_RATE": "1000",
    "SOURCE_BAD_SHARE": "0.3",
    "SOURCE_SEED": "7",
}
CONFIG = ReplayConfig(
    dataset=None, assets=ASSETS, frequency="daily", start="2020-01-01", bad_share=0.3, seed=7
)


@dataclass
class Message:
    subject: str
    headers: dict
    body: dict


def without_sent(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "sent"}


def same(a: dict, b: dict) -> bool:
    """Equal ticks, NaN included (NaN != NaN in Python)."""
    return broker.encode(a) == broker.encode(b)


def get(app, path: str, status: int = 200):
    resp = requests.get(app.url + path, timeout=5)
    assert resp.status_code == status, (path, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    return resp.json()


def stats(app) -> dict:
    return get(app, "/stats")


def finished(app) -> dict:
    return wait_for(lambda: (s := stats(app))["state"] == "finished" and s, what="finished")


async def _stream(url: str, purge: bool = False) -> list[Message]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await broker.ensure_stream(js)
        if purge:
            await js.purge_stream(broker.STREAM)
            return []
        count = (await js.stream_info(broker.STREAM)).state.messages
        messages: list[Message] = []
        if count:
            # No acks: a reader that acknowledges nothing would stop at max_ack_pending.
            sub = await js.pull_subscribe(
                f"{broker.TICK_PREFIX}.>", durable=None, config=ConsumerConfig(ack_policy="none")
            )
            while len(messages) < count:
                for msg in await sub.fetch(min(5_000, count - len(messages)), timeout=5):
                    messages.append(Message(msg.subject, dict(msg.headers), json.loads(msg.data)))
            await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


def read_stream(url: str) -> list[Message]:
    """Every message in the TICKS stream, in stream order."""
    return asyncio.run(_stream(url))


def purge(url: str) -> None:
    asyncio.run(_stream(url, purge=True))


# ---------------------------------------------------------------------------- the main run


def test_publishes_the_expected_ticks_serves_them_and_dedups_a_restart(stack):
    url = stack.settings.require_nats_url()
    purge(url)
    expected = list(records(CONFIG, limit=80))
    kinds = [kind for kind, _ in expected]
    started = time.time()

    with run_app(stack, "source", env=ENV) as app:
        done = finished(app)
        messages = read_stream(url)

        # Exactly the expected ticks, in order, on the right subjects, with their headers.
        assert len(messages) == 80
        for (kind, tick), msg in zip(expected, messages):
            assert same(without_sent(msg.body), tick), (kind, tick, msg.body)
            assert msg.subject == broker.subject("ticks", tick["asset"])
            assert msg.headers == {"Nats-Msg-Id": message_id(tick), "Source-Kind": kind}
            assert started <= msg.body["sent"] <= time.time()
        subjects = {m.subject for m in messages}
        assert {"ticks.btc", "ticks.gold", "ticks.eth"} <= subjects
        assert any(s not in ("ticks.btc", "ticks.gold", "ticks.eth") for s in subjects)  # doge

        # /stats counts what was published.
        assert done["emitted"] == {kind: Counter(kinds)[kind] for kind in KINDS}
        assert done["total"] == 80 and done["last_seq"] == 79
        assert done["publish_errors"] == 0 and done["jetstream_duplicates"] == 0
        assert done["settings"]["assets"] == list(ASSETS) and done["settings"]["rate"] == 1000

        check_latest(app, expected)
        check_polling(app, messages)
        check_metrics(app, Counter(kinds))
        assert get(app, "/readyz")["status"] == "ready"

    # The same settings again: every tick has the same Nats-Msg-Id, JetStream keeps none.
    with run_app(stack, "source", env=ENV) as app:
        again = finished(app)
        assert again["jetstream_duplicates"] == 80
    assert len(read_stream(url)) == 80


def check_latest(app, expected):
    latest = get(app, "/latest")
    good = [t for kind, t in expected if kind in ("valid", "out_of_order")]
    newest = {}
    for tick in good:  # the newest by data time, not the last sent (out_of_order is late)
        if tick["asset"] not in newest or tick["time"] >= newest[tick["asset"]]["time"]:
            newest[tick["asset"]] = tick
    assert set(latest) == set(ASSETS)
    for asset, tick in newest.items():
        assert same(without_sent(latest[asset]), tick)
    assert get(app, "/latest/BTC") == latest["btc"]
    assert get(app, "/latest/XAU") == latest["gold"]
    error = get(app, "/latest/silver", 404)
    assert "no tick of 'silver'" in error["error"]
    error = get(app, "/latest/doge", 404)
    assert error["error"].startswith("unknown asset 'doge'")
    error = get(app, "/latest/b@d!", 400)
    assert error["error"].startswith("asset:") and error["detail"][0]["parameter"] == "asset"


def check_polling(app, messages):
    first = get(app, "/ticks?after=-1&limit=10")
    assert [t["seq"] for t in first["ticks"]] == list(range(10))
    assert first["next_after"] == 9 and first["oldest_seq"] == 0 and first["missed"] == 0
    assert [t["seq"] for t in get(app, "/ticks?after=75")["ticks"]] == [76, 77, 78, 79]
    assert get(app, "/ticks?after=79") == {
        "ticks": [],
        "next_after": 79,
        "last_seq": 79,
        "oldest_seq": 0,
        "missed": 0,
    }
    # Polling page by page gives the same messages the broker pushed (NaN shows as null).
    polled, after = [], -1
    while page := get(app, f"/ticks?after={after}&limit=25")["ticks"]:
        polled += page
        after = page[-1]["seq"]
    assert len(polled) == len(messages)
    for http, msg in zip(polled, messages):
        strict = {
            k: None if isinstance(v, float) and math.isnan(v) else v for k, v in msg.body.items()
        }
        assert http == strict
    for bad in ("limit=0", "limit=1001", "after=-2", "limit=ten"):
        error = get(app, f"/ticks?{bad}", 400)
        assert error["error"] and error["detail"]


def check_metrics(app, counts):
    text = requests.get(app.url + "/metrics", timeout=5).text
    for kind in KINDS:
        assert f'source_ticks_total{{kind="{kind}"}} {float(counts[kind])}' in text
    assert "source_publish_errors_total 0.0" in text
    assert "source_publish_seconds_count 80.0" in text
    assert "source_jetstream_duplicates_total 0.0" in text


# ---------------------------------------------------------------------------- start and stop


def test_the_default_replay_first_sends_every_assets_history_once(stack):
    url = stack.settings.require_nats_url()
    purge(url)
    history = backfill(ReplayConfig(backfill=True))
    n = len(history)
    assert set(history["asset"]) == set(catalogue.load()) and n > 40_000
    # The default replay: no SOURCE_DATASET, SOURCE_ASSETS or SOURCE_START.
    env = {"SOURCE_RATE": "1000", "SOURCE_LIMIT": str(n + 5)}
    partial = {**env, "SOURCE_LIMIT": "2500"}  # stopped after part of the history

    with run_app(stack, "source", env=partial) as app:
        first = finished(app)
    with run_app(stack, "source", env=env) as app:
        second = finished(app)  # sends the rest of the history, then the replay
    with run_app(stack, "source", env={**env, "SOURCE_LIMIT": "5"}) as app:
        third = finished(app)  # all the history is in the stream already: just the replay

    assert first["settings"]["backfill"] is True
    assert (first["backfilled"], second["backfilled"], third["backfilled"]) == (2500, n - 2500, 0)
    assert third["total"] == 5
    messages = read_stream(url)
    sent = [m for m in messages if m.body["source"] == "history"]
    assert len(sent) == n  # each row of the history once, over the three runs
    assert {(m.body["asset"], m.body["time"]) for m in sent} == set(
        zip(history["asset"], history["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    )
    assert all(m.subject == broker.history_subject(m.body["asset"]) for m in sent)
    assert all(m.headers["Source-Kind"] == "valid" for m in sent)
    # After the history, the replay itself: live-paced 1-minute bitcoin bars, numbered on.
    replayed = [m for m in messages[2500 : 2500 + (n - 2500) + 5] if m.body["source"] == "replay"]
    assert [m.subject for m in replayed] == ["ticks.btc"] * 5
    assert [m.body["seq"] for m in replayed] == list(range(n - 2500, n - 2500 + 5))


def test_a_chosen_replay_sends_no_history():
    read_settings = service_modules("source").settings.read_settings
    base = {"LAB_NATS_URL": "nats://127.0.0.1:4222"}
    assert read_settings(base).replay.backfill is True
    for chosen in ({"SOURCE_DATASET": "btc_usd_daily"}, {"SOURCE_ASSETS": "gold"},
                   {"SOURCE_START": "2021-04-01"}, {"SOURCE_BACKFILL": "false"}):  # fmt: skip
        assert read_settings(base | chosen).replay.backfill is False, chosen


def test_stop_ends_a_producer_even_when_a_cancellation_is_lost():
    # Python 3.11's asyncio.wait_for can swallow a cancellation that meets a result: the
    # producer went on publishing and SIGTERM never ended the process.
    source_service = service_modules("source")
    settings = source_service.settings.read_settings(
        {"LAB_NATS_URL": "nats://127.0.0.1:1", "SOURCE_DATASET": "btc_usd_daily"}
    )
    source = source_service.producer.Producer(settings)

    async def stubborn():
        while not source.stopping:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # lost, as wait_for may lose it

    async def scenario():
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await source.stop(task)
        return task.done(), time.monotonic() - started

    done, took = asyncio.run(scenario())
    assert done and took < 2


def test_sigterm_stops_a_running_source_quickly_and_cleanly(stack):
    purge(stack.settings.require_nats_url())
    env = {"SOURCE_RATE": "20", "SOURCE_START": "2021-04-01", "SOURCE_BUFFER": "5"}
    with run_app(stack, "source", env=env, ready=True) as app:
        wait_for(lambda: stats(app)["total"] >= 8, what="eight ticks")
        assert stats(app)["state"] == "running"
        # The ring buffer keeps the last 5 ticks: a slow poller learns what it missed.
        page = get(app, "/ticks?after=-1")
        seqs = [t["seq"] for t in page["ticks"]]
        assert len(seqs) == 5 and seqs == list(range(seqs[0], seqs[0] + 5))
        assert page["oldest_seq"] == seqs[0] and page["missed"] == seqs[0] >= 3
        begin = time.monotonic()
        assert app.stop(signal.SIGTERM) == 0
        assert time.monotonic() - begin < 5
    assert '"message": "stopped"' in app.output()


def test_without_nats_it_serves_http_is_not_ready_and_stops_cleanly(stack):
    env = {"LAB_NATS_URL": f"nats://127.0.0.1:{free_port()}", "SOURCE_LIMIT": "5"}
    with run_app(stack, "source", env=env) as app:
        resp = requests.get(app.url + "/readyz", timeout=5)
        assert resp.status_code == 503
        assert "not connected to NATS" in resp.json()["problems"]["nats"]
        assert stats(app)["state"] == "starting"
        assert get(app, "/ticks")["ticks"] == []
        assert app.stop() == 0


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SOURCE_RATE", "fast"),
        ("SOURCE_MODE", "batch"),
        ("SOURCE_BAD_SHARE", "1.5"),
        ("SOURCE_BAD_KINDS", "missing_price,typo"),
        ("SOURCE_DATASET", "btc_usd_hourly"),
        ("SOURCE_START", "yesterday"),
        ("SOURCE_LIVE_APIS", "ftx"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line(stack, variable, value):
    env = {**os.environ, **stack.app_env("source", free_port()), variable: value}
    run = subprocess.run(
        stack.app_command("source"), env=env, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 2, run.stdout + run.stderr
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and variable in entry["message"]


# ---------------------------------------------------------------------------- NATS goes away


def test_no_tick_is_lost_when_nats_goes_away_and_comes_back(stack, tmp_path):
    port = free_port()
    server = [find_binary("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port)]
    server += ["-sd", str(tmp_path / "jetstream")]

    def start_nats() -> subprocess.Popen:
        proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(port), what="nats-server up")
        return proc

    nats_proc = start_nats()
    url = f"nats://127.0.0.1:{port}"
    env = {"LAB_NATS_URL": url, "SOURCE_DATASET": "btc_usd_1min", "SOURCE_LIMIT": "60",
           "SOURCE_RATE": "20", "SOURCE_SEED": "3"}  # fmt: skip
    try:
        with run_app(stack, "source", env=env) as app:
            wait_for(lambda: stats(app)["total"] >= 10, what="ten ticks")
            nats_proc.kill()  # a crash, not a clean stop
            nats_proc.wait()
            time.sleep(3)  # longer than a publish timeout: publishing must fail meanwhile
            assert stats(app)["total"] < 60
            nats_proc = start_nats()  # same port, same storage
            done = wait_for(lambda: (s := stats(app))["state"] == "finished" and s, 30)
            assert done["publish_errors"] >= 1
            assert "publish failed; retrying" in app.output()
        messages = read_stream(url)
    finally:
        nats_proc.kill()
        nats_proc.wait()
    # Every tick exactly once, in order: a retried tick keeps its id, so even one that did
    # reach the stream before the crash is not stored twice.
    expected = list(records(ReplayConfig(seed=3), limit=60))
    assert [m.body["seq"] for m in messages] == list(range(60))
    assert all(same(without_sent(m.body), t) for m, (_, t) in zip(messages, expected))
