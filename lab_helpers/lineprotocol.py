"""Encode pandas DataFrames and point dicts as InfluxDB line protocol.

Line protocol is the text format of InfluxDB's write API, one point per line::

    measurement,tag1=a,tag2=b field1=1.5,field2="text",field3=7i 1618444800000000000

Escaping follows the v1 specification: in measurement names commas and spaces get a
backslash; in tag keys, tag values and field keys also ``=``; in string field values ``"``
and ``\\``. Names cannot hold line breaks or end with a backslash (InfluxDB 1.x stores
backslashes in names as they are, so a final one would swallow the next separator).
Floats are written with Python's shortest round-trip ``repr``, so every float64 reads back
bit for bit. NaN fields are left out (line protocol has no NaN); a row with no
field left is skipped and counted. Infinite values cannot be stored and are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError

# Precision names of the write API and how many nanoseconds one unit holds.
PRECISIONS = {"ns": 1, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})


def _check_name(text: str, what: str) -> str:
    if "\n" in text or "\r" in text:
        raise DataError(f"{what} {text!r} contains a line break, which line protocol cannot carry")
    # InfluxDB keeps backslashes as they are, so a final one would escape the separator.
    if text.endswith("\\"):
        raise DataError(f"{what} {text!r} ends with a backslash, which line protocol cannot carry")
    return text


def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas and spaces)."""
    if not name:
        raise DataError("the measurement name is empty: give a name such as 'price'")
    return _check_name(str(name), "measurement").translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, spaces, equals signs)."""
    return _check_name(str(text), "tag or field").translate(_KEY_ESCAPES)


def encode_field_value(value) -> str | None:
    """One field value as line protocol text; ``None`` for a missing (None/NaN) value."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return f"{int(value)}i"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise DataError(f"cannot store the infinite value {value}: clean the data first")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise DataError(
        f"cannot store a field value of type {type(value).__name__}: use numbers or text"
    )


def timestamps_ns(values) -> np.ndarray:
    """Nanoseconds since the epoch (int64) from datetimes; naive times are taken as UTC."""
    idx = pd.DatetimeIndex(values)
    if idx.hasnans:
        raise DataError("some timestamps are missing (NaT): drop or fix those rows first")
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.as_unit("ns").asi8


def coarsest_precision(ns: np.ndarray) -> str:
    """The coarsest write precision that keeps every timestamp exact (shorter lines)."""
    for name in ("s", "ms", "u"):
        if not len(ns) or not np.any(ns % PRECISIONS[name]):
            return name
    return "ns"


def _column_parts(key: str, series: pd.Series) -> list[str | None]:
    """``key=value`` text for each row of a column, ``None`` where the value is missing."""
    ekey = escape_key(key)
    if pd.api.types.is_bool_dtype(series):
        return [f"{ekey}={'true' if v else 'false'}" for v in series.tolist()]
    if pd.api.types.is_integer_dtype(series):
        return [f"{ekey}={v}i" for v in series.tolist()]
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype="float64")
        if np.isinf(values).any():
            bad = series.index[np.isinf(values)][0]
            raise DataError(
                f"column {key!r} holds an infinite value (row {bad!r}): clean the data first"
            )
        parts = [f"{ekey}={v!r}" for v in values.tolist()]
        if np.isnan(values).any():
            for i in np.flatnonzero(np.isnan(values)).tolist():
                parts[i] = None
        return parts
    out: list[str | None] = []
    for v in series.tolist():
        text = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        enc = encode_field_value(text)
        out.append(None if enc is None else f"{ekey}={enc}")
    return out


def _tag_prefixes(measurement: str, frame: pd.DataFrame, tags: list[str]) -> list[str]:
    """``measurement,tag=value...`` for each row; tags are few distinct values, so each
    distinct value is escaped once."""
    prefix = np.full(len(frame), escape_measurement(measurement), dtype=object)
    for tag in sorted(tags):  # sorted tag keys are what InfluxDB stores fastest
        codes, uniques = pd.factorize(frame[tag], use_na_sentinel=True)
        enc = np.array(
            [f",{escape_key(tag)}={escape_key(u)}" if str(u) != "" else "" for u in uniques] + [""],
            dtype=object,
        )
        prefix = prefix + enc[codes]  # code -1 (missing) picks the trailing ""
    return prefix.tolist()


@dataclass(frozen=True)
class EncodedBatch:
    """Lines for one write request, their precision, and how many rows had no field."""

    lines: list[str]
    precision: str
    skipped: int


def frame_batches(
    frame: pd.DataFrame,
    measurement: str,
    *,
    tags: Iterable[str] = (),
    fields: Iterable[str] | None = None,
    time: str | None = None,
    batch_size: int = 50_000,
) -> Iterator[EncodedBatch]:
    """Yield the rows of ``frame`` as line protocol, ``batch_size`` rows at a time.

    The time comes from the column ``time`` if given, else from a DatetimeIndex. ``fields``
    defaults to every column that is not a tag or the time. Encoding happens batch by batch,
    so a writer can send one batch while the next is being built.
    """
    tags = list(tags)
    if time is not None:
        if time not in frame.columns:
            raise DataError(
                f"no column {time!r} for the time: the columns are {list(frame.columns)}"
            )
        stamps = frame[time]
    elif isinstance(frame.index, pd.DatetimeIndex):
        stamps = frame.index
    else:
        raise DataError("the frame needs a DatetimeIndex or a time column: pass time='column_name'")
    fields = (
        [c for c in frame.columns if c not in tags and c != time]
        if fields is None
        else list(fields)
    )
    missing = [c for c in [*tags, *fields] if c not in frame.columns]
    if missing:
        raise DataError(f"columns {missing} are not in the frame: it has {list(frame.columns)}")
    if not fields:
        raise DataError("nothing to write: the frame has no field column besides tags and time")

    ns = timestamps_ns(stamps)
    precision = coarsest_precision(ns)
    ticks = (ns // PRECISIONS[precision]).tolist()

    for start in range(0, len(frame), batch_size):
        part = frame.iloc[start : start + batch_size]
        prefixes = _tag_prefixes(measurement, part, tags)
        t = ticks[start : start + batch_size]
        single = part[fields[0]]
        if len(fields) == 1 and pd.api.types.is_float_dtype(single) and not single.isna().any():
            # The common case (one float field, no gaps) in one pass: about twice as fast.
            key = escape_key(fields[0])
            values = single.to_numpy(dtype="float64")
            if np.isinf(values).any():
                raise DataError(
                    f"column {fields[0]!r} holds an infinite value: clean the data first"
                )
            lines = [f"{p} {key}={v!r} {s}" for p, v, s in zip(prefixes, values.tolist(), t)]
        else:
            columns = [_column_parts(f, part[f]) for f in fields]
            joined = [",".join(v for v in row if v is not None) for row in zip(*columns)]
            lines = [f"{p} {v} {s}" for p, v, s in zip(prefixes, joined, t) if v]
        yield EncodedBatch(lines, precision, len(part) - len(lines))


def encode_point(point: dict) -> str:
    """One point dict as a line: ``{"measurement", "tags", "fields", "time"}``.

    ``time`` may be a datetime, a pandas Timestamp, an ISO string or integer nanoseconds;
    without it InfluxDB stamps the point with the time of arrival.
    """
    try:
        measurement = point["measurement"]
        fields = point["fields"]
    except (KeyError, TypeError):
        raise DataError(
            "a point needs at least 'measurement' and 'fields', e.g. "
            "{'measurement': 'price', 'tags': {'asset': 'btc'}, 'fields': {'price': 1.0}}"
        ) from None
    if not isinstance(fields, dict):
        raise DataError(f"'fields' must be a dict of name -> value, not {type(fields).__name__}")
    head = escape_measurement(measurement) + "".join(
        f",{escape_key(k)}={escape_key(v)}"
        for k, v in sorted((point.get("tags") or {}).items())
        if v is not None and str(v) != ""
    )
    body = ",".join(
        f"{escape_key(k)}={enc}"
        for k, v in fields.items()
        if (enc := encode_field_value(v)) is not None
    )
    if not body:
        raise DataError(f"point {point!r} has no field value to store")
    stamp = point.get("time")
    if stamp is None:
        return f"{head} {body}"
    if isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool):
        return f"{head} {body} {int(stamp)}"
    try:
        ns = timestamps_ns([pd.Timestamp(stamp)])[0]
    except (ValueError, TypeError):
        raise DataError(f"point time {stamp!r} is not a date/time") from None
    return f"{head} {body} {ns}"
