"""Line protocol encoding: escaping, precision, missing and impossible values."""

import math

import numpy as np
import pandas as pd
import pytest

from lab_helpers.errors import DataError
from lab_helpers.lineprotocol import (
    coarsest_precision,
    encode_field_value,
    encode_point,
    escape_key,
    escape_measurement,
    frame_batches,
)


def lines_of(frame, **kw):
    batches = list(frame_batches(frame, "price", **kw))
    return [line for b in batches for line in b.lines], batches


def test_escaping_follows_the_v1_rules():
    assert escape_measurement("spot price,usd") == r"spot\ price\,usd"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert encode_field_value('say "hi" \\ bye') == r'"say \"hi\" \\ bye"'
    with pytest.raises(DataError, match="line break"):
        escape_key("two\nlines")
    with pytest.raises(DataError, match="ends with a backslash"):
        escape_key("dir\\")
    with pytest.raises(DataError, match="empty"):
        escape_measurement("")


@pytest.mark.parametrize(
    "value, text",
    [(1.5, "1.5"), (0.1, "0.1"), (1e-300, "1e-300"), (7, "7i"), (np.int64(-3), "-3i"),
     (True, "true"), (np.bool_(False), "false"), ("x", '"x"'), (None, None), (math.nan, None)],
)  # fmt: skip
def test_field_values(value, text):
    assert encode_field_value(value) == text


def test_infinite_values_are_refused():
    with pytest.raises(DataError, match="infinite"):
        encode_field_value(math.inf)
    frame = pd.DataFrame({"price": [1.0, -np.inf]}, index=pd.date_range("2024", periods=2))
    with pytest.raises(DataError, match="infinite"):
        lines_of(frame)


def test_frame_uses_coarsest_exact_precision_and_shortest_floats():
    idx = pd.DatetimeIndex(["2021-04-14 00:00:00", "2021-04-14 00:00:01"], tz="UTC")
    frame = pd.DataFrame({"asset": ["btc", "eth"], "price": [63000.1, 2400.0]}, index=idx)
    lines, batches = lines_of(frame, tags=["asset"])
    assert batches[0].precision == "s"
    assert lines == [
        "price,asset=btc price=63000.1 1618358400",
        "price,asset=eth price=2400.0 1618358401",
    ]


def test_sub_second_times_keep_their_precision():
    ns = np.array([1, 2_000, 3_000_000, 4_000_000_000])
    assert coarsest_precision(ns) == "ns"
    assert coarsest_precision(ns[1:]) == "u"
    assert coarsest_precision(ns[2:]) == "ms"
    assert coarsest_precision(ns[3:]) == "s"


def test_naive_times_are_utc_and_aware_times_are_converted():
    naive = pd.DataFrame({"price": [1.0]}, index=pd.DatetimeIndex(["2024-01-01 12:00"]))
    paris = pd.DataFrame(
        {"price": [1.0]}, index=pd.DatetimeIndex(["2024-01-01 13:00"]).tz_localize("Europe/Paris")
    )
    assert lines_of(naive)[0] == lines_of(paris)[0] == ["price price=1.0 1704110400"]


def test_nan_fields_are_left_out_and_empty_rows_skipped():
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    frame = pd.DataFrame(
        {
            "asset": ["btc", "btc", None],
            "price": [1.0, np.nan, np.nan],
            "volume": [np.nan, 2.0, np.nan],
        },
        index=idx,
    )
    lines, batches = lines_of(frame, tags=["asset"])
    assert lines == [
        "price,asset=btc price=1.0 1704067200",
        "price,asset=btc volume=2.0 1704153600",
    ]
    assert sum(b.skipped for b in batches) == 1


def test_time_column_tags_sorted_and_batches():
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=5, freq="min", tz="UTC"),
            "src": ["x y"] * 5,
            "asset": ["btc"] * 5,
            "price": np.arange(5, dtype=float),
            "n": np.arange(5),
            "ok": [True] * 5,
            "note": ["a", None, "c", "d", "e"],
        }
    )
    lines, batches = lines_of(frame, tags=["src", "asset"], time="time", batch_size=2)
    assert [len(b.lines) for b in batches] == [2, 2, 1]
    assert lines[0] == r'price,asset=btc,src=x\ y price=0.0,n=0i,ok=true,note="a" 1704067200'
    assert lines[1] == r"price,asset=btc,src=x\ y price=1.0,n=1i,ok=true 1704067260"


def test_frame_errors_say_what_to_do():
    with pytest.raises(DataError, match="DatetimeIndex or a time column"):
        lines_of(pd.DataFrame({"price": [1.0]}))
    idx = pd.date_range("2024", periods=1)
    with pytest.raises(DataError, match=r"columns \['nope'\] are not in the frame"):
        lines_of(pd.DataFrame({"price": [1.0]}, index=idx), tags=["nope"])
    with pytest.raises(DataError, match="missing"):
        lines_of(pd.DataFrame({"price": [1.0]}, index=pd.DatetimeIndex([pd.NaT])))


def test_points():
    point = {"measurement": "price", "tags": {"asset": "btc", "empty": ""},
             "fields": {"price": 2.5, "gap": None}, "time": "2024-01-01T00:00:00Z"}  # fmt: skip
    assert encode_point(point) == "price,asset=btc price=2.5 1704067200000000000"
    assert encode_point({"measurement": "m", "fields": {"v": 1}, "time": 5}) == "m v=1i 5"
    assert encode_point({"measurement": "m", "fields": {"v": 1}}) == "m v=1i"
    with pytest.raises(DataError, match="needs at least"):
        encode_point({"fields": {"v": 1}})
    with pytest.raises(DataError, match="no field value"):
        encode_point({"measurement": "m", "fields": {"v": None}})
    with pytest.raises(DataError, match="not a date/time"):
        encode_point({"measurement": "m", "fields": {"v": 1}, "time": "yesterday-ish"})
