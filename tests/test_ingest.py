"""Tests for the ingest worker: lab_helpers.ingest and the service's worker loop on their
own, then the real service.

The unit tests feed hand-made JetStream messages to :func:`lab_helpers.ingest.process` and
check which points and quarantine records come out. The integration tests run
``services/ingest/main.py`` against the real influxd and nats-server of the ``stack``
fixture, publish ticks straight to JetStream with nats-py, and read InfluxDB back as admin.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import signal
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import hypothesis
import nats
import pandas as pd
import pytest
import requests
from hypothesis import strategies as st
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from lab_helpers import etl
from lab_helpers.broker import (
    CLEAN_PREFIX,
    DECODE_REASONS,
    STREAM,
    TICK_PREFIX,
    encode,
    ensure_stream,
    subject,
)
from lab_helpers.influx import InfluxDB, quote_ident
from lab_helpers.ingest import (
    POISON,
    QUARANTINE_REASONS,
    RAW_LIMIT,
    REJECTED,
    UNCLEANABLE,
    DuplicateMemory,
    Incoming,
    process,
)
from lab_helpers.lineprotocol import encode_point
from lab_helpers.stack import SERVERS, LocalStack
from lab_helpers.wait import wait_for
from tests.services import run_app, service_modules

# The service's own worker loop and its counts (services/ingest/worker.py).
INGEST = service_modules("ingest")
IngestStats, IngestWorker = INGEST.worker.IngestStats, INGEST.worker.IngestWorker

NOW = pd.Timestamp("2025-01-01", tz="UTC")
T0 = pd.Timestamp("2024-06-01", tz="UTC")
JS_TIME = 1_750_000_000_000_000_000  # a JetStream storage time, ns
PRICES = {"btc": 60_000.0, "eth": 3_000.0, "gold": 2_000.0}


def tick(i: int, asset: str = "btc", **extra) -> dict:
    """A tick ``i`` seconds after T0 with a plausible price for the asset (``extra`` spoils it)."""
    time_text = (T0 + pd.Timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = PRICES.get(asset.lower() if isinstance(asset, str) else "", 100.0)
    body = {"asset": asset, "price": base + i, "time": time_text, "source": "test"}
    return body | extra


def message(body, seq: int = 1, delivered: int = 1) -> Incoming:
    """A JetStream message holding ``body`` (a dict is JSON-encoded, bytes kept as they are)."""
    data = body if isinstance(body, bytes) else encode(body)
    return Incoming(data, stream_seq=seq, timestamp_ns=JS_TIME + seq, num_delivered=delivered)


def batch(*bodies, first_seq: int = 1) -> list[Incoming]:
    return [message(body, first_seq + i) for i, body in enumerate(bodies)]


def reasons_by_seq(result) -> dict[int, str]:
    return {q.message.stream_seq: q.reason for q in result.quarantined}


# ---------------------------------------------------------------------- process(): clean ticks


def test_a_valid_tick_becomes_a_price_point_and_a_clean_message():
    body = tick(0, asset="BTC", seq=7, sent=1764140000.5, volume=12.5, open=59_000, high=None)
    result = process([message(body)], now=NOW)
    assert result.quarantined == []
    (clean,) = result.ticks
    time_ns = T0.value
    assert clean.point == {
        "measurement": "price",
        "tags": {"asset": "btc", "source": "test"},
        "fields": {"price": 60_000.0, "volume": 12.5, "open": 59_000.0},
        "time": time_ns,
    }
    assert clean.subject == "clean.btc"
    assert clean.payload == {
        "asset": "btc",
        "price": 60_000.0,
        "time": "2024-06-01T00:00:00Z",
        "source": "test",
        "volume": 12.5,
        "open": 59_000.0,
        "seq": 7,
        "sent": 1764140000.5,  # carried through untouched, for latency measurements
    }


def test_optional_fields_that_cannot_be_stored_are_left_out():
    body = tick(0, volume=math.inf, open="n/a", low=-math.inf, high=61_000)
    (clean,) = process([message(body)], now=NOW).ticks
    assert clean.point["fields"] == {"price": 60_000.0, "high": 61_000.0}
    encode_point(clean.point)  # line protocol has no infinity: this would raise


@pytest.mark.parametrize(
    ("source", "tag"),
    [("replay", "replay"), ("bad\nsource\\", "bad_source_"), (None, "unknown"), (7, "unknown")],
)
def test_the_source_tag_is_always_storable(source, tag):
    (clean,) = process([message(tick(0, source=source))], now=NOW).ticks
    assert clean.point["tags"]["source"] == tag
    encode_point(clean.point)


# ---------------------------------------------------------------------- process(): quarantine

BAD = [
    (b"{not json", "invalid JSON"),
    (b'{"asset": "btc", "price": 1\xff}', "not UTF-8"),
    (b"[1, 2, 3]", "not a JSON object"),
    (encode(tick(0, padding="x" * 70_000)), "message too large"),
    ({k: v for k, v in tick(0).items() if k != "price"}, "missing price"),
    (tick(0, price=math.nan), "missing price"),
    (tick(0, price=math.inf), "price not finite"),
    (tick(0, price="abc"), "price not a number"),
    (tick(0, price=[1]), "price not a number"),
    (tick(0, price=True), "price not a number"),
    (tick(0, asset="doge"), "unknown asset"),
    (tick(0, asset=None), "unknown asset"),
    (tick(0, time="yesterday"), "bad timestamp"),
    (tick(0, time="1700-01-01T00:00:00Z"), "timestamp too early"),
    (tick(0, time=-1), "timestamp too early"),  # 1969-12-31: a bitcoin tick before bitcoin
    (tick(0, time="2031-01-01T00:00:00Z"), "timestamp out of range"),
    (tick(0, unit="EUR/coin"), "unknown unit"),
    (tick(0, price=-5), "price not positive"),
    (tick(0, price=1e12), "price implausible"),
    (b"[" * 5000 + b"]" * 5000, "JSON nested too deeply"),
    (b'{"asset": "btc", "price": ' * 2000, "JSON nested too deeply"),
    (b'{"price": 1' + b"0" * 5000 + b"}", "invalid JSON"),  # beyond Python's int digits
    (b"\x00\x01\x02", "invalid JSON"),
    (b"", "invalid JSON"),
    ({**tick(0), "asset": "\ud800"}, "unknown asset"),  # a lone surrogate
]


@pytest.mark.parametrize(("body", "reason"), BAD, ids=[reason for _, reason in BAD])
def test_a_bad_message_is_quarantined_with_its_reason(body, reason):
    result = process([message(body)], now=NOW)
    assert result.ticks == []
    (bad,) = result.quarantined
    assert bad.reason == reason
    point = bad.point
    assert point["measurement"] == "quarantine"
    assert point["tags"] == {"reason": reason}
    assert point["time"] == JS_TIME + 1  # when JetStream stored it: the same on redelivery
    encode_point(point)


def test_a_byte_order_mark_before_the_json_is_ignored():
    (clean,) = process([message(b"\xef\xbb\xbf" + encode(tick(0)))], now=NOW).ticks
    assert clean.point["fields"]["price"] == 60_000.0


def test_a_lone_surrogate_is_stored_as_valid_utf8():
    body = b'{"asset": "\\ud800x", "price": 1, "time": "2024-06-01T00:00:00Z"}'
    (bad,) = process([message(body)], now=NOW).quarantined
    fields = bad.point["fields"]
    assert fields["asset"] == "?x"
    encode_point(bad.point).encode("utf-8")  # would raise with the surrogate left in


def test_a_quarantine_record_keeps_the_text_and_the_asset_named():
    long_body = tick(0, asset="doge", note="é" * 3000)
    result = process(batch(long_body, b"\xff\xfeabc", tick(1, asset=["btc"])), now=NOW)
    records = {q.message.stream_seq: q.point["fields"] for q in result.quarantined}
    assert records[1]["raw"] == encode(long_body).decode()[:1000]
    assert len(records[1]["raw"]) == 1000
    assert records[1]["asset"] == "doge"
    assert records[2] == {"raw": "\ufffd\ufffdabc", "asset": ""}  # bytes that are not UTF-8
    assert records[3]["asset"] == ""  # an asset that is not text


def test_every_reason_is_known_to_the_metrics():
    assert {reason for _, reason in BAD} <= set(QUARANTINE_REASONS)
    assert set(etl.REASONS) | {REJECTED, UNCLEANABLE, POISON} <= set(QUARANTINE_REASONS)
    assert set(DECODE_REASONS) <= set(QUARANTINE_REASONS)
    assert len(set(QUARANTINE_REASONS)) == len(QUARANTINE_REASONS)


def test_duplicates_within_a_batch_keep_the_first():
    first = tick(0)
    result = process(batch(first, first, tick(0, price=1.0), tick(1)), now=NOW)
    assert reasons_by_seq(result) == {2: "duplicate", 3: "conflicting duplicate"}
    assert [t.message.stream_seq for t in result.ticks] == [1, 4]


def test_a_good_batch_is_not_spoiled_by_bad_messages():
    bodies = [tick(i, asset=a) for i, a in enumerate(["btc", "eth", "gold"] * 10)]
    mixed = [body for good, (bad, _) in zip(bodies, BAD * 2) for body in (good, bad)]
    result = process(batch(*mixed), now=NOW)
    assert len(result.ticks) == len(bodies)
    assert len(result.quarantined) == len(mixed) - len(bodies)
    expected = collections.Counter(reason for _, reason in (BAD * 2)[: len(bodies)])
    assert result.counts == dict(expected)


# ---------------------------------------------------------------------- duplicates across batches


def test_memory_tells_duplicates_from_conflicts_and_redeliveries():
    memory = DuplicateMemory()
    assert memory.check("btc", 1, 10.0, stream_seq=5) is None
    memory.remember("btc", 1, 10.0, stream_seq=5)
    assert memory.check("btc", 1, 10.0, stream_seq=9) == "duplicate"
    assert memory.check("btc", 1, 11.0, stream_seq=9) == "conflicting duplicate"
    assert memory.check("btc", 1, 10.0, stream_seq=5) is None  # the same message again
    assert memory.check("eth", 1, 10.0, stream_seq=9) is None
    assert memory.check("btc", 2, 10.0, stream_seq=9) is None


def test_memory_forgets_the_oldest():
    memory = DuplicateMemory(size=2)
    memory.remember("btc", 1, 1.0, 1)
    memory.remember("btc", 2, 2.0, 2)
    memory.remember("btc", 1, 1.0, 1)  # the same tick written again: still the oldest
    memory.remember("btc", 3, 3.0, 3)
    assert len(memory) == 2
    assert memory.check("btc", 1, 1.0, 9) is None  # forgotten
    assert memory.check("btc", 2, 2.0, 9) == "duplicate"
    assert memory.check("btc", 3, 4.0, 9) == "conflicting duplicate"
    off = DuplicateMemory(size=0)
    off.remember("btc", 1, 1.0, 1)
    assert len(off) == 0


def test_memory_keys_are_exact_for_any_time_and_many_assets():
    memory = DuplicateMemory(size=10_000)
    times = [-(2**62), -1, 0, 1, 2**62, 1_618_380_780_123_456_789]
    assets = [f"a{i}" for i in range(5_000)]  # more than the low bits can number
    for asset in assets:
        assert memory.check(asset, 0, 0.0, stream_seq=1) is None
    for asset in (assets[0], assets[1], assets[-1]):
        for t in times:
            memory.remember(asset, t, float(t % 97), stream_seq=1)
    for asset in (assets[0], assets[1], assets[-1]):
        for t in times:
            assert memory.check(asset, t, float(t % 97), stream_seq=2) == "duplicate"
            assert memory.check(asset, t + 1000, 0.0, stream_seq=2) is None
    assert memory.check(assets[2], 0, 0.0, stream_seq=2) is None


def test_a_tick_sent_again_in_a_later_batch_is_quarantined():
    memory = DuplicateMemory()
    stored = process(batch(tick(0), tick(1)), memory, now=NOW)
    for t in stored.ticks:
        memory.remember(t.series, t.time_ns, t.price, t.message.stream_seq)
    later = batch(tick(0), tick(1, price=1.0), tick(2), first_seq=10)
    result = process(later, memory, now=NOW)
    assert reasons_by_seq(result) == {10: "duplicate", 11: "conflicting duplicate"}
    assert [t.message.stream_seq for t in result.ticks] == [12]
    # The first batch delivered again (its ack was lost): written again, not a duplicate.
    again = process(stored_messages := [t.message for t in stored.ticks], memory, now=NOW)
    assert [t.message for t in again.ticks] == stored_messages
    assert again.quarantined == []


def test_the_same_instant_from_another_source_is_no_duplicate():
    memory = DuplicateMemory()
    stored = process(batch(tick(0, source="history")), memory, now=NOW)
    for t in stored.ticks:
        memory.remember(t.series, t.time_ns, t.price, t.message.stream_seq)
    later = batch(tick(0, source="replay"), tick(0, source="history"), first_seq=5)
    result = process(later, memory, now=NOW)
    assert [t.message.stream_seq for t in result.ticks] == [5]  # another series in InfluxDB
    assert reasons_by_seq(result) == {6: "duplicate"}


# ---------------------------------------------------------------------- robustness


def test_a_tick_that_breaks_the_cleaner_is_quarantined_alone(monkeypatch):
    real_clean = etl.clean

    def fragile_clean(frame, **kw):
        if (frame["price"] == "boom").any():
            raise RuntimeError("a bug in a cleaning rule")
        return real_clean(frame, **kw)

    monkeypatch.setattr(etl, "clean", fragile_clean)
    result = process(batch(tick(0), tick(1, price="boom"), tick(2), b"{"), now=NOW)
    assert [t.message.stream_seq for t in result.ticks] == [1, 3]
    assert reasons_by_seq(result) == {2: UNCLEANABLE, 4: "invalid JSON"}


def test_anything_one_message_raises_concerns_that_message_alone(monkeypatch):
    from lab_helpers import ingest

    real = ingest._clean_tick

    def fragile(message, tick, *args):
        if tick.get("source") == "boom":
            raise RecursionError("deep inside a tick")
        return real(message, tick, *args)

    monkeypatch.setattr(ingest, "_clean_tick", fragile)
    result = process(batch(tick(0), tick(1, source="boom"), tick(2)), now=NOW)
    assert [t.message.stream_seq for t in result.ticks] == [1, 3]
    assert reasons_by_seq(result) == {2: UNCLEANABLE}


def test_process_never_raises_even_when_everything_breaks(monkeypatch):
    from lab_helpers import ingest

    def broken(*args, **kw):
        raise MemoryError("the whole batch")

    monkeypatch.setattr(ingest, "decode", broken)
    result = process(batch(tick(0), tick(1)), now=NOW)
    assert result.ticks == [] and reasons_by_seq(result) == {1: UNCLEANABLE, 2: UNCLEANABLE}


def test_a_message_delivered_max_deliver_times_is_poison_with_its_bytes_escaped():
    body = b'{"asset":"btc",\x00"price":\xff' + b"x" * 5000
    messages = [message(body, seq=1, delivered=5), message(tick(1), seq=2, delivered=4)]
    result = process(messages, now=NOW, max_deliver=5)
    assert [t.message.stream_seq for t in result.ticks] == [2]  # one more try for this one
    (poison,) = result.quarantined
    assert poison.reason == POISON
    raw = poison.point["fields"]["raw"]
    assert raw.startswith('{"asset":"btc",\\x00"price":\\xffxxx')
    assert raw.endswith(f"… [{len(body):,} bytes]") and len(raw) == RAW_LIMIT
    assert raw.isprintable()
    encode_point(poison.point)
    # Without a limit (or below it) the message is processed as usual.
    again = process(messages[:1], now=NOW)
    assert [q.reason for q in again.quarantined] == ["not UTF-8"]


def test_a_short_poison_message_is_kept_whole():
    incoming = message(b"\x1b[31mred\x7f", delivered=9)
    (poison,) = process([incoming], now=NOW, max_deliver=5).quarantined
    assert poison.point["fields"]["raw"] == "\\x1b[31mred\\x7f"


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["btc", " ETH ", "xau", "2024-06-01T00:00:00Z", "1e3", "nan", "USD/g"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TICK_KEYS = st.sampled_from(
    ["asset", "price", "time", "source", "volume", "open", "high", "low", "unit", "sent", "seq"]
)
MESSAGES = st.one_of(
    st.binary(max_size=40),
    st.dictionaries(st.one_of(TICK_KEYS, st.text(max_size=5)), JSON_VALUES, max_size=8).map(encode),
    st.builds(
        lambda i, asset, extra: encode(tick(i, asset) | extra),
        st.integers(0, 50),
        st.sampled_from(sorted(PRICES)),
        st.dictionaries(TICK_KEYS, JSON_VALUES, max_size=3),
    ),
)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.lists(MESSAGES, max_size=25))
def test_every_message_is_stored_or_quarantined_exactly_once(bodies):
    memory = DuplicateMemory()
    memory.remember("btc", T0.value, PRICES["btc"], stream_seq=10**6)
    result = process(batch(*bodies), memory, now=NOW)
    seqs = [t.message.stream_seq for t in result.ticks]
    seqs += [q.message.stream_seq for q in result.quarantined]
    assert sorted(seqs) == list(range(1, len(bodies) + 1))
    for point in result.points():
        encode_point(point)  # every point can be written
    for clean in result.ticks:
        json.dumps(clean.payload, allow_nan=False)  # and every clean message is valid JSON


# ------------------------------------------------------------- JetStream metadata and stats


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.TICKS.ingest.2.41.40.1795676270082267954.3",
        "$JS.ACK._.ACCHASH.TICKS.ingest.2.41.40.1795676270082267954.3.rnd",
    ],
)
def test_jetstream_metadata_keeps_the_exact_nanoseconds(reply):
    incoming = Incoming.from_msg(Msg(_client=None, subject="ticks.btc", reply=reply, data=b"{}"))
    assert incoming == Incoming(b"{}", 41, 1795676270082267954, 2)


def test_stats_and_metrics_count_the_same():
    registry = CollectorRegistry()
    stats = IngestStats(registry)
    messages = batch(tick(0), tick(0), b"{", tick(1))
    stats.on_fetch([*messages[:3], message(tick(1), seq=4, delivered=3)])
    stats.on_write(process(messages, now=NOW), seconds=0.25)
    stats.on_write_error()
    snap = stats.snapshot()
    assert snap["received"] == 4 and snap["redeliveries"] == 1
    assert snap["stored"] == 2 and snap["batches"] == 1 and snap["write_errors"] == 1
    assert snap["quarantined"] == {"duplicate": 1, "invalid JSON": 1}
    assert snap["last_write_seconds"] == 0.25
    value = registry.get_sample_value
    assert value("ingest_ticks_received_total") == 4
    assert value("ingest_redeliveries_total") == 1
    assert value("ingest_ticks_stored_total") == 2
    assert value("ingest_batches_total") == 1
    assert value("ingest_write_errors_total") == 1
    assert value("ingest_write_seconds_count") == 1
    assert value("ingest_ticks_quarantined_total", {"reason": "duplicate"}) == 1
    assert value("ingest_ticks_quarantined_total", {"reason": "not UTF-8"}) == 0


# ------------------------------------------------------------- health: stuck or not


def quiet_worker(pending: int = 0) -> IngestWorker:
    """A worker that was never started, "connected" to a NATS that reports ``pending``."""

    async def consumer_info(stream, durable, timeout=None):
        return SimpleNamespace(num_pending=pending, num_ack_pending=0)

    db = InfluxDB("http://127.0.0.1:1", None, "prices")
    worker = IngestWorker("nats://127.0.0.1:1", db, stall_after=5)
    jetstream = SimpleNamespace(consumer_info=consumer_info)
    worker._nc = SimpleNamespace(is_connected=True, jetstream=lambda: jetstream)
    worker._sub = object()
    return worker


def test_liveness_fails_only_when_messages_wait_and_none_moves():
    worker = quiet_worker()
    assert asyncio.run(worker.liveness_problem()) is None  # just started
    worker._last_progress -= 10
    worker._in_hand = 7  # a batch in hand for 10 s: stuck
    assert asyncio.run(worker.liveness_problem()) == (
        "stuck: 7 messages wait and none was acknowledged for 10 s (INGEST_STALL_SECONDS=5)"
    )
    worker._write_failing = True  # waiting for InfluxDB: a readiness problem, not liveness
    assert asyncio.run(worker.liveness_problem()) is None
    worker._write_failing = False
    worker._nc.is_connected = False  # NATS away: readiness too
    assert asyncio.run(worker.liveness_problem()) is None


def test_liveness_asks_nats_how_many_wait_when_nothing_is_in_hand():
    waiting = quiet_worker(pending=3)
    waiting._last_progress -= 10
    assert "stuck: 3 messages wait" in asyncio.run(waiting.liveness_problem())
    idle = quiet_worker(pending=0)
    idle._last_progress -= 10
    assert asyncio.run(idle.liveness_problem()) is None  # nothing to do is no stall


class FakeMsg:
    """A JetStream message as nats-py hands it over, recording how it was answered."""

    def __init__(self, body: dict, seq: int):
        self.data = encode(body)
        self.reply = f"$JS.ACK.TICKS.ingest.1.{seq}.{seq}.{JS_TIME + seq}.0"
        self.answers: list[str] = []

    async def ack(self):
        self.answers.append("ack")

    async def nak(self, delay=None):
        self.answers.append("nak")

    async def in_progress(self):
        self.answers.append("in progress")


def test_readyz_names_the_worker_when_a_batch_fails_for_another_reason(monkeypatch):
    from lab_helpers import ingest

    def broken(*args, **kw):
        raise RuntimeError("a bug outside any one message")

    worker = quiet_worker()
    worker.retry_start = 0.01
    monkeypatch.setattr(ingest, "process", broken)
    msgs = [FakeMsg(tick(0), 1), FakeMsg(tick(1), 2)]
    assert asyncio.run(worker.handle(msgs)) is False
    assert [m.answers for m in msgs] == [["nak"], ["nak"]]  # delivered again, dead-lettered at 5
    assert "RuntimeError('a bug outside any one message')" in worker.worker_problem()
    assert worker.influx_problem() == "InfluxDB not contacted yet"  # not blamed on InfluxDB


def test_healthz_fails_with_the_reason_when_a_liveness_check_fails():
    from fastapi.testclient import TestClient

    from lab_helpers.service import create_app

    state = {"problem": None}
    app = create_app("demo", registry=CollectorRegistry(),
                     live_checks={"worker": lambda: state["problem"]})  # fmt: skip
    client = TestClient(app)
    alive = client.get("/healthz")
    assert alive.json() == {"status": "ok", "service": "demo"}
    assert alive.headers["Lab-Pid"] == str(os.getpid())
    state["problem"] = "stuck: 7 messages wait"
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "stuck", "problems": {"worker": "stuck: 7 messages wait"}}


# ====================================================================== the real service
# Helpers: NATS from a test, waiting with a deadline, reading the service's numbers.


def on_nats(settings, work):
    """Run ``await work(nc, js)`` on a fresh NATS connection and return its result."""

    async def main():
        nc = await nats.connect(settings.require_nats_url())
        try:
            return await work(nc, nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


async def publish_all(js, bodies) -> None:
    for body in bodies:
        data = body if isinstance(body, bytes) else encode(body)
        asset = body.get("asset") if isinstance(body, dict) else None
        await js.publish(subject(TICK_PREFIX, asset or "unknown"), data)


class Publisher(threading.Thread):
    """Publishes ticks in the background, ``burst`` at a time, so a test can act mid-stream."""

    def __init__(self, settings, bodies, burst: int = 50, pause: float = 0.05):
        super().__init__(daemon=True)
        self.settings, self.bodies, self.burst, self.pause = settings, bodies, burst, pause
        self.error: BaseException | None = None

    def run(self):
        async def work(nc, js):
            for start in range(0, len(self.bodies), self.burst):
                await publish_all(js, self.bodies[start : start + self.burst])
                await asyncio.sleep(self.pause)  # pacing the load, not synchronising

        try:
            on_nats(self.settings, work)
        except BaseException as err:  # reported by finish()
            self.error = err

    def finish(self, timeout: float = 30) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the publisher did not finish"
        assert self.error is None, self.error


def get_json(service, path: str) -> dict:
    return requests.get(service.url + path, timeout=5).json()


def handled(service, count: int, timeout: float = 20) -> dict:
    """Wait until the service stored or quarantined ``count`` messages; its ``/stats``."""

    def done():
        stats = get_json(service, "/stats")
        return stats["stored"] + stats["quarantined_total"] == count and stats

    return wait_for(done, timeout, "every message to be stored or quarantined")


def status(service, path: str) -> int:
    try:
        return requests.get(service.url + path, timeout=5).status_code
    except requests.RequestException:
        return 0


def metrics(service) -> dict[tuple, float]:
    """``{(sample name, ((label, value), ...)): value}`` from ``/metrics``."""
    text = requests.get(service.url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stored_ticks(db: InfluxDB) -> pd.DataFrame:
    return db.query("SELECT price, asset FROM price WHERE source = 'test'")


def stored_count(db: InfluxDB) -> int:
    df = db.query("SELECT count(price) FROM price WHERE source = 'test'")
    return int(df.iloc[0, -1]) if len(df) else 0


def quarantine(db: InfluxDB) -> pd.DataFrame:
    return db.query("SELECT raw, asset, reason FROM quarantine")


def expected_points(bodies) -> set[tuple]:
    return {(pd.Timestamp(b["time"]), b["asset"], float(b["price"])) for b in bodies}


def points_of(frame: pd.DataFrame) -> set[tuple]:
    return set(zip(frame.index, frame["asset"], frame["price"]))


def ticks_for(n: int, start: int = 0) -> list[dict]:
    return [tick(i, asset=("btc", "eth", "gold")[i % 3]) for i in range(start, start + n)]


@pytest.fixture
def ingest_env(stack, admin):
    """An empty TICKS stream, a consumer name and a database (the ``admin`` one, which the
    ingest user may write to) for this test alone."""
    ingest_user = stack.settings.credentials("ingest").username
    admin.execute(f"GRANT WRITE ON {quote_ident(admin.database)} TO {quote_ident(ingest_user)}")
    durable = f"test_{uuid.uuid4().hex[:8]}"

    async def purge(nc, js):
        await ensure_stream(js)
        await js.purge_stream(STREAM)  # what earlier tests published must not leak in

    on_nats(stack.settings, purge)
    yield {"LAB_INFLUX_DB": admin.database, "INGEST_DURABLE": durable, "INGEST_ACK_WAIT": "3"}

    async def forget(nc, js):
        try:
            await js.delete_consumer(STREAM, durable)
        except nats.js.errors.NotFoundError:
            pass

    on_nats(stack.settings, forget)


# ---------------------------------------------------------------------- integration tests


@pytest.mark.integration
def test_service_stores_valid_ticks_and_quarantines_each_bad_one(stack, admin, ingest_env):
    # A field type conflict: "volume" is already text in this shard, so InfluxDB will refuse
    # the line of a tick that brings a numeric volume.
    admin.write(
        [
            {
                "measurement": "price",
                "tags": {"asset": "btc", "source": "setup"},
                "fields": {"price": 1.0, "volume": "text"},
                "time": (T0 + pd.Timedelta(seconds=300)).value,  # same shard
            }
        ]
    )
    valid = ticks_for(60) + [tick(100, open=59_000.0, high=61_000.5, low=58_000.25)]
    bad = [*BAD, (valid[0], "duplicate"), (valid[1] | {"price": 1.0}, "conflicting duplicate")]
    bad.append((tick(200, volume=5.0), REJECTED))
    bodies = valid + [body for body, _ in bad]

    with run_app(stack, "ingest", env=ingest_env, ready=True) as service:
        on_nats(stack.settings, lambda nc, js: publish_all(js, bodies))
        stats = handled(service, len(bodies))
        samples = metrics(service)

    stored = stored_ticks(admin)
    assert points_of(stored) == expected_points(valid)
    assert len(stored) == len(valid)
    extra = admin.query("SELECT open, high, low FROM price WHERE source = 'test' AND price = $p",
                        params={"p": valid[-1]["price"]})  # fmt: skip
    assert extra[["open", "high", "low"]].iloc[0].tolist() == [59_000.0, 61_000.5, 58_000.25]

    held = quarantine(admin)
    expected_raw = collections.Counter(
        ((b if isinstance(b, bytes) else encode(b))[:4000].decode("utf-8", "replace")[:1000], r)
        for b, r in bad
    )
    # (an empty text field reads back as NaN through CSV)
    assert collections.Counter(zip(held["raw"].fillna(""), held["reason"])) == expected_raw
    assert held.index.is_unique
    # Quarantine times are JetStream's (about now), not the ticks' own times.
    assert (held.index > pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=5)).all()
    # (an empty text field reads back as NaN through CSV)
    unknown = held.loc[held["reason"] == "unknown asset", "asset"].fillna("").tolist()
    assert sorted(unknown) == ["", "?", "doge"]  # "?": the lone surrogate, as valid UTF-8

    reasons = collections.Counter(reason for _, reason in bad)
    assert stats["received"] == len(bodies)
    assert stats["stored"] == len(valid)
    assert stats["quarantined"] == dict(reasons)
    assert stats["batches"] >= 1 and stats["write_errors"] == 0
    assert samples[("ingest_ticks_received_total", ())] == len(bodies)
    assert samples[("ingest_ticks_stored_total", ())] == len(valid)
    for reason in QUARANTINE_REASONS:
        count = samples[("ingest_ticks_quarantined_total", (("reason", reason),))]
        assert count == reasons.get(reason, 0), reason
    assert samples[("ingest_batches_total", ())] == stats["batches"]
    assert samples[("ingest_write_seconds_count", ())] == stats["batches"]


@pytest.mark.integration
def test_a_tick_from_before_its_asset_existed_never_reaches_the_api(stack, admin, ingest_env):
    reader = quote_ident(stack.settings.credentials("reader").username)
    admin.execute(f"GRANT READ ON {quote_ident(admin.database)} TO {reader}")
    bodies = [
        tick(0, time="1969-12-31T23:59:59Z"),  # a broken clock, as in the report
        tick(1, time=-1),  # the same instant as a negative epoch
        tick(2, time="2009-01-03T18:15:05Z"),  # bitcoin's first block: no price yet
        tick(3, asset="eth", time="2015-07-29T23:59:59Z"),  # a second before ether's network
        tick(4, time=(pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)).isoformat()),
        tick(5),  # valid: 2024-06-01
    ]
    with run_app(stack, "ingest", env=ingest_env, ready=True) as service:
        on_nats(stack.settings, lambda nc, js: publish_all(js, bodies))
        stats = handled(service, len(bodies))
    assert stats["quarantined"] == {"timestamp too early": 4, "timestamp out of range": 1}
    assert points_of(stored_ticks(admin)) == expected_points(bodies[-1:])
    with run_app(stack, "api", env={"LAB_INFLUX_DB": admin.database}) as api:
        summary = requests.get(api.url + "/api/summary/btc", timeout=10).json()
    assert summary["count"] == 1 and summary["first_time"] == bodies[-1]["time"]


@pytest.mark.integration
def test_clean_ticks_are_published_after_the_write(stack, admin, ingest_env):
    valid = [tick(i, sent=1_764_000_000.0 + i, seq=i) for i in range(20)]
    bad = [tick(50, price=-1.0, sent=1.0), b"garbage"]

    async def scenario(nc, js):
        sub = await nc.subscribe(f"{CLEAN_PREFIX}.>")
        await publish_all(js, valid + bad)
        received = []
        while len(received) < len(valid):
            msg = await sub.next_msg(timeout=15)
            body = json.loads(msg.data)
            # Published only once stored: the point can be read back right now.
            found = await asyncio.to_thread(
                admin.query,
                "SELECT price FROM price WHERE asset = $asset AND time = $time",
                {"asset": body["asset"], "time": pd.Timestamp(body["time"])},
            )
            assert found["price"].tolist() == [body["price"]]
            received.append((msg.subject, body))
        with pytest.raises(TimeoutError):  # nothing else: the bad ticks are not published
            await sub.next_msg(timeout=0.5)
        return received

    with run_app(stack, "ingest", env=ingest_env, ready=True):
        received = on_nats(stack.settings, scenario)

    assert {subject for subject, _ in received} == {"clean.btc"}
    expected = [
        {
            "asset": "btc",
            "price": b["price"],
            "time": b["time"],
            "source": "test",
            "seq": b["seq"],
            "sent": b["sent"],
        }
        for b in valid
    ]
    assert sorted((body for _, body in received), key=lambda b: b["seq"]) == expected


@pytest.mark.integration
def test_two_replicas_share_the_work(stack, admin, ingest_env):
    valid = ticks_for(3000)
    env = ingest_env | {"INGEST_BATCH": "50"}
    with run_app(stack, "ingest", env=env, ready=True) as one:
        with run_app(stack, "ingest", env=env, ready=True) as two:
            publisher = Publisher(stack.settings, valid, burst=100, pause=0.01)
            publisher.start()
            publisher.finish()
            wait_for(lambda: stored_count(admin) == len(valid), 30, "all ticks stored")
            stats = [get_json(one, "/stats"), get_json(two, "/stats")]

    assert all(s["stored"] > 0 for s in stats), stats  # each did some of the work
    assert sum(s["stored"] for s in stats) == len(valid)  # together all, none twice
    assert sum(s["received"] for s in stats) == len(valid)
    assert points_of(stored_ticks(admin)) == expected_points(valid)
    assert quarantine(admin).empty


@pytest.mark.integration
def test_a_killed_worker_loses_nothing_and_stores_nothing_twice(stack, admin, ingest_env):
    valid = ticks_for(3000)
    env = ingest_env | {"INGEST_BATCH": "100", "INGEST_ACK_WAIT": "2"}
    publisher = Publisher(stack.settings, valid, burst=100, pause=0.05)
    with run_app(stack, "ingest", env=env, ready=True) as first:
        publisher.start()
        wait_for(lambda: stored_count(admin) >= 300, 20, "the first ticks to be stored", every=0.05)
        first.process.kill()  # kill -9: no chance to finish or ack anything
        assert first.process.wait(10) == -signal.SIGKILL
    assert stored_count(admin) < len(valid), "the worker finished before it was killed"
    with run_app(stack, "ingest", env=env, ready=True) as second:
        publisher.finish()
        wait_for(lambda: stored_count(admin) == len(valid), 30, "every tick to be stored")
        stats = get_json(second, "/stats")

    stored = stored_ticks(admin)
    assert len(stored) == len(valid)
    assert points_of(stored) == expected_points(valid)
    assert quarantine(admin).empty  # a redelivery is no "duplicate"
    assert stats["stored"] <= len(valid)


@pytest.mark.integration
def test_influxdb_outage_is_retried_without_loss(tmp_path):
    valid = ticks_for(1500)
    own = LocalStack(tmp_path / "lab", services=SERVERS)  # its influxd may be killed
    with own:
        db = InfluxDB.connect("admin", settings=own.settings)
        env = {"INGEST_BATCH": "50", "INGEST_ACK_WAIT": "5"}
        with run_app(own, "ingest", env=env, ready=True) as service:
            publisher = Publisher(own.settings, valid, burst=50, pause=0.1)
            publisher.start()
            wait_for(
                lambda: stored_count(db) >= 100, 20, "the first ticks to be stored", every=0.05
            )
            influxd = json.loads(own.state_file.read_text())["influxdb"]["pid"]
            os.kill(influxd, signal.SIGKILL)
            wait_for(lambda: status(service, "/readyz") == 503, 10, "/readyz to turn 503")
            problems = get_json(service, "/readyz")["problems"]
            outage = time.monotonic()
            wait_for(lambda: get_json(service, "/stats")["write_errors"] >= 5, 20, "failed writes")
            assert status(service, "/healthz") == 200  # waiting for InfluxDB is not being stuck
            own.up()  # influxd back, same port and data
            outage = time.monotonic() - outage
            wait_for(lambda: status(service, "/readyz") == 200, 30, "/readyz to be 200 again")
            publisher.finish()
            wait_for(lambda: stored_count(db) == len(valid), 40, "every tick to be stored")
            stats = get_json(service, "/stats")
            samples = metrics(service)
        stored = stored_ticks(db)
        held = quarantine(db)

    assert set(problems) == {"influxdb"}, problems  # the real cause, and only it
    assert len(stored) == len(valid)
    assert points_of(stored) == expected_points(valid)
    assert held.empty
    assert stats["write_errors"] >= 5
    # The batch stayed in hand for longer than ack_wait (5 s), JetStream told it was still in
    # progress: no message was delivered twice, so a long outage turns nothing into poison.
    assert outage > 5
    assert stats["redeliveries"] == 0 and stats["poison"] == 0
    assert samples[("ingest_write_errors_total", ())] == stats["write_errors"]
    assert samples[("ingest_redeliveries_total", ())] == stats["redeliveries"]


@pytest.mark.integration
def test_sigterm_finishes_the_batch_in_hand_and_exits_0(stack, admin, ingest_env):
    valid = ticks_for(2000)
    env = ingest_env | {"INGEST_BATCH": "100"}
    publisher = Publisher(stack.settings, valid, burst=100, pause=0.05)
    with run_app(stack, "ingest", env=env, ready=True) as service:
        publisher.start()
        wait_for(lambda: stored_count(admin) >= 300, 20, "the first ticks to be stored", every=0.05)
        started = time.monotonic()
        code = service.stop(signal.SIGTERM)
        took = time.monotonic() - started
    publisher.finish()
    assert code == 0
    assert took < 5

    async def consumer(nc, js):
        return await js.consumer_info(STREAM, ingest_env["INGEST_DURABLE"])

    info = on_nats(stack.settings, consumer)
    assert info.num_ack_pending == 0  # every message handed out was written and acked
    assert stored_count(admin) == len(valid) - info.num_pending
    assert info.num_pending > 0, "the worker finished before it was stopped"
    # What was left is taken by the next worker.
    with run_app(stack, "ingest", env=env, ready=True):
        wait_for(lambda: stored_count(admin) == len(valid), 30, "every tick to be stored")
    assert points_of(stored_ticks(admin)) == expected_points(valid)


@pytest.mark.integration
def test_a_bad_setting_exits_2_with_one_line(stack):
    env = {**os.environ, **stack.app_env("ingest", 1), "INGEST_BATCH": "lots"}
    run = subprocess.run(
        stack.app_command("ingest"), env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) == 1 and "INGEST_BATCH='lots'" in lines[0], lines


@pytest.mark.integration
def test_a_wrong_password_shows_in_readyz_while_idle(stack, ingest_env):
    env = {**ingest_env, "LAB_INFLUX_PASSWORD": "not-the-password"}
    with run_app(stack, "ingest", env) as ingest:

        def influx_problem() -> str:
            resp = requests.get(ingest.url + "/readyz", timeout=5)
            return resp.json().get("problems", {}).get("influxdb", "")

        def rejected() -> str | None:
            problem = influx_problem()
            return problem if "rejected" in problem else None

        found = wait_for(rejected, 15, "/readyz to say InfluxDB rejected the password", every=0.2)
        assert "rejected the credentials" in found
