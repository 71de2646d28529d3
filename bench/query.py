"""Benchmark 2, query to DataFrame: every stored price of one asset into pandas.

Three ways, side by side on the same server and data (median of 5 runs each, in turns):

- **lab_helpers**: `InfluxDB.query("SELECT price FROM price WHERE asset = $asset", ...)`,
  a DataFrame with a UTC DatetimeIndex and float64 prices;
- **raw CSV read**: the same query POSTed with `requests` asking for CSV without gzip, read
  with `pandas.read_csv` (no index, no time conversion): the floor;
- **2018 way**: the `influxdb` package's `InfluxDBClient.query` (JSON) and
  `pandas.DataFrame(list(result.get_points()))` with the time as the index, as a 2018 user
  did (its `DataFrameClient` is broken with pandas 3: it shifts every time to 1970).

The three results are compared value by value and time by time.
Target: lab_helpers within 1.2x of the raw CSV read.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import requests

from .bulk_load import price_frame
from .common import Result, admin, bench_stack, median, server_pid, timed, wait_idle

NAME = "query"
TITLE = "Query: one asset -> DataFrame"
SIZES = {"full": (250_000, 5), "quick": (200_000, 3), "tiny": (5_000, 1)}  # points, runs
ASSET = "btc"
QUERY = "SELECT price FROM price WHERE asset = $asset"
LITERAL = f"SELECT price FROM price WHERE asset = '{ASSET}'"


def run(size: str = "full") -> Result:
    points, runs = SIZES[size]
    result = Result(NAME, TITLE, size)
    frame = price_frame(points, assets=(ASSET,), seed=7)
    with bench_stack(NAME) as stack:
        db = admin(stack)
        db.write(frame, "price", tags=["asset"], time="time", progress=False)
        wait_idle(server_pid(stack, "influxdb"))
        settings = stack.settings
        user = settings.credentials("admin")
        host, port = settings.influx_url.rsplit("//", 1)[1].split(":")
        session = requests.Session()
        session.auth = (user.username, user.password)

        def lab() -> pd.DataFrame:
            return db.query(QUERY, params={"asset": ASSET})

        def raw() -> pd.DataFrame:
            resp = session.post(
                settings.influx_url + "/query",
                data={"q": LITERAL, "db": db.database, "epoch": "ns"},
                headers={"Accept": "application/csv", "Accept-Encoding": "identity"},
            )
            resp.raise_for_status()
            return pd.read_csv(io.BytesIO(resp.content))

        from influxdb import InfluxDBClient

        client = InfluxDBClient(host, int(port), user.username, user.password, db.database)

        def old_way() -> pd.DataFrame:
            points = client.query(LITERAL, epoch="ns")
            df = pd.DataFrame(list(points.get_points()))
            df.index = pd.to_datetime(df.pop("time"), unit="ns", utc=True)
            return df

        methods = {"lab_helpers": lab, "raw CSV read": raw, "2018 way": old_way}
        times: dict[str, list[float]] = {name: [] for name in methods}
        frames: dict[str, pd.DataFrame] = {}
        for _ in range(runs):
            for name, fn in methods.items():
                seconds, frames[name] = timed(fn)
                times[name].append(seconds)
        client.close()
        session.close()

    got = frames["lab_helpers"]
    want_times = pd.DatetimeIndex(frame["time"]).as_unit("ns").asi8
    want_prices = frame["price"].to_numpy()
    same = {
        "lab_helpers": (got.index.as_unit("ns").asi8, got["price"].to_numpy()),
        "raw CSV read": (
            frames["raw CSV read"]["time"].to_numpy(),
            frames["raw CSV read"]["price"].to_numpy(),
        ),
        "2018 way": (
            frames["2018 way"].index.as_unit("ns").asi8,
            frames["2018 way"]["price"].to_numpy(dtype=float),
        ),
    }
    for name, (t, p) in same.items():
        result.check(
            f"{name}: the {len(want_times):,} stored times and prices, exactly",
            len(t) == len(want_times)
            and np.array_equal(t, want_times)
            and np.array_equal(p, want_prices),
            f"{len(t):,} rows",
        )
    result.check(
        "lab_helpers: UTC DatetimeIndex and float64 prices",
        str(got.index.dtype) == "datetime64[ns, UTC]" and got["price"].dtype == "float64",
        f"{got.index.dtype}, {got['price'].dtype}",
    )
    for name in methods:
        result.median_time(name, times[name], digits=3)
        result.figure(f"{name}: rows per second", len(want_times) / median(times[name]), "rows/s")
    result.target(
        "lab_helpers time / raw CSV read time",
        median(times["lab_helpers"]) / median(times["raw CSV read"]),
        1.2,
        "<=",
        "x",
    )
    result.figure(
        "2018 way time / lab_helpers time",
        median(times["2018 way"]) / median(times["lab_helpers"]),
        "x",
    )
    result.note(
        f"{len(want_times):,} points of one asset (full-precision random prices, millisecond "
        f"times); medians of {runs} runs, the three ways in turns on the same influxd."
    )
    return result
