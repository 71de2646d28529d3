"""The api's routes in-process, with FastAPI's TestClient, against the real InfluxDB and NATS
of the test stack (never a mock).

`services/api/main.py`'s `build_app` is given a `Settings` made here: the same answers as the
process tests of tests/test_api.py, and what only a settings object shows at once (a small
`max_points`, an InfluxDB that is not there, a wrong password).
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from lab_helpers.config import Credentials
from lab_helpers.stack import free_port

from .services import service_modules
from .test_api import BAD_PARAMETERS, QUARANTINED, T0, WINDOW, iso, seeded

pytestmark = pytest.mark.integration

API = service_modules("api")


@pytest.fixture(scope="module")
def data(stack):
    with seeded(stack.settings) as prices:
        yield prices


@pytest.fixture(scope="module")
def settings(stack):
    """The api's settings for the test stack, read as the service reads them."""
    return API.settings.read_settings(stack.app_env("api", free_port()))


def client_for(settings) -> TestClient:
    return TestClient(API.main.build_app(settings))


@pytest.fixture(scope="module")
def client(settings, data):
    with client_for(settings) as running:
        yield running


def test_the_settings_reader_gives_the_reader_s_identity(settings, stack):
    assert settings.credentials == stack.settings.credentials("reader")
    assert settings.nats_url == stack.settings.nats_url and settings.max_points == 10_000


def test_assets_and_prices_are_the_stored_ones(client, data):
    assets = {a["asset"]: a for a in client.get("/api/assets").json()["assets"]}
    gold = data[data["asset"] == "gold"].iloc[-1]
    assert assets["gold"]["latest_price"] == gold["price"]
    assert assets["gold"]["latest_time"] == iso(gold["time"])
    body = client.get("/api/prices/eth", params={"start": WINDOW[0], "end": WINDOW[1]}).json()
    eth = data[data["asset"] == "eth"]
    assert [p["price"] for p in body["points"]] == eth["price"].tolist()
    assert [p["time"] for p in body["points"]] == [iso(t) for t in eth["time"]]


def test_summary_and_quarantine(client, data):
    start, end = iso(T0), iso(T0 + pd.Timedelta(hours=1))
    summary = client.get("/api/summary/btc", params={"start": start, "end": end}).json()
    btc = data[(data["asset"] == "btc") & (data["time"] < T0 + pd.Timedelta(hours=1))]
    assert summary["count"] == len(btc) == 60 and summary["max"] == btc["price"].max()
    report = client.get("/api/quarantine", params={"start": WINDOW[0], "end": WINDOW[1]}).json()
    assert report["total"] == len(QUARANTINED)
    assert {r["raw"] for r in report["latest"]} == {raw for *_, raw in QUARANTINED}


@pytest.mark.parametrize("path,params,parameter", BAD_PARAMETERS)
def test_bad_parameters_get_a_400_that_names_them(client, path, params, parameter):
    resp = client.get(path, params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith(f"{parameter}: ")


def test_max_points_bounds_every_answer(settings, data):
    with client_for(dataclasses.replace(settings, max_points=5)) as client:
        body = client.get("/api/prices/btc", params={"start": WINDOW[0]}).json()
        assert body["count"] == 5 and body["truncated"] is True
        too_many = client.get("/api/prices/btc", params={"limit": 6})
        assert too_many.status_code == 400 and too_many.json()["error"].startswith("limit: ")


def test_the_dashboard_its_files_and_the_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assert client.get("/static/dashboard.js").status_code == 200
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and missing.json() == {"error": "no static file 'nothing.js'"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/assets", "/api/prices/{asset}", "/api/stream"} <= set(paths)


def test_readyz_names_what_does_not_answer(settings):
    with client_for(settings) as client:
        assert client.get("/readyz").json() == {"status": "ready", "service": "api"}
    nowhere = dataclasses.replace(settings, nats_url=f"nats://127.0.0.1:{free_port()}")
    with client_for(nowhere) as client:
        resp = client.get("/readyz")
        assert resp.status_code == 503 and list(resp.json()["problems"]) == ["nats"]
        assert client.get("/api/assets").status_code == 200  # REST works without NATS


def test_influxdb_away_or_a_wrong_password_give_a_503_sentence(settings):
    down = dataclasses.replace(settings, influx_url=f"http://127.0.0.1:{free_port()}")
    with client_for(down) as client:
        resp = client.get("/api/summary/btc")
        assert resp.status_code == 503
        assert resp.json() == {
            "error": "the price database (InfluxDB) is not reachable right now: try again soon"
        }
        assert "influxdb" in client.get("/readyz").json()["problems"]
    wrong = Credentials(settings.credentials.username, "not-the-password")
    with client_for(dataclasses.replace(settings, credentials=wrong)) as client:
        resp = client.get("/api/assets")
        assert resp.status_code == 503
        assert resp.json() == {
            "error": "the api may not read the price database: check its InfluxDB user"
        }
