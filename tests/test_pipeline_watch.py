"""Watching the pipeline from a notebook (lab_helpers.pipeline_watch), against a whole local
stack of its own: the source paused and started again with bad records, the ingest workers'
counters followed, and the three witnesses (plan, /stats, InfluxDB) compared."""

import asyncio
from collections import Counter

import nats
import pandas as pd
import pytest

from lab_helpers import InfluxDB, replay
from lab_helpers.pipeline_watch import Watch
from lab_helpers.stack import LocalStack

from .conftest import require_servers

TICKS = 60


@pytest.mark.integration
def test_watch_restarts_the_source_and_follows_what_ingest_does(tmp_path):
    require_servers()
    stack = LocalStack(tmp_path / "lab")

    async def scenario():
        nc = await nats.connect(stack.settings.require_nats_url())
        try:
            watch = Watch(stack, InfluxDB.connect(settings=stack.settings), nc.jetstream())
            frontier = await watch.pause_source()
            assert await watch.backlog() == 0 and frontier is not None
            assert "source" not in {s.name for s in stack.status() if s.healthy}
            start = (frontier + pd.Timedelta("1min")).isoformat()
            plan = replay.ReplayConfig(dataset="btc_usd_1min", start=start, bad_share=0.3, seed=5)
            records = list(replay.records(plan, limit=TICKS))
            expected = Counter(
                replay.EXPECTED_REASON[k] for k, _ in records if replay.EXPECTED_REASON[k]
            )
            settings = {
                "SOURCE_DATASET": "btc_usd_1min", "SOURCE_START": start, "SOURCE_BAD_SHARE": "0.3",
                "SOURCE_SEED": "5", "SOURCE_LIMIT": str(TICKS), "SOURCE_RATE": "200",
            }  # fmt: skip
            source = watch.start_source(settings)
            assert source in {s.url for s in stack.status() if s.name == "source" and s.healthy}
            timeline = await watch.follow(TICKS)
            assert timeline["received"].is_monotonic_increasing
            assert timeline["received"].iloc[-1] == TICKS
            assert await watch.idle() == 0
            received, stored, counted = watch.counted()
            assert received == TICKS and stored == TICKS - sum(expected.values())
            table = watch.compare(expected)
            assert (table["source sent"] == table["ingest /stats"]).all()
            assert (table["source sent"] == table["InfluxDB quarantine"]).all()
            assert table["source sent"].sum() == sum(expected.values()) > 0
            last = records[-1][1]["time"]
            assert watch.last_stored_minute() >= pd.Timestamp(last) - pd.Timedelta("10min")
        finally:
            await nc.close()

    try:
        stack.up()
        asyncio.run(scenario())
    finally:
        stack.down()
