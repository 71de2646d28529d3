"""Each service's settings reader in-process: `read_settings(env)` of services/<name>/settings.py
gives the documented defaults, reads every variable, and refuses a bad value with one sentence
that names it (the service then exits 2: tests/test_ingest.py, test_source.py, test_api.py).
The stats service's reader is tested in tests/test_stats_service.py."""

from __future__ import annotations

import pytest

from lab_helpers.config import ConfigError, Credentials

from .services import service_modules

SETTINGS = {name: service_modules(name).settings for name in ("ingest", "source", "api")}
INGEST, SOURCE, API = SETTINGS.values()
# A cluster's environment: no .lab/ files are read, everything comes from these variables.
CLUSTER = {
    "LAB_MODE": "cluster",
    "LAB_NATS_URL": "nats://nats:4222",
    "LAB_INFLUX_URL": "http://influxdb:8086",
    "LAB_INFLUX_USER": "svc",
    "LAB_INFLUX_PASSWORD": "pw",
}


def test_every_service_names_its_settings_the_same_way():
    for module, name, port in ((INGEST, "ingest", 8002), (SOURCE, "source", 8001),
                               (API, "api", 8000)):  # fmt: skip
        assert (module.SERVICE, module.DEFAULT_PORT) == (name, port)
        assert callable(module.read_settings) and isinstance(module.Settings, type)


def test_ingest_defaults_and_variables():
    assert INGEST.read_settings(CLUSTER) == INGEST.Settings(
        nats_url="nats://nats:4222", influx_url="http://influxdb:8086", database="prices",
        credentials=Credentials("svc", "pw"), batch=2_000, max_wait=0.2, durable="ingest",
        ack_wait=30.0, memory=50_000, max_deliver=5, stall_after=60.0,
    )  # fmt: skip
    chosen = INGEST.read_settings(CLUSTER | {
        "INGEST_BATCH": "100", "INGEST_MAX_WAIT": "1.5", "INGEST_DURABLE": "ingest-2",
        "INGEST_ACK_WAIT": "10", "INGEST_DEDUP_SIZE": "0", "INGEST_MAX_DELIVER": "3",
        "INGEST_STALL_SECONDS": "5", "LAB_INFLUX_DB": "other",
    })  # fmt: skip
    assert (chosen.batch, chosen.max_wait, chosen.durable, chosen.ack_wait) == (
        100, 1.5, "ingest-2", 10.0)  # fmt: skip
    assert (chosen.memory, chosen.max_deliver, chosen.stall_after, chosen.database) == (
        0, 3, 5.0, "other")  # fmt: skip


def test_ingest_takes_its_role_s_own_identity_first():
    own = CLUSTER | {"LAB_INFLUX_INGEST_USER": "writer", "LAB_INFLUX_INGEST_PASSWORD": "w"}
    assert INGEST.read_settings(own).credentials == Credentials("writer", "w")


def test_source_defaults_and_variables():
    default = SOURCE.read_settings(CLUSTER)
    assert default.mode == "replay" and default.nats_url == "nats://nats:4222"
    assert default.replay.dataset == "btc_usd_1min" and default.replay.backfill is True
    assert default.speedup == 60 and default.rate is None and default.buffer == 10_000
    assert default.live_assets == ("btc", "eth", "gold")
    chosen = SOURCE.read_settings(CLUSTER | {
        "SOURCE_ASSETS": "XBT, gold", "SOURCE_RATE": "20", "SOURCE_BAD_SHARE": "0.25",
        "SOURCE_LIMIT": "7", "SOURCE_MODE": "LIVE", "SOURCE_LIVE_INTERVAL": "30",
    })  # fmt: skip
    assert chosen.mode == "live" and chosen.replay.assets == ("btc", "gold")
    assert (chosen.rate, chosen.replay.bad_share, chosen.limit) == (20.0, 0.25, 7)
    assert chosen.replay.backfill is False and chosen.live_interval == 30.0


def test_api_defaults_and_variables():
    assert API.read_settings(CLUSTER) == API.Settings(
        nats_url="nats://nats:4222", influx_url="http://influxdb:8086", database="prices",
        credentials=Credentials("svc", "pw"), cors_origins=(), max_points=10_000,
        stream_queue=1_000, heartbeat=15.0,
    )  # fmt: skip
    chosen = API.read_settings(CLUSTER | {
        "API_CORS_ORIGINS": "https://lab.example.org, http://localhost:3000",
        "API_MAX_POINTS": "500", "API_STREAM_QUEUE": "10", "API_STREAM_HEARTBEAT": "0.5",
        "LAB_INFLUX_READER_USER": "reader", "LAB_INFLUX_READER_PASSWORD": "r",
    })  # fmt: skip
    assert chosen.cors_origins == ("https://lab.example.org", "http://localhost:3000")
    assert (chosen.max_points, chosen.stream_queue, chosen.heartbeat) == (500, 10, 0.5)
    assert chosen.credentials == Credentials("reader", "r")


@pytest.mark.parametrize("module", [INGEST, SOURCE, API], ids=["ingest", "source", "api"])
def test_without_an_address_the_error_says_where_to_give_it(module):
    incomplete = {k: v for k, v in CLUSTER.items() if k != "LAB_NATS_URL"}
    with pytest.raises(ConfigError, match="LAB_NATS_URL"):
        module.read_settings(incomplete)


BAD_VALUES = [
    ("ingest", "INGEST_BATCH", "0", "out of range"),
    ("ingest", "INGEST_BATCH", "many", "expected int"),
    ("ingest", "INGEST_MAX_WAIT", "nan", "expected a number"),
    ("ingest", "INGEST_DURABLE", "in.gest", "letters, digits"),
    ("ingest", "INGEST_ACK_WAIT", "0.5", "out of range"),
    ("ingest", "INGEST_MAX_DELIVER", "1", "out of range"),
    ("ingest", "INGEST_STALL_SECONDS", "soon", "expected a number"),
    ("source", "SOURCE_MODE", "batch", "use one of replay, live"),
    ("source", "SOURCE_RATE", "nan", "expected a number"),
    ("source", "SOURCE_BAD_SHARE", "1.5", "out of range"),
    ("source", "SOURCE_ASSETS", "btc,doge", "'doge' is not an asset"),
    ("source", "SOURCE_DATASET", "btc_usd_hourly", "use one of"),
    ("source", "SOURCE_START", "yesterday", "is not a time"),
    ("source", "SOURCE_BAD_KINDS", "typo", "not a kind of bad record"),
    ("source", "SOURCE_LIVE_APIS", "ftx", "unknown price API .ftx."),
    ("api", "API_CORS_ORIGINS", "*", "no '\\*'"),
    ("api", "API_CORS_ORIGINS", "https://x.org/path", "no path"),
    ("api", "API_MAX_POINTS", "lots", "expected int"),
    ("api", "API_STREAM_QUEUE", "0", "out of range"),
    ("api", "API_STREAM_HEARTBEAT", "inf", "out of range"),
]


@pytest.mark.parametrize("service,variable,value,says", BAD_VALUES)
def test_a_bad_value_is_refused_with_a_sentence_naming_it(service, variable, value, says):
    with pytest.raises(ConfigError, match=f"{variable}.*{says}"):
        SETTINGS[service].read_settings(CLUSTER | {variable: value})
