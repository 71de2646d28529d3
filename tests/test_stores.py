"""Choosing a store by measuring (lab_helpers.stores): the same readings in SQLite and in a
scratch InfluxDB server of its own (the real influxd), loaded, queried and measured on disk."""

import os

import pandas as pd
import pytest
import requests

from lab_helpers import sensors, stores
from lab_helpers.errors import DataError

from .conftest import require_servers

HOURLY_SQL = (
    "SELECT sensor, time / 3600 * 3600 AS hour, avg(temp_c) FROM readings GROUP BY sensor, hour"
)
HOURLY_INFLUXQL = (
    "SELECT mean(temp_c) FROM readings WHERE time >= $start AND time < $end "
    "GROUP BY time(1h), sensor fill(none)"
)


def test_disk_bytes_counts_the_blocks_a_file_occupies(tmp_path):
    sparse = tmp_path / "reserved"
    with open(sparse, "wb") as fh:
        fh.truncate(32 * 1024 * 1024)  # reserved, never written: (almost) no block
    written = tmp_path / "sub" / "written"
    written.parent.mkdir()
    written.write_bytes(os.urandom(200_000))
    assert stores.disk_bytes(sparse) < 100_000
    assert 200_000 <= stores.disk_bytes(written) < 300_000
    assert stores.disk_bytes(tmp_path) == stores.disk_bytes(sparse) + stores.disk_bytes(written)


def test_sqlite_answers_sql_and_says_why_it_refuses():
    store = stores.SQLiteStore(":memory:")
    store.load(sensors.readings(7_200, sensors=2))  # 10 hours of 2 sensors
    hourly = stores.hourly(store.query(HOURLY_SQL))
    assert len(hourly) == 20 and list(hourly.columns) == ["sensor", "hour", "mean"]
    assert hourly["hour"].iloc[0] == sensors.START and store.disk_bytes() == 0
    with pytest.raises(DataError, match="SQLite refused the query"):
        store.query("SELEC nothing")
    with pytest.raises(DataError, match="text"):
        store.query(42)
    store.close()


@pytest.mark.integration
def test_both_stores_hold_the_same_readings_and_are_measured(tmp_path):
    require_servers()
    readings = sensors.readings(40_000, sensors=4)
    folder = tmp_path / "compare"
    with stores.Comparison(folder) as both:
        loaded = both.load(readings)
        assert list(loaded.index) == ["SQLite", "InfluxDB"]
        assert (loaded["readings"] == 40_000).all() and (loaded["disk (MB)"] > 0).all()
        data, wal = both.influx._paths()
        assert list(data.rglob("*.tsm")) and stores.disk_bytes(wal) == 0, "settled into TSM"
        assert loaded.loc["InfluxDB", "disk (MB)"] < loaded.loc["SQLite", "disk (MB)"]
        # Authentication is on: without the scratch admin's password, nothing is answered.
        refused = requests.get(
            both.influx.url + "/query", params={"q": "SHOW DATABASES"}, timeout=5
        )
        assert refused.status_code == 401
        span = {"start": readings["time"].min(), "end": readings["time"].max() + pd.Timedelta("1s")}
        sql, influxql = both.sql(HOURLY_SQL), both.influxql(HOURLY_INFLUXQL, span)
        assert len(sql) == len(influxql) == 4 * 28  # 10,000 readings of 10 s: 27.8 hours each
        pd.testing.assert_frame_equal(sql, influxql, check_exact=False, rtol=1e-12)
        timings = both.time_queries(HOURLY_INFLUXQL, span, HOURLY_SQL, repeat=2)
        assert (timings["rows"] == 4 * 28).all() and (timings["median (s)"] > 0).all()
        process = both.influx.process
    assert process.poll() is not None, "the scratch InfluxDB is stopped"
    assert not folder.exists(), "both stores are deleted"


@pytest.mark.integration
def test_a_second_scratch_server_in_the_same_folder_stops_the_first(tmp_path):
    require_servers()
    first = stores.ScratchInfluxDB(tmp_path / "influxdb")
    second = stores.ScratchInfluxDB(tmp_path / "influxdb")  # a notebook cell run again
    try:
        assert first.process.poll() is not None and second.process.poll() is None
        assert second.client.ping()
    finally:
        second.stop()
    assert second.process.poll() is not None and not (tmp_path / "influxdb").exists()
