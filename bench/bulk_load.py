"""Benchmark 1, bulk load: a DataFrame of prices into a fresh InfluxDB database.

Three ways, side by side on the same server, each into a fresh database, median of 3 runs:

- **lab_helpers**: `InfluxDB.write(frame, "price", tags=["asset"], time="time")`, building
  its line protocol from the DataFrame inside the timing;
- **raw limit**: the same line protocol, built beforehand, POSTed in 50,000-line batches with
  `requests` by one writer: what the server takes when the client costs nothing;
- **2018 way**: the `influxdb` package's `InfluxDBClient.write_points` with a list of
  dicts in batches of 1,000, as the 2018 workshop did (building the dicts is timed too; times
  are given as integer milliseconds, its fastest form).

After each run the stored points are counted. The prices are random floats with all 17
significant digits (the worst case for writing floats exactly) and millisecond times.

Target: lab_helpers at least 0.9x the raw single-writer limit. Its ratio to the 2018 way is
reported for information only: it is (lab_helpers / raw) x (raw / 2018), and raw / 2018 is
what this server takes from a client that costs nothing over what the 2018 client manages
(6.2-8.7x in the four recorded full runs), so "8x the 2018 way" would measure the server and
the old client, not lab_helpers.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import requests

from lab_helpers.lineprotocol import frame_batches

from .common import (
    Result,
    admin,
    bench_stack,
    cpu_seconds,
    median,
    server_pid,
    timed,
    wait_idle,
)

NAME = "bulk_load"
TITLE = "Bulk load: DataFrame -> InfluxDB"
ASSETS = ("btc", "eth", "gold", "silver", "sol")
SIZES = {"full": (1_000_000, 3), "quick": (200_000, 3), "tiny": (20_000, 1)}  # points, runs
RAW_BATCH = 50_000
OLD_BATCH = 1_000


def price_frame(points: int, assets=ASSETS, seed: int = 2018) -> pd.DataFrame:
    """`points` rows spread over `assets`: columns time (UTC, ms), asset, price."""
    rng = np.random.default_rng(seed)
    per_asset = points // len(assets)
    times = pd.Timestamp("2021-03-15", tz="UTC") + pd.to_timedelta(
        np.sort(rng.choice(10**10, per_asset, replace=False)), unit="ms"
    )
    return pd.DataFrame(
        {
            "time": np.tile(times, len(assets)),
            "asset": np.repeat(list(assets), per_asset),
            "price": rng.lognormal(5, 3, per_asset * len(assets)),
        }
    )


def epoch_ms(frame: pd.DataFrame) -> np.ndarray:
    return pd.DatetimeIndex(frame["time"]).as_unit("ns").asi8 // 1_000_000


def raw_bodies(frame: pd.DataFrame) -> list[bytes]:
    """The line protocol of the frame, built the plain way, in 50,000-line request bodies."""
    lines = [
        f"price,asset={a} price={p!r} {t}"
        for a, p, t in zip(
            frame["asset"].tolist(), frame["price"].tolist(), epoch_ms(frame).tolist()
        )
    ]
    return [
        ("\n".join(lines[i : i + RAW_BATCH]) + "\n").encode()
        for i in range(0, len(lines), RAW_BATCH)
    ]


def run(size: str = "full") -> Result:
    points, runs = SIZES[size]
    result = Result(NAME, TITLE, size)
    frame = price_frame(points)
    n = len(frame)
    bodies = raw_bodies(frame)
    result.check(
        "the raw bodies are exactly the lines lab_helpers sends",
        b"".join(bodies)
        == b"".join(b.body for b in frame_batches(frame, "price", tags=["asset"], time="time")),
    )

    with bench_stack(NAME) as stack:
        db = admin(stack)
        influxd = server_pid(stack, "influxdb")
        settings = stack.settings
        user = settings.credentials("admin")
        host, port = settings.influx_url.rsplit("//", 1)[1].split(":")

        def lab(database: str, data: pd.DataFrame = frame, **kw) -> None:
            kw.setdefault("progress", False)
            db.write(data, "price", tags=["asset"], time="time", database=database, **kw)

        def raw(database: str) -> None:
            with requests.Session() as session:
                session.auth = (user.username, user.password)
                for body in bodies:
                    resp = session.post(
                        settings.influx_url + "/write",
                        params={"db": database, "precision": "ms"},
                        data=body,
                    )
                    resp.raise_for_status()

        def old_way(database: str) -> None:
            from influxdb import InfluxDBClient

            client = InfluxDBClient(host, int(port), user.username, user.password, database)
            points = [
                {"measurement": "price", "tags": {"asset": a}, "time": t, "fields": {"price": p}}
                for a, t, p in zip(
                    frame["asset"].tolist(), epoch_ms(frame).tolist(), frame["price"].tolist()
                )
            ]
            client.write_points(points, time_precision="ms", batch_size=OLD_BATCH)
            client.close()

        cents = frame.assign(price=frame["price"].round(2))

        methods = {
            "lab_helpers": lab,
            "raw limit": raw,
            "2018 way": old_way,
            "lab_helpers, 1 writer": lambda d: lab(d, writers=1),
            "lab_helpers, 100k batches": lambda d: lab(d, batch_size=100_000),
            # Real prices have few decimals: their text is shorter and faster to build.
            "lab_helpers, prices in cents": lambda d: lab(d, cents),
        }
        if size == "tiny":
            methods = {k: methods[k] for k in ("lab_helpers", "raw limit", "2018 way")}
        times: dict[str, list[float]] = {name: [] for name in methods}
        counts: dict[str, list[int]] = {name: [] for name in methods}
        cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        names = list(methods)
        for rep in range(runs):
            # Rotate the order, so that no way always runs first (or last) on a drifting machine.
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                database = f"bench_{uuid.uuid4().hex[:8]}"
                db.create_database(database)
                wait_idle(influxd)
                before = time.process_time(), cpu_seconds(influxd)
                seconds, _ = timed(lambda: methods[name](database))  # noqa: B023
                times[name].append(seconds)
                cpu[name].append(
                    (time.process_time() - before[0], cpu_seconds(influxd) - before[1])
                )
                counts[name].append(db.count("price", database=database))
                db.drop_database(database)

        for name in methods:
            result.check(
                f"{name}: every point stored, every run",
                all(c == n for c in counts[name]),
                f"counted {counts[name]} of {n:,}",
            )
        rate = {name: n / median(t) for name, t in times.items()}
        for name in methods:
            result.median_time(name, times[name])
            result.figure(f"{name}: throughput", rate[name], "points/s")
            client, server = (median(c) for c in zip(*cpu[name]))
            result.figure(
                f"{name}: CPU of the client / of influxd",
                f"{client:.2f} s / {server:.2f} s",
                "",
                "medians; the client's CPU counts all its threads",
            )

        # Building the lines alone, without sending: the client's own cost.
        build = []
        for _ in range(runs):
            started = time.process_time()
            for _batch in frame_batches(frame, "price", tags=["asset"], time="time"):
                pass
            build.append(time.process_time() - started)
        result.figure("lab_helpers: building the lines alone (CPU)", median(build), "s")
        result.target(
            "lab_helpers vs raw single-writer limit",
            rate["lab_helpers"] / rate["raw limit"],
            0.9,
            unit="x",
        )
        # For information: mostly a property of the server and the 2018 client (module help).
        result.figure(
            "lab_helpers vs 2018 way",
            rate["lab_helpers"] / rate["2018 way"],
            "x",
            "for information: (lab_helpers vs raw limit) x (raw limit vs 2018 way)",
        )
        result.figure(
            "raw limit vs 2018 way",
            rate["raw limit"] / rate["2018 way"],
            "x",
            "what the server takes from one writer that costs nothing, over the 2018 client",
        )
        if size != "tiny":
            result.blocks.append(("Profile of one lab_helpers write", _profile(db, frame, influxd)))
    result.note(
        f"{n:,} points, {len(ASSETS)} assets, full-precision random prices, millisecond times; "
        f"each run into a fresh database on the same influxd; medians of {runs} runs."
    )
    return result


def _profile(db, frame: pd.DataFrame, influxd: int) -> str:
    """A pyinstrument profile of one write (the main thread: building and waiting)."""
    from pyinstrument import Profiler

    database = f"bench_{uuid.uuid4().hex[:8]}"
    db.create_database(database)
    wait_idle(influxd)
    profiler = Profiler(interval=0.001)
    profiler.start()
    db.write(frame, "price", tags=["asset"], time="time", database=database, progress=False)
    profiler.stop()
    db.drop_database(database)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    start = text.find("InfluxDB.write")
    lines = text[text.rfind("\n", 0, start) + 1 :].rstrip().splitlines() if start >= 0 else []
    return "\n".join(line.rstrip() for line in lines[:30])
