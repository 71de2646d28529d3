"""The InfluxDB layer against a real influxd (started by the `stack` fixture)."""

import numpy as np
import pandas as pd
import pytest

from lab_helpers.config import Credentials
from lab_helpers.errors import (
    DataError,
    InfluxAuthError,
    InfluxConnectionError,
    InfluxError,
    PartialWriteError,
)
from lab_helpers.influx import InfluxDB, quote_ident
from lab_helpers.stack import free_port

ASSETS = ["btc", "eth", "gold", "silver", "sol"]


def million_points() -> pd.DataFrame:
    """1,000,000 points over 5 assets, with full-precision random floats and ms times."""
    rng = np.random.default_rng(2018)
    n = 200_000
    times = pd.Timestamp("2021-03-15", tz="UTC") + pd.to_timedelta(
        np.sort(rng.choice(10**10, n, replace=False)), unit="ms"
    )
    return pd.DataFrame(
        {
            "time": np.tile(times, len(ASSETS)),
            "asset": np.repeat(ASSETS, n),
            "price": rng.lognormal(5, 3, n * len(ASSETS)),
        }
    )


def test_one_million_points_round_trip_exactly(admin):
    frame = million_points()
    report = admin.write(frame, "price", tags=["asset"], time="time", progress=False)
    assert report.written == 1_000_000 and not report.rejected and report.skipped == 0
    back = admin.query("SELECT price, asset FROM price").reset_index()
    assert len(back) == 1_000_000
    assert str(back["time"].dtype) == "datetime64[ns, UTC]" and back["price"].dtype == "float64"
    want = frame.sort_values(["asset", "time"]).reset_index(drop=True)
    got = back.sort_values(["asset", "time"]).reset_index(drop=True)
    np.testing.assert_array_equal(got["time"].to_numpy(), want["time"].dt.as_unit("ns").to_numpy())
    np.testing.assert_array_equal(got["asset"].to_numpy(), want["asset"].to_numpy())
    # Bit for bit: every float64 comes back identical, not merely close.
    np.testing.assert_array_equal(got["price"].to_numpy(), want["price"].to_numpy())
    assert admin.count("price") == 1_000_000


def test_awkward_names_and_values_survive(admin):
    idx = pd.DatetimeIndex(["2024-01-01T00:00:00.000000001Z", "2024-01-01T00:00:00.5Z"])
    frame = pd.DataFrame(
        {"exchange": ["a b,c=d", 'quote"d\\slash'], "note": ['say "hi"', "back\\slash"],
         "price": [0.1 + 0.2, 5e-324], "count": [1, -2]},
        index=idx,
    )  # fmt: skip
    admin.write(frame, "odd measurement,name", tags=["exchange"])
    back = admin.query('SELECT * FROM "odd measurement,name"')
    assert list(back.index) == list(idx)
    assert back["exchange"].tolist() == frame["exchange"].tolist()
    assert back["note"].tolist() == frame["note"].tolist()
    assert back["price"].tolist() == [0.1 + 0.2, 5e-324]
    assert back["count"].tolist() == [1.0, -2.0] and back["count"].dtype == "float64"
    grouped = admin.query('SELECT count(price) FROM "odd measurement,name" GROUP BY exchange')
    assert sorted(grouped["exchange"]) == sorted(frame["exchange"])


def test_points_and_group_by_tags(admin):
    points = [
        {"measurement": "price", "tags": {"asset": a}, "fields": {"price": p}, "time": t}
        for a, p, t in [
            ("btc", 1.0, "2024-01-01"),
            ("btc", 3.0, "2024-01-02"),
            ("eth", 5.0, "2024-01-01"),
        ]
    ]
    assert admin.write(points).written == 3
    back = admin.query("SELECT mean(price) FROM price GROUP BY asset")
    assert back.set_index("asset")["mean"].to_dict() == {"btc": 2.0, "eth": 5.0}


def test_bound_parameters_are_never_read_as_influxql(admin):
    frame = pd.DataFrame(
        {"asset": ["btc", "eth"], "price": [1.0, 2.0]},
        index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC"),
    )
    admin.write(frame, "price", tags=["asset"])
    q = "SELECT price FROM price WHERE asset = $asset AND time >= $start"
    got = admin.query(q, params={"asset": "eth", "start": pd.Timestamp("2024-01-01", tz="UTC")})
    assert got["price"].tolist() == [2.0]
    evil = admin.query(q, params={"asset": "btc' OR asset = 'eth", "start": "2000-01-01T00:00:00Z"})
    assert evil.empty
    assert admin.query("SELECT * FROM nothing_here").empty
    with pytest.raises(InfluxError, match="refused the query"):
        admin.query("SELEC price FROM price")
    # A statement that parses but fails: the CSV answer is empty, the error must still show.
    with pytest.raises(InfluxError, match="duration"):
        admin.query("SELECT mean(price) FROM price GROUP BY time($every)", params={"every": "1h"})


def test_rejected_lines_are_named_and_the_rest_stored(admin):
    times = pd.date_range("2024-01-01", periods=1000, freq="s", tz="UTC")
    good = pd.DataFrame({"price": np.arange(1000, dtype=float)}, index=times)
    admin.write(good, "price")
    # A text value in the float field "price" conflicts; the server drops those lines only.
    points = [
        {"measurement": "price", "fields": {"price": "oops" if i in (3, 500, 998) else float(i)},
         "time": 1_800_000_000_000_000_000 + i}
        for i in range(1000)
    ]  # fmt: skip
    with pytest.raises(PartialWriteError) as caught:
        admin.write(points, batch_size=400)
    err = caught.value
    assert err.written == 997 and len(err.rejected) == 3
    assert all('price="oops"' in line and "conflict" in why for line, why in err.rejected)
    assert admin.count("price") == 1997
    report = admin.write(points[:5], raise_on_rejected=False)
    assert report.written == 4 and len(report.rejected) == 1


def test_roles_are_enforced(settings, admin):
    frame = pd.DataFrame({"price": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC"))
    reader = InfluxDB.connect("reader", settings=settings)
    ingest = InfluxDB.connect("ingest", settings=settings)
    ingest.write(frame, "roles_check")
    assert reader.query("SELECT price FROM roles_check")["price"].tolist() == [1.0]
    with pytest.raises(InfluxAuthError, match="may not"):
        reader.write(frame, "roles_check")
    with pytest.raises(InfluxAuthError, match="may not"):
        ingest.query("SELECT price FROM roles_check")
    ingest.check_write()  # an empty write: proves the write-only user without storing anything
    with pytest.raises(InfluxAuthError, match="may not"):
        reader.check_write()
    wrong = InfluxDB(settings.influx_url, Credentials("lab_admin", "not-the-password"), "prices")
    with pytest.raises(InfluxAuthError, match="rejected the credentials"):
        wrong.check_write()
    with pytest.raises(InfluxAuthError, match="rejected the credentials"):
        wrong.databases()
    anonymous = InfluxDB(settings.influx_url, None, "prices")
    with pytest.raises(InfluxAuthError):
        anonymous.query("SELECT * FROM roles_check")


def test_admin_statements(admin):
    assert admin.database in admin.databases()
    admin.create_retention_policy("week", "7d", shard_duration="1d")
    rps = admin.execute(f"SHOW RETENTION POLICIES ON {quote_ident(admin.database)}")
    assert "week" in [row[0] for row in rps[0]["series"][0]["values"]]
    with pytest.raises(DataError, match="not valid"):
        admin.create_retention_policy("bad", "7 days; DROP DATABASE x")
    with pytest.raises(InfluxError, match="does not exist"):
        admin.write(pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"])), "m",
                    database="no_such_db")  # fmt: skip


def test_a_server_that_is_down_gets_one_clear_error():
    down = InfluxDB(f"http://127.0.0.1:{free_port()}", None, "prices", retries=2, backoff=0.01)
    with pytest.raises(InfluxConnectionError, match="does not answer.*stack up"):
        down.ping()


def test_wrong_arguments_get_a_sentence(admin):
    with pytest.raises(DataError, match="http://"):
        InfluxDB("localhost:8086")
    with pytest.raises(DataError, match="measurement="):
        admin.write(pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"])))
    with pytest.raises(DataError, match="DataFrame or an iterable"):
        admin.write("price v=1")
    with pytest.raises(DataError, match="cannot bind"):
        admin.query("SELECT * FROM m WHERE x = $x", params={"x": object()})


def test_a_frame_with_an_infinite_value_stores_nothing(admin):
    # Refused before the first request: no half-written frame to clean up afterwards.
    frame = pd.DataFrame(
        {"price": np.r_[np.arange(9.0), np.inf]},
        index=pd.date_range("2024-01-01", periods=10, freq="min", tz="UTC"),
    )
    with pytest.raises(DataError, match="infinite"):
        admin.write(frame, "price", batch_size=3)
    assert admin.count("price") == 0


def test_big_and_small_writes_report_the_same_way(admin):
    # One batch is sent from the calling thread, several by the writer threads.
    frame = pd.DataFrame(
        {"asset": ["btc", "eth"] * 500, "price": np.arange(1000.0)},
        index=pd.date_range("2024-01-01", periods=1000, freq="s", tz="UTC"),
    )
    one = admin.write(frame, "one", tags=["asset"])
    many = admin.write(frame, "many", tags=["asset"], batch_size=64, writers=3)
    assert (one.written, one.requests) == (1000, 1)
    assert (many.written, many.requests) == (1000, 16)
    assert admin.count("one") == admin.count("many") == 1000
    assert admin.query("SELECT * FROM many").equals(admin.query("SELECT * FROM one"))


def test_writing_a_table_that_etl_emptied_says_why(admin):
    from lab_helpers import etl
    from lab_helpers.influx import EmptyWriteWarning

    raw = pd.DataFrame(
        [
            {"time": "2021-04-14", "asset": "doge", "price": 0.3},
            {"time": "2021-04-14", "asset": "btc", "price": "n/a"},
        ]
    )
    result = etl.clean(raw)
    with pytest.warns(EmptyWriteWarning, match="quarantined all 2 rows") as caught:
        report = admin.write(result.clean, "price", tags=["asset"], time="time")
    assert report.written == 0 and report.requests == 0
    assert str(report) == str(caught[0].message)
    assert "(1 missing price, 1 unknown asset): see result.quarantine" in str(report)

    kept = etl.clean(raw.assign(asset="btc", price=63_000.0).head(1)).clean
    with pytest.warns(EmptyWriteWarning, match="kept 1 row: the rows were filtered out"):
        admin.write(kept[kept["asset"] == "eth"], "price", tags=["asset"], time="time")
    with pytest.warns(EmptyWriteWarning, match="the table has no rows"):
        admin.write(pd.DataFrame({"time": [], "price": []}), "price", time="time")
    assert admin.query("SELECT * FROM price").empty
