"""NATS JetStream from the local stack: durable pull consumer with explicit acks."""

import asyncio

import nats
from nats.js.api import ConsumerConfig, StreamConfig


def test_jetstream_publish_and_durable_consume(settings):
    async def scenario():
        nc = await nats.connect(settings.require_nats_url())
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="TEST_TICKS", subjects=["test.ticks.>"]))
        for i in range(100):
            ack = await js.publish(f"test.ticks.{'btc' if i % 2 else 'eth'}", str(i).encode())
            assert ack.stream == "TEST_TICKS"
        sub = await js.pull_subscribe(
            "test.ticks.>", durable="worker", config=ConsumerConfig(ack_wait=5)
        )
        first = await sub.fetch(60, timeout=2)
        for msg in first:
            await msg.ack()
        await sub.unsubscribe()
        # A new subscriber on the same durable resumes after what was acknowledged.
        sub = await js.pull_subscribe("test.ticks.>", durable="worker")
        rest = await sub.fetch(100, timeout=2)
        for msg in rest:
            await msg.ack()
        await sub.unsubscribe()
        await js.delete_stream("TEST_TICKS")
        await nc.close()
        return [m.data.decode() for m in first], [m.data.decode() for m in rest]

    first, rest = asyncio.run(scenario())
    assert first + rest == [str(i) for i in range(100)]
    assert len(first) == 60
