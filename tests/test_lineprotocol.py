"""Line protocol encoding: escaping, precision, missing and impossible values."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab_helpers.errors import DataError
from lab_helpers.lineprotocol import (
    EncodedBatch,
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


def reference_lines(frame, tags, fields):
    """The lines of a frame built point by point with encode_point (the slow, obvious way)."""
    out = []
    for stamp, row in zip(frame.index, frame.to_dict("records")):
        values = {f: row[f] for f in fields}
        values = {k: (None if v is pd.NA else v) for k, v in values.items()}
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
            continue
        point = {"measurement": "m,x y", "tags": {t: row[t] for t in tags}, "fields": values,
                 "time": stamp.value}  # fmt: skip
        line = encode_point(point)
        out.append(line[: line.rindex(" ")])  # the time is compared separately
    return out


@settings(max_examples=60, deadline=None)
@given(
    floats=st.lists(st.floats(allow_infinity=False, allow_nan=False), min_size=1, max_size=30),
    data=st.data(),
)
def test_the_fast_path_writes_exactly_what_encode_point_writes(floats, data):
    n = len(floats)
    text = st.text(alphabet='ab ,=%\\é"', min_size=0, max_size=4).filter(
        lambda s: not s.endswith("\\")
    )
    frame = pd.DataFrame(
        {
            "asset": data.draw(st.lists(text, min_size=n, max_size=n)),
            "venue": data.draw(st.lists(st.sampled_from(["x", "y z", ""]), min_size=n, max_size=n)),
            "price %": floats,
            "count": data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
            "ok": data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        },
        index=pd.date_range("1900-01-01", periods=n, freq="37s", tz="UTC"),
    )
    fields = ["price %", "count", "ok"]
    batches = list(frame_batches(frame, "m,x y", tags=["venue", "asset"], batch_size=7))
    lines = [line for b in batches for line in b.lines]
    assert [line[: line.rindex(" ")] for line in lines] == reference_lines(
        frame, ["venue", "asset"], fields
    )
    assert [int(line[line.rindex(" ") + 1 :]) for line in lines] == list(
        frame.index.as_unit("ns").asi8 // 10**9
    )
    for batch in batches:  # the body is the lines, each ended by a newline
        assert batch.body == "".join(line + "\n" for line in batch.lines).encode()
        assert batch.count == len(batch.lines) and batch.precision == "s"


def test_missing_values_of_every_type_are_left_out():
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    frame = pd.DataFrame(
        {
            "n": pd.array([1, None, 3], dtype="Int64"),
            "ok": pd.array([True, None, False], dtype="boolean"),
            "x": pd.array([0.5, None, None], dtype="Float64"),
            "note": ["a", None, pd.NA],
        },
        index=idx,
    )
    lines, batches = lines_of(frame)
    assert lines == [
        'price n=1i,ok=true,x=0.5,note="a" 1704067200',
        "price n=3i,ok=false 1704240000",
    ]
    assert sum(b.skipped for b in batches) == 1


def test_infinite_values_are_refused_before_any_batch_is_built():
    frame = pd.DataFrame(
        {"price": [1.0] * 10 + [np.inf]}, index=pd.date_range("2024", periods=11, freq="s")
    )
    batches = frame_batches(frame, "price", batch_size=2)
    with pytest.raises(DataError, match=r"infinite value \(row"):
        next(batches)


def test_a_refused_name_is_refused_every_time():
    for _ in range(2):  # names are escaped once and remembered, refusals are not
        with pytest.raises(DataError, match="line break"):
            escape_key("two\nlines")
    assert escape_key("a b") == escape_key("a b") == r"a\ b"
    assert escape_key(1) == "1" and escape_key(True) == "True"


def test_encoded_batches_from_lines_keep_their_lines():
    batch = EncodedBatch.from_lines(['m s="two\nlines" 1', "m v=1 2"], "s")
    assert batch.lines == ['m s="two\nlines" 1', "m v=1 2"]  # not split at the inner newline
    assert batch.body == b'm s="two\nlines" 1\nm v=1 2\n' and batch.count == 2
    assert EncodedBatch.from_lines([], "ns").body == b""
