"""Integration tests of the api service: a real process against the real InfluxDB and NATS.

Known points are written into the shared ``prices`` database, all within the year 2150 so
that no other test's data can change the answers, and deleted at the end. Expected values
are computed independently with pandas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import nats
import numpy as np
import pandas as pd
import pytest
import requests

from lab_helpers.influx import InfluxDB
from lab_helpers.stack import free_port
from lab_helpers.wait import wait_for
from tests.services import run_app

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("2150-01-01", tz="UTC")
WINDOW = ("2150-01-01T00:00:00Z", "2151-01-01T00:00:00Z")
SOURCE = "api-test"
QUARANTINED = [  # (minutes after T0, reason, asset, raw): the raw texts must come back exactly
    (1, "invalid JSON", "", '{"asset": "btc", "price": '),
    (2, "price not a number", "btc", '{"asset":"btc","price":"abc","time":"2150-01-01T00:00:00Z"}'),
    (3, "invalid JSON", "", "<img src=x onerror=alert(1)>"),
    (4, "not a JSON object", "", "42"),
    (5, "invalid JSON", "", 'with "quotes", commas\nand a newline'),
    (6, "price not a number", "eth", '{"asset":"eth","price":null}'),
]


# -- helpers shared with test_dashboard.py -----------------------------------------------------


def known_prices() -> pd.DataFrame:
    """The points the tests write: tidy rows time, asset, price (deterministic)."""
    rng = np.random.default_rng(2150)
    btc_times = T0 + pd.to_timedelta(np.arange(360), unit="min")  # 6 hours, one a minute
    eth_times = T0 + pd.to_timedelta(np.arange(50) * 10, unit="s")
    frames = [
        pd.DataFrame(
            {"time": btc_times, "asset": "btc", "price": 60_000 + rng.normal(0, 50, 360).cumsum()}
        ),
        pd.DataFrame({"time": eth_times, "asset": "eth", "price": rng.uniform(3_000, 3_100, 50)}),
        pd.DataFrame({"time": [T0 + pd.Timedelta(hours=3)], "asset": "gold", "price": [2_345.5]}),
        # Fractions of a second, down to one nanosecond, must survive the round trip.
        pd.DataFrame(
            {
                "time": T0 + pd.Timedelta(days=1) + pd.to_timedelta([500, 1_250, 2_000], "ms"),
                "asset": "sol",
                "price": [150.25, 151.5, 149.75],
            }
        ),
    ]
    df = pd.concat(frames, ignore_index=True)
    df["time"] = df["time"].astype("datetime64[ns, UTC]")
    df.loc[len(df) - 1, "time"] += pd.Timedelta(1, "ns")
    return df


@contextlib.contextmanager
def seeded(settings) -> Iterator[pd.DataFrame]:
    """Write :func:`known_prices` and :data:`QUARANTINED`; delete them afterwards."""
    admin = InfluxDB.connect("admin", settings=settings)
    prices = known_prices()
    admin.write(prices.assign(source=SOURCE), "price", tags=["asset", "source"], time="time")
    admin.write(
        [
            {
                "measurement": "quarantine",
                "tags": {"reason": reason},
                "fields": {"raw": raw, "asset": asset},
                "time": T0 + pd.Timedelta(minutes=minutes),
            }
            for minutes, reason, asset, raw in QUARANTINED
        ]
    )
    try:
        yield prices
    finally:
        for measurement in ("price", "quarantine"):
            admin.execute(
                f"DELETE FROM {measurement} WHERE time >= $start AND time < $end",
                params={"start": WINDOW[0], "end": WINDOW[1]},
            )


async def _publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(url)
    try:
        for subject, body in messages:
            await nc.publish(subject, body)
        await nc.flush()
    finally:
        await nc.close()


def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``(subject, body)`` pairs on plain NATS, as the ingest workers do.

    In a thread of its own: Playwright's sync API keeps an event loop in the main thread.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(_publish(url, messages))).result()


def tick(asset: str, price: float, when: str, **extra) -> tuple[str, bytes]:
    """A clean tick message for ``clean.<asset>``."""
    body = {"asset": asset, "price": price, "time": when, "source": SOURCE, **extra}
    return f"clean.{asset}", json.dumps(body).encode()


def iso(ts: pd.Timestamp) -> str:
    """How the api writes a time: ISO-8601 UTC, a fraction only when there is one."""
    text = ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")
    nanos = ts.as_unit("ns").value % 1_000_000_000
    return text + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


def get(service, path: str, **params) -> requests.Response:
    return requests.get(service.url + path, params=params, timeout=10)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(stack):
    with seeded(stack.settings) as prices:
        yield prices


@pytest.fixture(scope="module")
def api(stack, data):
    with run_app(stack, "api", env={"API_STREAM_HEARTBEAT": "0.5"}, ready=True) as service:
        yield service


def influx_query_requests(stack) -> int:
    """How many /query requests InfluxDB has received (its own statistics)."""
    stats = requests.get(stack.settings.influx_url + "/debug/vars", timeout=5).json()
    httpd = next(v for k, v in stats.items() if k.startswith("httpd"))
    return httpd["values"]["queryReq"]


# -- REST --------------------------------------------------------------------------------------


def test_assets_lists_every_asset_with_its_latest_price(api, data, stack):
    resp = get(api, "/api/assets")
    assert resp.status_code == 200
    assets = {a["asset"]: a for a in resp.json()["assets"]}
    assert list(assets) == ["btc", "eth", "xrp", "ltc", "sol", "gold", "silver", "platinum"]
    admin = InfluxDB.connect("admin", settings=stack.settings)
    for asset, rows in data.groupby("asset"):
        newest = rows.loc[rows["time"].idxmax()]
        assert assets[asset]["latest_time"] == iso(newest["time"])
        assert assets[asset]["latest_price"] == newest["price"]
        stored = admin.query("SELECT count(price) FROM price WHERE asset = $a", params={"a": asset})
        assert assets[asset]["points"] == int(stored.iloc[0, 0])
    assert assets["btc"]["kind"] == "crypto" and assets["btc"]["unit"] == "USD/coin"
    assert assets["gold"]["kind"] == "metal" and assets["gold"]["unit"] == "USD/ozt"


def test_prices_in_a_range_are_exactly_the_stored_points(api, data):
    start, end = T0 + pd.Timedelta(minutes=10), T0 + pd.Timedelta(minutes=70)
    # Aliases and time zones are understood: BTC-USD is btc, 01:10+01:00 is 00:10Z.
    resp = get(api, "/api/prices/BTC-USD", start="2150-01-01T01:10:00+01:00", end=iso(end))
    assert resp.status_code == 200
    body = resp.json()
    btc = data[data["asset"] == "btc"]
    want = btc[(btc["time"] >= start) & (btc["time"] < end)]  # start included, end excluded
    assert body["asset"] == "btc" and body["every"] is None and body["agg"] is None
    assert body["start"] == iso(start) and body["end"] == iso(end)
    assert body["count"] == len(want) == 60 and body["truncated"] is False
    assert [p["time"] for p in body["points"]] == [iso(t) for t in want["time"]]
    assert [p["price"] for p in body["points"]] == want["price"].tolist()


def test_prices_keep_fractions_of_a_second(api, data):
    body = get(api, "/api/prices/sol", start=WINDOW[0], end=WINDOW[1]).json()
    assert [p["time"] for p in body["points"]] == [
        "2150-01-02T00:00:00.5Z",
        "2150-01-02T00:00:01.25Z",
        "2150-01-02T00:00:02.000000001Z",
    ]
    assert [p["price"] for p in body["points"]] == [150.25, 151.5, 149.75]


@pytest.mark.parametrize("agg", ["mean", "median", "first", "last", "min", "max"])
@pytest.mark.parametrize("every,freq", [("1h", "1h"), ("7m", "420s")])
def test_downsampled_prices_match_pandas(api, data, agg, every, freq):
    start, end = T0 + pd.Timedelta(minutes=5), T0 + pd.Timedelta(hours=5)
    resp = get(api, "/api/prices/btc", start=iso(start), end=iso(end), every=every, agg=agg)
    assert resp.status_code == 200
    body = resp.json()
    btc = data[(data["asset"] == "btc") & (data["time"] >= start) & (data["time"] < end)]
    # InfluxDB's buckets start at whole multiples of `every` since 1970, like origin="epoch".
    want = getattr(btc.set_index("time")["price"].resample(freq, origin="epoch"), agg)().dropna()
    assert body["every"] == every and body["agg"] == agg and body["count"] == len(want)
    assert [p["time"] for p in body["points"]] == [iso(t) for t in want.index]
    assert [p["price"] for p in body["points"]] == pytest.approx(want.tolist(), rel=1e-12)


def test_a_limit_keeps_the_latest_points_and_says_so(api, data):
    btc = data[data["asset"] == "btc"]
    body = get(api, "/api/prices/btc", start=WINDOW[0], end=WINDOW[1], limit=5).json()
    assert body["truncated"] is True and body["count"] == 5
    assert [p["time"] for p in body["points"]] == [iso(t) for t in btc["time"].iloc[-5:]]
    exact = get(api, "/api/prices/btc", start=WINDOW[0], end=WINDOW[1], limit=360).json()
    assert exact["truncated"] is False and exact["count"] == 360
    hourly = get(api, "/api/prices/btc", start=WINDOW[0], end=WINDOW[1], every="1h", limit=2)
    assert [p["time"] for p in hourly.json()["points"]] == [
        "2150-01-01T04:00:00Z",
        "2150-01-01T05:00:00Z",
    ]


def test_summary_matches_pandas(api, data):
    start, end = T0 + pd.Timedelta(minutes=30), T0 + pd.Timedelta(hours=4)
    body = get(api, "/api/summary/btc", start=iso(start), end=iso(end)).json()
    btc = data[(data["asset"] == "btc") & (data["time"] >= start) & (data["time"] < end)]
    prices = btc["price"]
    assert body["asset"] == "btc" and body["count"] == len(btc) == 210
    assert body["first"] == prices.iloc[0] and body["last"] == prices.iloc[-1]
    assert body["min"] == prices.min() and body["max"] == prices.max()
    assert body["mean"] == pytest.approx(prices.mean(), rel=1e-12)
    assert body["stddev"] == pytest.approx(prices.std(ddof=1), rel=1e-9)
    assert body["first_time"] == iso(btc["time"].iloc[0])
    assert body["last_time"] == iso(btc["time"].iloc[-1])


def test_summary_of_one_point_and_of_an_empty_range(api, data):
    gold = get(api, "/api/summary/gold", start=WINDOW[0], end=WINDOW[1]).json()
    assert gold["count"] == 1 and gold["first"] == gold["last"] == gold["mean"] == 2345.5
    assert gold["stddev"] is None  # undefined for one point
    empty = get(api, "/api/summary/gold", start="2150-06-01", end="2150-07-01").json()
    assert empty["count"] == 0
    assert all(empty[k] is None for k in ("first", "last", "min", "max", "mean", "stddev"))
    assert empty["first_time"] is None and empty["last_time"] is None


def test_quarantine_counts_per_reason_and_latest_records(api, data):
    body = get(api, "/api/quarantine", start=WINDOW[0], end=WINDOW[1], latest=4).json()
    assert body["total"] == len(QUARANTINED)
    assert body["reasons"] == [
        {"reason": "invalid JSON", "count": 3},
        {"reason": "price not a number", "count": 2},
        {"reason": "not a JSON object", "count": 1},
    ]
    newest = sorted(QUARANTINED, reverse=True)[:4]
    assert body["latest"] == [
        {"time": iso(T0 + pd.Timedelta(minutes=m)), "reason": reason, "asset": asset, "raw": raw}
        for m, reason, asset, raw in newest
    ]


# -- bad parameters and injection attempts -----------------------------------------------------

BAD_PARAMETERS = [
    ("/api/prices/doge", {}, "asset"),
    ("/api/summary/nothing", {}, "asset"),
    ("/api/prices/btc", {"every": "1x"}, "every"),
    ("/api/prices/btc", {"every": "0s"}, "every"),
    ("/api/prices/btc", {"every": "366d"}, "every"),
    ("/api/prices/btc", {"every": "1.5h"}, "every"),
    ("/api/prices/btc", {"every": "1h", "agg": "avg"}, "agg"),
    ("/api/prices/btc", {"agg": "mean"}, "agg"),  # agg without every
    ("/api/prices/btc", {"start": "2150-01-02", "end": "2150-01-01"}, "end"),
    ("/api/prices/btc", {"start": "2150-01-01", "end": "2150-01-01T00:00:00Z"}, "end"),
    ("/api/prices/btc", {"limit": "0"}, "limit"),
    ("/api/prices/btc", {"limit": "100001"}, "limit"),
    ("/api/prices/btc", {"limit": "20000"}, "limit"),  # above API_MAX_POINTS (10,000)
    ("/api/prices/btc", {"limit": "ten"}, "limit"),
    ("/api/prices/btc", {"start": "2021-02-30"}, "start"),
    ("/api/prices/btc", {"start": "yesterday"}, "start"),
    ("/api/prices/btc", {"end": "2150-01-01T25:00:00Z"}, "end"),
    ("/api/prices/btc", {"start": "1500-01-01"}, "start"),
    ("/api/summary/btc", {"start": "-3d", "end": "-4d"}, "end"),
    ("/api/quarantine", {"latest": "101"}, "latest"),
    ("/api/quarantine", {"start": "14/04/2021"}, "start"),
    ("/api/stream", {"assets": "btc,doge"}, "assets"),
]


@pytest.mark.parametrize("path,params,parameter", BAD_PARAMETERS)
def test_bad_parameters_get_a_400_that_names_them(api, path, params, parameter):
    resp = get(api, path, **params)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"].startswith(f"{parameter}: ") and len(body["error"]) > len(parameter) + 5
    assert "Traceback" not in resp.text


INJECTIONS = [
    ("/api/prices/" + quote("btc' OR 1=1"), {}, "asset"),
    ("/api/prices/" + quote('btc" OR asset =~ .* --'), {}, "asset"),
    ("/api/summary/" + quote("btc'; DROP MEASUREMENT price; --"), {}, "asset"),
    ("/api/prices/" + quote("$asset"), {}, "asset"),
    ("/api/prices/btc", {"every": "1h);DROP MEASUREMENT price;--"}, "every"),
    ("/api/prices/btc", {"every": "1h) fill(0"}, "every"),
    ("/api/prices/btc", {"every": "1h", "agg": "mean(price)) FROM x--"}, "agg"),
    ("/api/prices/btc", {"every": "1h", "agg": "count"}, "agg"),
    ("/api/prices/btc", {"start": "2021-01-01' OR time > 0 --"}, "start"),
    ("/api/prices/btc", {"end": "now() - 1000w"}, "end"),
    ("/api/summary/btc", {"start": "0"}, "start"),
    ("/api/prices/btc", {"limit": "1; DROP DATABASE prices"}, "limit"),
    ("/api/quarantine", {"start": "'; SHOW USERS; --"}, "start"),
    ("/api/stream", {"assets": "btc,eth' OR 1=1"}, "assets"),
]


def test_injection_attempts_never_reach_influxdb(api, data, stack):
    admin = InfluxDB.connect("admin", settings=stack.settings)
    stored = admin.count("price"), admin.count("quarantine", "raw")
    queries_before = influx_query_requests(stack)
    for path, params, parameter in INJECTIONS:
        resp = get(api, path, **params)
        assert resp.status_code == 400, (path, params, resp.text)
        assert resp.json()["error"].startswith(f"{parameter}: "), (path, params)
    # Rejected before any query was sent: InfluxDB counted no request at all.
    assert influx_query_requests(stack) == queries_before
    assert (admin.count("price"), admin.count("quarantine", "raw")) == stored
    assert get(api, "/api/summary/btc", start=WINDOW[0], end=WINDOW[1]).json()["count"] == 360


# -- schema, health, metrics, page -------------------------------------------------------------


def test_openapi_schema_documents_the_endpoints(api):
    schema = get(api, "/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/assets", "/api/prices/{asset}", "/api/summary/{asset}"):
        assert path in paths and paths[path]["get"]["description"]
    for path in ("/api/quarantine", "/api/stream"):
        assert path in paths
    prices = paths["/api/prices/{asset}"]["get"]
    params = {p["name"]: p for p in prices["parameters"]}
    assert set(params) == {"asset", "start", "end", "every", "agg", "limit"}
    assert params["limit"]["schema"]["anyOf"][0]["maximum"] == 100_000
    assert params["every"]["schema"]["pattern"] and params["every"]["schema"]["examples"] == ["1h"]
    assert {"400", "503"} <= set(prices["responses"]) and "422" not in prices["responses"]
    # No page that needs a CDN (Swagger UI would load its code from one).
    assert get(api, "/docs").status_code == 404


def test_readyz_and_metrics(api):
    ready = get(api, "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    get(api, "/api/assets")
    text = get(api, "/metrics").text
    assert re.search(r'api_requests_total\{route="/api/assets",status="200"\} [1-9]', text)
    assert 'api_request_seconds_bucket{le="0.1",route="/api/assets"}' in text
    for name in ("api_stream_clients", "api_stream_ticks_total", "api_stream_dropped_clients"):
        assert name in text


def test_dashboard_page_is_self_contained_and_has_security_headers(api):
    page = get(api, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every script is a file of this server; no inline code, no other host.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all(not body.strip() for _, body in scripts)
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    plotly = get(api, "/static/plotly.min.js")
    assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
    assert len(plotly.content) > 1_000_000
    assert get(api, "/static/dashboard.js").status_code == 200
    assert get(api, "/static/..%2Fmain.py").status_code == 404
    assert "innerHTML" not in get(api, "/static/dashboard.js").text


# -- the live stream ---------------------------------------------------------------------------


def metric(service, name: str) -> float:
    """The value of an unlabelled metric of a running service."""
    match = re.search(rf"^{name} (\S+)$", get(service, "/metrics").text, re.M)
    return float(match[1]) if match else 0.0


def sse_events(lines: Iterator[str], deadline: float) -> Iterator[tuple[str, str]]:
    """``(event, data)`` pairs from SSE lines; comments yield ``("comment", text)``."""
    event, data = "message", []
    for line in lines:
        if time.monotonic() > deadline:
            raise AssertionError("the stream did not deliver in time")
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, "\n".join(data)
            event, data = "message", []


@contextlib.contextmanager
def open_stream(service, query: str = "") -> Iterator[Iterator[tuple[str, str]]]:
    """An SSE connection, read once the server says it is subscribed."""
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{service.url}/api/stream{query}") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = sse_events(resp.iter_lines(), time.monotonic() + 15)
            assert next(events) == ("comment", "connected")
            yield events


def test_stream_delivers_the_ticks_of_the_chosen_assets(api, stack):
    payload = "<img src=x onerror=alert(1)>"
    with open_stream(api, "?assets=btc,gold") as events:
        publish(
            stack.settings.nats_url,
            [
                tick("eth", 3000.0, "2150-02-01T00:00:00Z"),  # not asked for
                ("clean.btc", b"not json at all"),  # skipped, the stream goes on
                tick("btc", 61000.5, "2150-02-01T00:00:00Z", seq=1),
                tick("gold", 2400.25, "2150-02-01T00:00:01Z", seq=2, note=payload),
            ],
        )
        ticks = []
        for event, data in events:
            if event == "tick":
                ticks.append(json.loads(data))
            if len(ticks) == 2:
                break
        # A heartbeat follows within API_STREAM_HEARTBEAT (0.5 s here) when nothing happens.
        assert next(events) == ("comment", "heartbeat")
    assert [(t["asset"], t["price"], t["seq"]) for t in ticks] == [
        ("btc", 61000.5, 1),
        ("gold", 2400.25, 2),
    ]
    assert ticks[1]["note"] == payload  # data is passed on as JSON, untouched
    assert metric(api, "api_stream_ticks_total") == 3  # eth counts: it reached the api
    assert metric(api, "api_stream_bad_messages_total") == 1


def test_a_slow_stream_client_is_dropped_not_the_server(stack):
    env = {"API_STREAM_QUEUE": "1", "API_STREAM_HEARTBEAT": "30"}
    with run_app(stack, "api", env=env) as api:
        burst = [tick("btc", 1.0 + i, "2150-03-01T00:00:00Z", seq=i) for i in range(300)]
        with open_stream(api) as events:
            assert metric(api, "api_stream_clients") == 1

            def dropped() -> bool:
                publish(stack.settings.nats_url, burst)  # faster than a queue of 1 drains
                return metric(api, "api_stream_dropped_clients_total") >= 1

            wait_for(dropped, 10, "the slow client to be dropped", every=0)
            # The dropped client's stream ends: reading it to the end returns (what was sent
            # before can still be read); an open stream would time out instead.
            assert all(event == "tick" for event, _ in events)
        assert metric(api, "api_stream_clients") == 0
        # The server keeps serving: a new client gets the next tick.
        with open_stream(api, "?assets=btc") as events:
            publish(stack.settings.nats_url, [tick("btc", 7.0, "2150-03-01T00:01:00Z")])
            event, data = next(e for e in events if e[0] == "tick")
            assert json.loads(data)["price"] == 7.0


def test_sigterm_with_a_stream_client_connected_exits_0(stack):
    with run_app(stack, "api") as api:
        ended = threading.Event()

        def listen():
            with open_stream(api) as events:
                for _ in events:
                    pass
            ended.set()

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        wait_for(lambda: metric(api, "api_stream_clients") >= 1, 10, "the stream client to connect",
                 every=0.05)  # fmt: skip
        started = time.monotonic()
        assert api.stop() == 0
        took = time.monotonic() - started
        assert ended.wait(5), "the stream was not closed on shutdown"
        assert took < 5, f"stopping took {took:.1f} s with a stream open"


# -- failures and configuration ----------------------------------------------------------------


@contextlib.contextmanager
def tcp_forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    """Listen on ``port`` and pass every connection on to ``target`` (a stand-in for a
    server coming back at its old address)."""
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_influxdb_unreachable_gives_503_json_then_recovers(stack, data):
    port = free_port()  # nothing listens here: InfluxDB "is down"
    env = {"LAB_INFLUX_URL": f"http://127.0.0.1:{port}"}
    with run_app(stack, "api", env=env) as api:
        paths = ["/api/assets", "/api/prices/btc", "/api/summary/btc", "/api/quarantine"]
        for path in paths:
            resp = get(api, path)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.json() == {
                "error": "the price database (InfluxDB) is not reachable right now: try again soon"
            }
        ready = get(api, "/readyz")
        assert ready.status_code == 503 and "influxdb" in ready.json()["problems"]
        assert get(api, "/healthz").status_code == 200
        real = stack.settings.influx_url.rsplit(":", 1)[-1]
        with tcp_forwarder(port, ("127.0.0.1", int(real))):  # InfluxDB "is back"

            def summary() -> requests.Response | None:
                resp = get(api, "/api/summary/btc", start=WINDOW[0])
                return resp if resp.status_code == 200 else None

            resp = wait_for(summary, 10, "InfluxDB to answer through the api again")
            assert resp.json()["count"] == 360
            assert get(api, "/readyz").status_code == 200
        assert "Traceback" not in api.output()


def test_cors_is_closed_by_default_and_open_to_listed_origins(stack, api):
    foreign = {"Origin": "http://evil.example"}
    resp = requests.get(api.url + "/api/assets", headers=foreign, timeout=10)
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
    allowed = "http://dashboard.example:8080"
    with run_app(stack, "api", env={"API_CORS_ORIGINS": f"{allowed}, https://x.example"}) as app:
        resp = requests.get(app.url + "/api/assets", headers={"Origin": allowed}, timeout=10)
        assert resp.headers["access-control-allow-origin"] == allowed
        resp = requests.get(app.url + "/api/assets", headers=foreign, timeout=10)
        assert "access-control-allow-origin" not in resp.headers


@pytest.mark.parametrize(
    "variable,value",
    [("API_CORS_ORIGINS", "*"), ("API_MAX_POINTS", "lots"), ("API_STREAM_QUEUE", "0")],
)
def test_a_bad_setting_exits_2_with_one_line(stack, variable, value):
    env = {**os.environ, **stack.app_env("api", free_port()), variable: value}
    run = subprocess.run(
        stack.app_command("api"), env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 2
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and variable in json.loads(lines[0])["message"]
