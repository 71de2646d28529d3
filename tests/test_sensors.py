"""The IoT-style source (lab_helpers.sensors): device messages, their parser, many readings
at once, and publishing to a JetStream stream of a real NATS server."""

import asyncio
import json

import nats
import numpy as np
import pandas as pd
import pytest

from lab_helpers import sensors
from lab_helpers.errors import DataError


def test_a_message_is_the_devices_json_and_parses_into_the_labs_row():
    body = json.loads(sensors.message(3, 17))
    assert body["device"] == "rig-03" and body["temp"]["unit"] == "C"
    assert body["ts"] == int(sensors.START.timestamp() * 1000) + 17 * sensors.EVERY * 1000
    row = sensors.parse(sensors.message(3, 17))
    assert row == {"time": "2024-01-01T00:02:50Z", "sensor": "rig-03",
                   "temp_c": body["temp"]["value"]}  # fmt: skip


def test_the_table_holds_what_the_devices_send():
    table = sensors.readings(600, sensors=3)
    assert list(table.columns) == ["time", "sensor", "temp_c"] and len(table) == 600
    assert table["time"].dt.tz is not None and table["temp_c"].dtype == np.float64
    assert list(table["sensor"].unique()) == ["rig-00", "rig-01", "rig-02"]
    for sensor, seq in ((0, 0), (1, 57), (2, 199)):
        row = table[table["sensor"] == sensors.sensor_name(sensor)].iloc[seq]
        assert sensors.parse(sensors.message(sensor, seq)) == {
            "time": row["time"].isoformat().replace("+00:00", "Z"),
            "sensor": row["sensor"],
            "temp_c": row["temp_c"],
        }
    # The same readings whatever the number asked for: one reading depends on nothing else.
    more = sensors.readings(3_000, sensors=3)
    assert more[more["sensor"] == "rig-01"].head(200)["temp_c"].tolist() == (
        table[table["sensor"] == "rig-01"]["temp_c"].tolist()
    )


def test_a_million_readings_are_plausible_temperatures():
    table = sensors.readings(1_000_000, sensors=50)
    assert len(table) == 1_000_000 and table["sensor"].nunique() == 50
    assert 40 < table["temp_c"].min() and table["temp_c"].max() < 80
    per_sensor = table.groupby("sensor")["time"]
    assert (per_sensor.diff().dropna() == pd.Timedelta(seconds=sensors.EVERY)).all()


def test_fahrenheit_is_converted_and_other_shapes_are_refused():
    body = {"device": "rig-01", "ts": 0, "temp": {"value": 212.0, "unit": "F"}}
    assert sensors.parse(json.dumps(body).encode())["temp_c"] == 100.0
    kelvin = json.dumps({**body, "temp": {"value": 1, "unit": "K"}}).encode()
    words = json.dumps({**body, "temp": {"value": "warm", "unit": "C"}}).encode()
    for bad in (b"not json", b"{}", kelvin, words):
        with pytest.raises(DataError):
            sensors.parse(bad)
    with pytest.raises(DataError, match="at least one"):
        sensors.readings(3, sensors=5)


@pytest.mark.integration
def test_publish_fills_a_stream_that_delete_stream_removes(settings):
    async def scenario():
        nc = await nats.connect(settings.require_nats_url())
        js = nc.jetstream()
        try:
            assert await sensors.publish(js, 12, sensors=4) == 12
            info = await js.stream_info(sensors.STREAM)
            assert info.state.messages == 12 and info.config.subjects == ["sensors.>"]
            first = await js.get_msg(sensors.STREAM, 1)
            assert (
                first.subject == "sensors.rig-00"
                and sensors.parse(first.data)["sensor"] == "rig-00"
            )
            assert await sensors.publish(js, 3) == 3  # the stream exists: it is reused
            assert (await js.stream_info(sensors.STREAM)).state.messages == 15
            assert await sensors.delete_stream(js) is True
            assert await sensors.delete_stream(js) is False
        finally:
            await nc.close()

    asyncio.run(scenario())
