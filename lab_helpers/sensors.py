"""An IoT-style source: a fleet of temperature sensors that send their readings as JSON.

Prices are not the only time series. Devices send readings too, each in its own format: here
the temperature probes of a (simulated) crypto-mining farm, one per rig, every `EVERY`
seconds. The readings are made up, from a seeded generator, so the same arguments always give
the same readings.

- `message(sensor, seq)`: one reading as the device sends it (JSON bytes);
- `parse(data)`: the lab's row from such a message (time in UTC, sensor, temperature in °C);
- `readings(points, sensors)`: many readings at once, as a table (millions in a second);
- `publish(js, count, sensors)`: send readings to the JetStream stream `STREAM` (made if
  missing), as devices would; `delete_stream(js)` removes it again.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .errors import DataError
from .replay import iso_utc

STREAM = "SENSORS"
"""The JetStream stream of the readings (subjects `sensors.<sensor>`), in memory: a demo."""
SUBJECT_PREFIX = "sensors"
START = pd.Timestamp("2024-01-01", tz="UTC")
"""When the first reading of every sensor is taken."""
EVERY = 10
"""Seconds between two readings of one sensor."""
FIRMWARE = "2.3.1"
_DAY = 86_400


def sensor_name(number: int) -> str:
    """The name of sensor `number`: `rig-00`, `rig-01`, ..."""
    return f"rig-{number:02d}"


def _temperature(sensor: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """°C, to two decimals: each rig's own level, a daily cycle, and noise seeded by the
    reading itself (so one reading never depends on how many are generated)."""
    seconds = seq * EVERY
    level = 55.0 + (sensor * 7919 % 97) / 10.0
    daily = 4.0 * np.sin(2 * np.pi * seconds / _DAY + sensor)
    noise = np.sin(sensor * 12.9898 + seq * 78.233) * 43758.5453
    noise = (noise - np.floor(noise) - 0.5) * 1.6  # uniform in [-0.8, 0.8)
    return np.round(level + daily + noise, 2)


def message(sensor: int, seq: int) -> bytes:
    """Reading number `seq` of sensor number `sensor`, as the device sends it: epoch
    milliseconds in `ts`, the value and its unit nested in `temp`, and fields the lab does
    not store (battery level, firmware)."""
    value = float(_temperature(np.array([sensor]), np.array([seq]))[0])
    body = {
        "device": sensor_name(sensor),
        "ts": int(START.timestamp() * 1000) + seq * EVERY * 1000,
        "temp": {"value": value, "unit": "C"},
        "battery": round(1.0 - seq / 1e6, 4),
        "fw": FIRMWARE,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def parse(data: bytes) -> dict:
    """The lab's row of a device's message: `{"time", "sensor", "temp_c"}`, the time an ISO
    8601 UTC text. A message that is not a reading in this format raises `DataError`
    (a temperature in °F is converted)."""
    try:
        body = json.loads(data)
        value, unit = float(body["temp"]["value"]), body["temp"]["unit"]
        time = pd.Timestamp(int(body["ts"]), unit="ms", tz="UTC")
        sensor = str(body["device"])
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"not a sensor reading ({type(err).__name__}: {err})") from None
    if unit not in ("C", "F"):
        raise DataError(f"unknown temperature unit {unit!r}: expected C or F")
    celsius = value if unit == "C" else (value - 32) * 5 / 9
    return {"time": iso_utc(time), "sensor": sensor, "temp_c": round(celsius, 2)}


def readings(points: int, sensors: int = 50) -> pd.DataFrame:
    """`points` readings of `sensors` sensors (the same number each, `points` rounded down
    to a multiple of `sensors`), every `EVERY` seconds from `START`: a table with the
    columns `time` (UTC), `sensor` and `temp_c`, sorted by sensor then time. The values are
    those `message` sends."""
    if sensors < 1 or points < sensors:
        raise DataError(f"{points} readings of {sensors} sensors: ask for at least one each")
    each = points // sensors
    sensor = np.repeat(np.arange(sensors), each)
    seq = np.tile(np.arange(each), sensors)
    names = pd.Categorical.from_codes(sensor, [sensor_name(i) for i in range(sensors)])
    return pd.DataFrame({
        "time": START + pd.to_timedelta(seq * EVERY, unit="s"),
        "sensor": names.astype(str),
        "temp_c": _temperature(sensor, seq),
    })  # fmt: skip


async def publish(js, count: int, sensors: int = 4) -> int:
    """Publish `count` readings to the stream `STREAM` (created if missing), on the subject
    `sensors.<sensor>`, taking turns among `sensors` sensors, as a fleet of devices would.
    Returns the number the stream acknowledged (a publish without an acknowledgement raises)."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"],
                         storage=StorageType.MEMORY, max_age=3600)
        )  # fmt: skip
    for n in range(count):
        sensor, seq = n % sensors, n // sensors
        await js.publish(f"{SUBJECT_PREFIX}.{sensor_name(sensor)}", message(sensor, seq))
    return count


async def delete_stream(js) -> bool:
    """Delete the stream `STREAM` and its consumers; False if there was none."""
    from nats.js.errors import NotFoundError

    try:
        return await js.delete_stream(STREAM)
    except NotFoundError:
        return False
