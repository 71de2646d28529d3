"""Adding an asset is dropping its CSV file in the data folder and adding one catalogue entry.

A stock the lab has never heard of, ``acme``, with a CSV made up here (gaps of a week and one
row twice), is registered while the services run, and followed all the way: file -> clean
-> InfluxDB -> api -> its chart in the dashboard (headless Chromium), and through the stream:
the source replays it -> NATS -> ingest -> the api's live stream.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import nats
import numpy as np
import pandas as pd
import pytest
import requests

from lab_helpers import catalogue, data, etl
from lab_helpers.broker import STREAM, ensure_stream
from lab_helpers.influx import quote_ident
from lab_helpers.wait import wait_for
from tests.browser import chromium, require_browser
from tests.services import StreamListener, run_app
from tests.test_dashboard import WAIT_MS

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DURABLE = "new_asset"  # the ingest consumer of this test
ACME = {
    "title": "Acme Corporation",
    "kind": "stock",
    "unit": "USD/share",
    "earliest": "1990-01-02",
    "ceiling": 10_000.0,
    "jump": 0.25,
    "aliases": ["acmecorp"],
    "files": [
        {
            "file": "acme_usd_daily.csv",
            "frequency": "daily",
            "source": "spot",
            "time": "us_market_close",
            "publisher": "made up by tests/test_new_asset.py",
            "description": "Acme daily close in USD per share, with gaps and one row twice",
        }
    ],
}


def acme_csv(folder: Path) -> pd.DataFrame:
    """Business days of 2024 with two gaps of a week and one row written twice; the rows."""
    rng = np.random.default_rng(42)
    days = pd.bdate_range("2024-01-02", "2024-06-28")
    days = days[~((days >= "2024-02-05") & (days < "2024-02-12"))]  # a week without prices
    days = days[~((days >= "2024-04-08") & (days < "2024-04-15"))]  # and another
    walk = 100 * np.exp(rng.normal(0, 0.01, len(days)).cumsum())
    rows = pd.DataFrame({"time": days.strftime("%Y-%m-%d"), "price": np.round(walk, 2)})
    rows = pd.concat([rows, rows.iloc[[10]]]).sort_values("time", kind="stable")  # a duplicate
    rows.to_csv(folder / "acme_usd_daily.csv", index=False)
    return rows


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    """A data folder of its own (the lab's files and catalogue, and ACME's CSV), used by this
    test and by the services it starts (``LAB_DATA_DIR``)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for path in DATA_DIR.iterdir():
        if path.suffix == ".csv":
            (folder / path.name).symlink_to(path)
    shutil.copy(DATA_DIR / catalogue.FILE_NAME, folder)
    monkeypatch.setenv("LAB_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def database(stack, admin):
    """The ``admin`` fixture's database, which the ingest user may write and the reader read,
    and an empty TICKS stream (what other tests published must not reach this one's worker)."""
    settings = stack.settings
    for role, right in (("ingest", "WRITE"), ("reader", "READ")):
        user = quote_ident(settings.credentials(role).username)
        admin.execute(f"GRANT {right} ON {quote_ident(admin.database)} TO {user}")

    async def on_stream(work):
        nc = await nats.connect(settings.require_nats_url())
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            await work(js)
        finally:
            await nc.close()

    asyncio.run(on_stream(lambda js: js.purge_stream(STREAM)))
    yield admin
    asyncio.run(on_stream(lambda js: js.delete_consumer(STREAM, DURABLE)))


def test_a_new_asset_goes_from_its_file_to_the_dashboard_and_through_the_stream(
    stack, database, data_folder
):
    require_browser()
    rows = acme_csv(data_folder)
    env = {"LAB_INFLUX_DB": database.database, "LAB_DATA_DIR": str(data_folder)}
    ingest_env = env | {"INGEST_DURABLE": DURABLE, "INGEST_ACK_WAIT": "5"}
    with run_app(stack, "ingest", ingest_env, ready=True), run_app(stack, "api", env) as api:
        # Not known yet: the api refuses it.
        assert requests.get(api.url + "/api/prices/acme", timeout=10).status_code == 400

        # Register it while the services run: one catalogue entry.
        asset = catalogue.add_asset("acme", data_dir=data_folder, **ACME)
        assert asset.unit == "USD/share"

        # File -> clean: the duplicate row is quarantined, the gaps stay gaps.
        prices = data.load_prices("ACMECORP", data_dir=data_folder)
        assert len(prices) == len(rows)
        result = etl.clean(prices)
        assert result.counts == {"duplicate": 1}
        clean = result.clean
        assert len(clean) == len(rows) - 1
        week = pd.Timedelta(days=7)
        assert (clean["time"].diff() >= week).sum() == 2  # the two missing weeks
        # A US close: 16:00 New York, 21:00 UTC in winter, 20:00 in summer.
        assert clean["time"].iloc[0] == pd.Timestamp("2024-01-02 21:00", tz="UTC")

        # -> InfluxDB -> api.
        report = database.write(
            clean.assign(source="file"), "price", tags=["asset", "source"], fields=["price"],
            time="time",
        )  # fmt: skip
        assert report.written == len(clean)
        answer = requests.get(api.url + "/api/assets", timeout=10).json()
        listed = {a["asset"]: a for a in answer["assets"]}
        assert listed["acme"] | {"latest_time": None} == {
            "asset": "acme", "title": "Acme Corporation", "kind": "stock", "unit": "USD/share",
            "latest_time": None, "latest_price": clean["price"].iloc[-1], "points": len(clean),
        }  # fmt: skip
        series = requests.get(api.url + "/api/prices/acme", timeout=10).json()
        got = {pd.Timestamp(p["time"]): p["price"] for p in series["points"]}
        assert got == dict(zip(clean["time"], clean["price"]))

        # -> its chart in the dashboard.
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(api.url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
            drawn = page.evaluate("() => document.getElementById('chart-acme').data[0].y")
            title = page.locator("#chart-acme").locator("xpath=..").locator("h3").text_content()
            note_hidden = page.locator("#empty-acme").is_hidden()
        assert drawn == clean["price"].tolist()
        assert title == "ACME (USD/share)" and note_hidden

        # The stream: source replay -> NATS -> ingest -> api live stream.
        listener = StreamListener(api.url, count=len(clean), timeout=60)
        listener.start()
        assert listener.connected.wait(10)
        source_env = env | {"SOURCE_ASSETS": "acme", "SOURCE_RATE": "500"}
        with run_app(stack, "source", source_env) as source:
            listener.join(timeout=60)
            sent = wait_for(lambda: (s := requests.get(source.url + "/stats", timeout=5).json())
                            ["state"] == "finished" and s, 30, "the source to finish")  # fmt: skip
        assert sent["total"] == len(rows)
    live = listener.ticks
    assert len(live) == len(clean)
    assert {t["asset"] for t in live} == {"acme"} and {t["source"] for t in live} == {"replay"}
    assert sorted((pd.Timestamp(t["time"]), t["price"]) for t in live) == list(
        zip(clean["time"], clean["price"])
    )
    held = database.query("SELECT raw, reason FROM quarantine")
    assert held["reason"].tolist() == ["duplicate"]  # the row the file has twice, once more
