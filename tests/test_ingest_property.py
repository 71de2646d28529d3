"""Property test of the streaming path: hostile messages mixed with valid ticks, through the real
NATS JetStream, the real ingest process and the real InfluxDB.

A seeded generator (``LAB_PROPERTY_SEED``, printed; the same seed gives the same messages)
makes rounds of messages of many kinds: valid ticks, arbitrary bytes, JSON nested thousands of
levels deep, huge numbers, huge arrays and strings, lone surrogates, duplicate keys, byte
order marks, NUL bytes, every JSON type in every field, truncated JSON, re-sent and
conflicting ticks. After each round, within a bounded time:

* every message was stored or quarantined exactly once (the worker's counts, and InfluxDB's);
* every valid tick is queryable with its exact price and time;
* what InfluxDB holds is what :func:`lab_helpers.ingest.process` says for the same messages;
* no message was delivered twice, and the worker is ready and live.

Then the dead-letter rule on its own: a message already delivered ``INGEST_MAX_DELIVER - 1``
times is quarantined as "poison" at its next delivery, and the valid tick behind it is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid

import nats
import pandas as pd
import pytest
import requests
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from lab_helpers import catalogue
from lab_helpers.broker import STREAM, ensure_stream
from lab_helpers.influx import quote_ident
from lab_helpers.ingest import POISON, DuplicateMemory, Incoming, process
from lab_helpers.wait import wait_for
from tests.services import run_app

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("LAB_PROPERTY_SEED", "20251205"))
ROUNDS = 8
PER_ROUND = 250
ROUND_SECONDS = 30  # the bound: every message of a round stored or quarantined by then
T0 = pd.Timestamp("2024-01-01", tz="UTC")
JSON_TYPES = ["null", "true", "false", "0", "-1", "1.5", "1e308", "-1e308", "1e400", '""',
              '"text"', '"63000"', '"NaN"', "NaN", "Infinity", "[]", "[1]", "{}", '{"a": 1}',
              '"2024-06-01T00:00:00Z"', "1717200000", '"\\u0000"', '"\\ud800"']  # fmt: skip
FIELDS = ["asset", "price", "time", "source", "unit", "volume", "open", "high", "low", "seq",
          "sent"]  # fmt: skip


class Messages:
    """The seeded generator: ``draw()`` gives ``(kind, bytes, valid tick or None)``."""

    def __init__(self, seed: int, tag: str):
        self.rng = random.Random(seed)
        self.tag = tag  # the source of this run's valid ticks
        self.ceiling = catalogue.load().ceiling
        self.assets = list(self.ceiling)
        self.count = 0  # valid ticks so far: each gets its own second after T0
        self.sent: list[dict] = []

    def valid(self) -> dict:
        self.count += 1
        asset = self.rng.choice(self.assets)
        top = min(2_000.0, self.ceiling[asset] / 2)
        price = round(self.rng.uniform(0.5, top), self.rng.choice([2, 6]))
        when = (T0 + pd.Timedelta(seconds=self.count)).strftime("%Y-%m-%dT%H:%M:%SZ")
        tick = {"asset": asset, "price": price, "time": when, "source": self.tag}
        if self.rng.random() < 0.3:
            tick["volume"] = self.rng.uniform(0, 1e6)
        self.sent.append(tick)
        return tick

    def _depth(self) -> int:
        return self.rng.choice([1_000, 5_000, 20_000, 32_000])

    def draw(self) -> tuple[str, bytes, dict | None]:
        r = self.rng
        kind = r.choice(KINDS)
        if kind == "valid":
            tick = self.valid()
            return kind, json.dumps(tick).encode(), tick
        if kind == "valid with a byte order mark":
            tick = self.valid()
            return kind, b"\xef\xbb\xbf" + json.dumps(tick).encode(), tick
        if kind == "valid with duplicate keys":
            tick = self.valid()
            first = '{"price": "abc", "asset": null, '  # overridden by the later keys
            return kind, (first + json.dumps(tick)[1:]).encode(), tick
        if kind == "valid with odd extra fields":
            tick = self.valid()
            extra = ", ".join(f'"x{i}": {r.choice(JSON_TYPES)}' for i in range(r.randint(1, 5)))
            return kind, (json.dumps(tick)[:-1] + ", " + extra + "}").encode(), tick
        if kind == "valid tick sent again" and self.sent:
            return kind, json.dumps(r.choice(self.sent)).encode(), None
        if kind == "conflicting price" and self.sent:
            return kind, json.dumps({**r.choice(self.sent), "price": 7.5}).encode(), None
        if kind == "arbitrary bytes":
            return kind, r.randbytes(r.randint(0, 300)), None
        if kind == "arbitrary text":
            text = "".join(chr(r.randint(0, 0x2FFFF)) for _ in range(r.randint(0, 100)))
            return kind, text.encode("utf-8", "surrogatepass"), None
        if kind == "deeply nested arrays":
            depth = self._depth()
            return kind, b"[" * depth + b"]" * depth, None
        if kind == "deeply nested objects":
            depth = self._depth() // 6
            return kind, b'{"a": ' * depth + b"1" + b"}" * depth, None
        if kind == "nesting inside a field":
            depth = r.choice([10, 500, 900, 3_000])
            field = r.choice(FIELDS)
            body = json.dumps(self.valid_shape())[:-1] + f', "{field}": ' + "[" * depth
            return kind, (body + "]" * depth + "}").encode(), None
        if kind == "huge numbers":
            number = r.choice(["1e400", "-1e400", "1" + "0" * r.choice([30, 400, 5_000]),
                               "2e-400", str(2**80), "-0", "1.7976931348623157e308"])  # fmt: skip
            return kind, self.with_field(r.choice(["price", "time", "volume"]), number), None
        if kind == "huge arrays":
            items = r.choice([1_000, 20_000, 40_000])
            return kind, self.with_field(r.choice(FIELDS), "[" + ",".join("0" * items) + "]"), None
        if kind == "huge strings":
            size = r.choice([10_000, 60_000, 70_000])
            return kind, self.with_field(r.choice(FIELDS), json.dumps("x" * size)), None
        if kind == "lone surrogates":
            value = r.choice(['"\\ud800"', '"btc\\udfff"', '"\\udc00\\ud800x"'])
            return kind, self.with_field(r.choice(FIELDS), value), None
        if kind == "NUL bytes":
            if r.random() < 0.5:
                return kind, self.with_field(r.choice(FIELDS), '"a\\u0000b"'), None
            raw = json.dumps(self.valid_shape()).encode()
            cut = r.randint(0, len(raw))
            return kind, raw[:cut] + b"\x00" + raw[cut:], None
        if kind == "every JSON type in every field":
            fields = ", ".join(f'"{f}": {r.choice(JSON_TYPES)}' for f in FIELDS if r.random() < 0.8)
            return kind, ("{" + fields + "}").encode(), None
        if kind == "JSON that is not an object":
            return kind, r.choice(JSON_TYPES).encode(), None
        if kind == "truncated JSON":
            raw = json.dumps(self.valid_shape()).encode()
            return kind, raw[: r.randint(0, len(raw) - 1)], None
        if kind == "invalid UTF-8 in a string":
            raw = json.dumps(self.valid_shape()).encode().replace(b'"source"', b'"sou\xff\xferce"')
            return kind, raw, None
        return self.draw()  # a kind that needs an earlier valid tick: draw again

    def valid_shape(self) -> dict:
        """A tick that looks valid (not counted as one: the caller spoils it)."""
        return {"asset": self.rng.choice(self.assets), "price": 100.0,
                "time": "2024-06-01T00:00:00Z", "source": self.tag}  # fmt: skip

    def with_field(self, field: str, json_value: str) -> bytes:
        shape = {k: v for k, v in self.valid_shape().items() if k != field}
        return (json.dumps(shape)[:-1] + f', "{field}": {json_value}}}').encode()


KINDS = [
    "valid",
    "valid",
    "valid",
    "valid with a byte order mark",
    "valid with duplicate keys",
    "valid with odd extra fields",
    "valid tick sent again",
    "conflicting price",
    "arbitrary bytes",
    "arbitrary text",
    "deeply nested arrays",
    "deeply nested objects",
    "nesting inside a field",
    "huge numbers",
    "huge arrays",
    "huge strings",
    "lone surrogates",
    "NUL bytes",
    "every JSON type in every field",
    "JSON that is not an object",
    "truncated JSON",
    "invalid UTF-8 in a string",
]


# ---------------------------------------------------------------------------- the stack


@pytest.fixture
def worker_env(stack, admin):
    """A database of its own (the ``admin`` fixture's, writable by the ingest user), an empty
    TICKS stream and a consumer name for this test."""
    ingest_user = stack.settings.credentials("ingest").username
    admin.execute(f"GRANT WRITE ON {quote_ident(admin.database)} TO {quote_ident(ingest_user)}")
    durable = f"prop_{uuid.uuid4().hex[:8]}"
    run(stack, lambda nc, js: js.purge_stream(STREAM))
    yield {"LAB_INFLUX_DB": admin.database, "INGEST_DURABLE": durable, "INGEST_ACK_WAIT": "5",
           "INGEST_BATCH": "100", "INGEST_MAX_DELIVER": "5"}  # fmt: skip
    run(stack, lambda nc, js: js.delete_consumer(STREAM, durable))


def run(stack, work):
    """``await work(nc, js)`` on a fresh NATS connection (the stream made sure of first)."""

    async def main():
        nc = await nats.connect(stack.settings.require_nats_url())
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            return await work(nc, js)
        finally:
            await nc.close()

    return asyncio.run(main())


def publish(stack, bodies: list[bytes]) -> list[Incoming]:
    """Publish each body to JetStream; the messages as the worker will see them (seq, time)."""

    async def work(nc, js):
        out = []
        for body in bodies:
            ack = await js.publish("ticks.prop", body)
            out.append(Incoming(body, ack.seq, 0))
        return out

    return run(stack, work)


def counts(service) -> dict:
    return requests.get(service.url + "/stats", timeout=5).json()


def status(service, path: str) -> int:
    return requests.get(service.url + path, timeout=5).status_code


# ---------------------------------------------------------------------------- the property


def test_hostile_messages_never_stall_the_stream_nor_lose_a_valid_tick(stack, admin, worker_env):
    tag = f"prop-{SEED}"
    generator = Messages(SEED, tag)
    model = DuplicateMemory()  # the reference model's memory of stored ticks
    expected_points: set[tuple] = set()
    kinds: dict[str, int] = {}
    published = valid_total = 0
    slowest = 0.0
    print(f"\nproperty test: seed {SEED} (set LAB_PROPERTY_SEED to try another)")
    with run_app(stack, "ingest", env=worker_env, ready=True) as service:
        for number in range(ROUNDS):
            drawn = [generator.draw() for _ in range(PER_ROUND)]
            for kind, _, _ in drawn:
                kinds[kind] = kinds.get(kind, 0) + 1
            started = time.monotonic()
            messages = publish(stack, [body for _, body, _ in drawn])
            published += len(messages)
            stats = wait_for(
                lambda total=published: (
                    (s := counts(service))["stored"] + s["quarantined_total"] >= total and s
                ),
                ROUND_SECONDS,
                f"round {number} (seed {SEED}) to be stored or quarantined",
            )
            slowest = max(slowest, time.monotonic() - started)
            # Exactly once: nothing delivered twice, every message counted once.
            assert stats["received"] == published and stats["redeliveries"] == 0, stats
            assert stats["stored"] + stats["quarantined_total"] == published, stats
            assert stats["poison"] == 0 and stats["write_errors"] == 0, stats

            # What InfluxDB holds is what the reference model says for the same messages.
            result = process(messages, model)
            for tick in result.ticks:
                model.remember(tick.series, tick.time_ns, tick.price, tick.message.stream_seq)
                expected_points.add((tick.time_ns, tick.asset, tick.point["tags"]["source"],
                                     tick.price))  # fmt: skip
            stored = admin.query("SELECT price, asset, source FROM price")
            rows = zip(stored.index, stored["asset"], stored["source"], stored["price"])
            got = {(t.value, a, s, p) for t, a, s, p in rows}
            assert got == expected_points, f"round {number}, seed {SEED}"
            held = admin.query("SELECT count(raw) FROM quarantine")
            assert int(held["count"].iloc[0]) == stats["quarantined_total"], f"seed {SEED}"

            # Every valid tick is there, with its exact price and time.
            valid = [tick for _, _, tick in drawn if tick is not None]
            valid_total += len(valid)
            mine = admin.query("SELECT price, asset FROM price WHERE source = $s", {"s": tag})
            by_time = dict(zip(mine.index, zip(mine["asset"], mine["price"])))
            for tick in valid:
                assert by_time[pd.Timestamp(tick["time"])] == (tick["asset"], tick["price"])
            assert status(service, "/readyz") == 200 and status(service, "/healthz") == 200

        final = counts(service)
    print(
        f"property test: {published:,} messages of {len(kinds)} kinds in {ROUNDS} rounds "
        f"({valid_total:,} valid ticks; {final['stored']:,} stored, "
        f"{final['quarantined_total']:,} quarantined: {final['quarantined']}); "
        f"slowest round {slowest:.2f} s"
    )
    assert len(kinds) == len(set(KINDS))  # every kind was drawn
    assert valid_total == len(generator.sent) and valid_total > 100


# ---------------------------------------------------------------------------- dead letters


def test_the_5000_level_json_of_the_report_no_longer_stalls_the_valid_tick_behind_it(
    stack, admin, worker_env
):
    deep = b'{"a": ' * 5000 + b"1" + b"}" * 5000  # nested 5,000 levels deep
    deep_array = b"[" * 5000 + b"]" * 5000
    tick = {"asset": "btc", "price": 63_000.5, "time": "2024-06-01T00:00:00Z", "source": "t"}
    with run_app(stack, "ingest", env=worker_env, ready=True) as service:
        started = time.monotonic()
        publish(stack, [deep, deep_array, json.dumps(tick).encode()])
        wait_for(
            lambda: len(admin.query("SELECT price FROM price")) == 1, 10, "the valid tick stored"
        )
        took = time.monotonic() - started
        stats = counts(service)
        assert status(service, "/readyz") == 200 and status(service, "/healthz") == 200
    print(f"\nthe valid tick behind two 5,000-level JSON bodies was stored {took:.2f} s later")
    assert stats["quarantined"] == {"JSON nested too deeply": 2}
    assert stats["redeliveries"] == 0 and stats["write_errors"] == 0
    held = admin.query("SELECT reason, raw FROM quarantine")
    assert sorted(held["reason"]) == ["JSON nested too deeply"] * 2
    assert took < 10


def test_a_message_delivered_max_deliver_times_is_poison_and_the_stream_moves_on(
    stack, admin, worker_env
):
    durable = worker_env["INGEST_DURABLE"]
    poison = b"\x00\xffnot a tick, delivered four times already"
    tick = {"asset": "eth", "price": 3_000.25, "time": "2024-06-01T00:00:00Z", "source": "t"}

    async def deliver_four_times(nc, js):
        # Four deliveries that never end in an ack: what a worker that dies on a message does.
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=5,
            max_deliver=-1,
        )
        await js.add_consumer(STREAM, config=config)
        sub = await js.pull_subscribe_bind(durable, stream=STREAM)
        await js.publish("ticks.prop", poison)
        for _ in range(4):
            (msg,) = await sub.fetch(1, timeout=5)
            assert msg.data == poison
            await msg.nak()
        await js.publish("ticks.prop", json.dumps(tick).encode())
        await sub.unsubscribe()

    run(stack, deliver_four_times)
    launched = time.monotonic()
    with run_app(stack, "ingest", env=worker_env) as service:
        answering = time.monotonic() - launched
        wait_for(lambda: len(admin.query("SELECT price FROM price")) == 1, 15, "the tick stored")
        took = time.monotonic() - launched
        stats = counts(service)
        wait_for(lambda: status(service, "/readyz") == 200, 10, "ready")
        assert status(service, "/healthz") == 200
    # Both are written in the worker's first batch: the poison message costs it no extra time.
    print(
        f"\na worker started on a poison message (5th delivery) and the tick behind it: both "
        f"written {took:.2f} s after its launch (it answered HTTP after {answering:.2f} s), "
        f"in {stats['batches']} batch(es)"
    )
    assert stats["quarantined"] == {POISON: 1} and stats["poison"] == 1
    assert stats["redeliveries"] == 1  # the poison message, at its 5th delivery
    (record,) = admin.query("SELECT raw, asset FROM quarantine WHERE reason = $r",
                            {"r": POISON}).itertuples()  # fmt: skip
    assert record.raw == "\\x00\\xffnot a tick, delivered four times already"

    async def consumer(nc, js):
        return await js.consumer_info(STREAM, durable)

    info = run(stack, consumer)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acknowledged: never again
