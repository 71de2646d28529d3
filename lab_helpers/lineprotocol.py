"""Encode pandas DataFrames and point dicts as InfluxDB line protocol.

Line protocol is the text format of InfluxDB's write API, one point per line:

    measurement,tag1=a,tag2=b field1=1.5,field2="text",field3=7i 1618444800000000000

Escaping follows the v1 specification: in measurement names commas and spaces get a
backslash; in tag keys, tag values and field keys also `=`; in string field values `"`
and `\\`. Names cannot hold line breaks or end with a backslash (InfluxDB 1.x stores
backslashes in names as they are, so a final one would swallow the next separator).
Floats are written with Python's shortest round-trip `repr`, so every float64 reads back
bit for bit. NaN fields are left out (line protocol has no NaN); a row with no
field left is skipped and counted. Infinite values cannot be stored and are refused.

Speed: a DataFrame is encoded column-wise. Each distinct tag combination is escaped once, and
when every field is a number or a boolean a whole chunk of rows is filled into one `%`
format, so the loop over rows runs in C; what remains is mostly CPython turning floats into
text (`docs/benchmarks.md` has the figures).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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
    return _escape_measurement(name if type(name) is str else str(name))


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, spaces, equals signs)."""
    return _escape_key(text if type(text) is str else str(text))


# Names and tag values repeat from point to point (``price``, ``asset``, ``btc`` ...): each
# distinct one is checked and escaped once. A refused name raises, and is not remembered.
@functools.lru_cache(maxsize=4096)
def _escape_measurement(name: str) -> str:
    return _check_name(name, "measurement").translate(_MEASUREMENT_ESCAPES)


@functools.lru_cache(maxsize=4096)
def _escape_key(text: str) -> str:
    return _check_name(text, "tag or field").translate(_KEY_ESCAPES)


def encode_field_value(value) -> str | None:
    """One field value as line protocol text; `None` for a missing (None/NaN) value."""
    if type(value) is float:  # the usual case first
        if value != value:  # NaN
            return None
        if math.isinf(value):
            raise DataError(f"cannot store the infinite value {value}: clean the data first")
        return repr(value)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return f"{int(value)}i"
    if isinstance(value, (float, np.floating)):
        return encode_field_value(float(value))
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
    """`key=value` text for each row of a column, `None` where the value is missing."""
    ekey = escape_key(key)
    missing = series.isna().to_numpy()
    if pd.api.types.is_bool_dtype(series):
        parts = [f"{ekey}={'true' if v else 'false'}" for v in series.fillna(False).tolist()]
    elif pd.api.types.is_integer_dtype(series):
        parts = [f"{ekey}={v}i" for v in series.fillna(0).tolist()]
    elif pd.api.types.is_float_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        parts = [f"{ekey}={v!r}" for v in values.tolist()]
    else:
        parts = []
        for v in series.tolist():
            enc = None if v is None or v is pd.NA else encode_field_value(v)
            parts.append(None if enc is None else f"{ekey}={enc}")
        return parts
    for i in np.flatnonzero(missing).tolist():
        parts[i] = None
    return parts


def _tag_prefixes(measurement: str, frame: pd.DataFrame, tags: list[str]) -> _Prefixes:
    """`measurement,tag=value...` of every row, as a code per row into the distinct texts.

    Tags hold few distinct values, so each distinct combination is escaped and joined once,
    for the whole frame, instead of once per row.
    """
    codes = np.zeros(len(frame), dtype=np.intp)
    texts = [escape_measurement(measurement)]
    for tag in sorted(tags):  # sorted tag keys are what InfluxDB stores fastest
        tag_codes, uniques = pd.factorize(frame[tag], use_na_sentinel=True)
        # A missing (code -1) or empty value leaves the tag out of the line.
        parts = [f",{escape_key(tag)}={escape_key(u)}" if str(u) != "" else "" for u in uniques]
        parts.append("")
        tag_codes = np.where(tag_codes < 0, len(uniques), tag_codes)
        width = len(parts)
        # Number the combinations seen so far: codes stay small however many tags there are.
        codes, seen = pd.factorize(codes * width + tag_codes)
        texts = [texts[c // width] + parts[c % width] for c in seen.tolist()]
    return _Prefixes(codes, np.array(texts, dtype=object))


@dataclass(frozen=True)
class _Prefixes:
    codes: np.ndarray  # per row, an index into texts
    texts: np.ndarray  # object array of the distinct ``measurement,tag=value...`` texts

    def rows(self, start: int, stop: int) -> list[str]:
        return self.texts[self.codes[start:stop]].tolist()


@dataclass(frozen=True)
class EncodedBatch:
    """One write request: the `body` to POST (each line ends with a newline), how many
    lines it holds, their precision, and how many rows had no field and were skipped.

    `lines` gives the lines as a list of text (only needed when InfluxDB rejects some).
    """

    body: bytes
    count: int
    precision: str
    skipped: int = 0
    _lines: list[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_lines(cls, lines: list[str], precision: str, skipped: int = 0) -> EncodedBatch:
        """A batch of ready-made lines."""
        body = ("\n".join(lines) + "\n").encode() if lines else b""
        return cls(body, len(lines), precision, skipped, list(lines))

    @property
    def lines(self) -> list[str]:
        if self._lines is not None:
            return self._lines
        # Only batches without text fields are built as a body alone, and no line break can
        # occur in their names, tags or numbers: splitting gives back the lines exactly.
        return self.body.decode().split("\n")[:-1]


# The lines of a frame whose fields are all numbers or booleans are built by one %-format per
# chunk of rows: the loop over rows and the number formatting then run in C. A chunk at a time
# lets the writer threads take their turn between chunks (a C call holds the GIL throughout).
_CHUNK = 10_000


def _field_format(key: str, series: pd.Series) -> str | None:
    """`key=%r` (float), `key=%di` (integer) or `key=%s` (boolean as true/false) for the
    fast path; `None` if the column needs the general path (text, objects)."""
    ekey = escape_key(key).replace("%", "%%")
    if pd.api.types.is_bool_dtype(series):
        return f"{ekey}=%s"
    if pd.api.types.is_integer_dtype(series):
        return f"{ekey}=%di"
    if pd.api.types.is_float_dtype(series):
        return f"{ekey}=%r"
    return None


def _fast_values(series: pd.Series) -> list | None:
    """A field column as Python values for the %-format; `None` if a value is missing."""
    if series.isna().any():
        return None
    if pd.api.types.is_bool_dtype(series):
        return np.where(series.to_numpy(dtype=bool), "true", "false").tolist()
    if pd.api.types.is_float_dtype(series):
        return series.to_numpy(dtype="float64").tolist()
    return series.tolist()


def _format_lines(line_format: str, columns: list[list]) -> bytes:
    """Fill `line_format` once per row with the values of `columns` (one list each)."""
    width, rows = len(columns), len(columns[0])
    chunks = []
    for start in range(0, rows, _CHUNK):
        stop = min(start + _CHUNK, rows)
        args: list = [None] * (width * (stop - start))
        for j, column in enumerate(columns):
            args[j::width] = column[start:stop]
        chunks.append((line_format * (stop - start)) % tuple(args))
    return "".join(chunks).encode()


def _check_finite(frame: pd.DataFrame, fields: list[str]) -> None:
    """Refuse infinite values before anything is written (line protocol cannot carry them)."""
    for key in fields:
        series = frame[key]
        if not pd.api.types.is_float_dtype(series):
            continue
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        infinite = np.isinf(values)
        if infinite.any():
            bad = series.index[infinite][0]
            raise DataError(
                f"column {key!r} holds an infinite value (row {bad!r}): clean the data first"
            )


def frame_batches(
    frame: pd.DataFrame,
    measurement: str,
    *,
    tags: Iterable[str] = (),
    fields: Iterable[str] | None = None,
    time: str | None = None,
    batch_size: int = 50_000,
) -> Iterator[EncodedBatch]:
    """Yield the rows of `frame` as line protocol, `batch_size` rows at a time.

    The time comes from the column `time` if given, else from a DatetimeIndex. `fields`
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
    _check_finite(frame, fields)

    ns = timestamps_ns(stamps)
    precision = coarsest_precision(ns)
    ticks = ns // PRECISIONS[precision]
    prefixes = _tag_prefixes(measurement, frame, tags)
    formats = [_field_format(f, frame[f]) for f in fields]
    # One format for the whole line when every field is a number or a boolean.
    line_format = None if None in formats else "%s " + ",".join(formats) + " %d\n"

    for start in range(0, len(frame), batch_size):
        part = frame.iloc[start : start + batch_size]
        stop = start + len(part)
        t = ticks[start:stop].tolist()
        if line_format is not None:
            values = [_fast_values(part[f]) for f in fields]
            if all(v is not None for v in values):
                body = _format_lines(line_format, [prefixes.rows(start, stop), *values, t])
                yield EncodedBatch(body, len(part), precision)
                continue
        # The general path: text fields, or missing values (a missing field is left out and
        # a row without any field is skipped).
        columns = [_column_parts(f, part[f]) for f in fields]
        joined = [",".join(v for v in row if v is not None) for row in zip(*columns)]
        lines = [f"{p} {v} {s}" for p, v, s in zip(prefixes.rows(start, stop), joined, t) if v]
        yield EncodedBatch.from_lines(lines, precision, len(part) - len(lines))


def encode_point(point: dict) -> str:
    """One point dict as a line: `{"measurement", "tags", "fields", "time"}`.

    `time` may be a datetime, a pandas Timestamp, an ISO string or integer nanoseconds;
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
    head = escape_measurement(measurement)
    tags = point.get("tags")
    if tags:
        head += "".join(
            f",{escape_key(k)}={escape_key(v)}"
            for k, v in sorted(tags.items())
            if v is not None and str(v) != ""
        )
    body = ",".join(
        [f"{escape_key(k)}={enc}" for k, v in fields.items() if (enc := encode_field_value(v))]
    )
    if not body:
        raise DataError(f"point {point!r} has no field value to store")
    stamp = point.get("time")
    if stamp is None:
        return f"{head} {body}"
    if type(stamp) is int or (isinstance(stamp, (int, np.integer)) and not isinstance(stamp, bool)):
        return f"{head} {body} {int(stamp)}"
    try:
        ns = timestamps_ns([pd.Timestamp(stamp)])[0]
    except (ValueError, TypeError):
        raise DataError(f"point time {stamp!r} is not a date/time") from None
    return f"{head} {body} {ns}"
