"""What an api request may ask for, and how it becomes InfluxQL and JSON.

Every value a user sends (asset, times, limits) is checked here and travels to InfluxDB as a
bound parameter (`$name`), never as query text; the only words put into InfluxQL are fixed
names from this file (the aggregate functions) and numbers this file computed. A bad value
raises `RequestValidationError`: the app answers it with a 400 that names the parameter.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from fastapi.exceptions import RequestValidationError

from lab_helpers import catalogue
from lab_helpers.config import csv_list
from lab_helpers.influx import InfluxDB

# -- parameters --------------------------------------------------------------------------------

AGGREGATES = ("mean", "median", "first", "last", "min", "max")
# The aggregate's name in InfluxQL comes from this table, never from the request.
AGG_FUNCTION = {name: f"{name}(price)" for name in AGGREGATES}
Aggregate = Literal["mean", "median", "first", "last", "min", "max"]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
EVERY_PATTERN = r"^[1-9][0-9]{0,6}[smhdw]$"
EVERY_MAX_SECONDS = 365 * 86_400
RELATIVE_TIME = re.compile(r"-([1-9][0-9]{0,6})([smhdw])")
# ISO-8601 date or date-time, with optional fraction (up to nanoseconds) and zone.
ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}:?\d{2})?)?"
)
# The instants InfluxDB can store (signed 64-bit nanoseconds since 1970), in whole years.
EARLIEST = pd.Timestamp("1678-01-01", tz="UTC")
LATEST = pd.Timestamp("2262-01-01", tz="UTC")
TIME_HELP = (
    "ISO-8601 (2021-04-14, 2021-04-14T06:13:00Z, 2021-04-14T08:13:00+02:00; no zone = UTC), "
    "'now', or relative to now: -30m, -12h, -7d, -2w"
)


def bad_parameter(parameter: str, problem: str) -> RequestValidationError:
    """A 400 answer in the shared error format: `{"error": "<parameter>: <problem>", ...}`."""
    return RequestValidationError(
        [{"loc": ("query", parameter), "msg": problem, "type": "value_error"}]
    )


def parse_asset(text: str, parameter: str = "asset") -> str:
    """The lab's asset name for `text` (`BTC`, `bitcoin`, `btc-usd` -> `btc`): any
    name or alias of the asset catalogue, read again when it changes."""
    known = catalogue.load()
    asset = known.normalize(text)
    if asset is None:
        raise bad_parameter(
            parameter, f"unknown asset {text[:40]!r}: use one of {', '.join(known)}"
        )
    return asset


def parse_assets(text: str | None) -> frozenset[str] | None:
    """`"btc,eth"` -> `{"btc", "eth"}`; nothing -> `None` (every asset)."""
    if text is None or not text.strip():
        return None
    return frozenset(parse_asset(name, "assets") for name in csv_list(text))


def parse_time(text: str | None, parameter: str, now: pd.Timestamp) -> pd.Timestamp | None:
    """A UTC timestamp from ISO-8601 text, `now` or a relative time such as `-7d`."""
    if text is None or text == "":
        return None
    text = text.strip()
    relative = RELATIVE_TIME.fullmatch(text)
    if text.lower() == "now":
        value = now
    elif relative:
        seconds = int(relative[1]) * UNIT_SECONDS[relative[2]]
        if seconds > (now - EARLIEST).total_seconds():
            raise bad_parameter(parameter, f"{text!r} reaches back before the year 1678")
        value = now - pd.Timedelta(seconds=seconds)
    elif ISO_TIME.fullmatch(text):
        try:
            value = pd.Timestamp(text)
        except (ValueError, OverflowError):  # e.g. month 13, or outside pandas' range
            raise bad_parameter(parameter, f"{text!r} is not a valid date or time") from None
        value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    else:
        raise bad_parameter(parameter, f"{text[:40]!r} is not a time: use {TIME_HELP}")
    if not EARLIEST <= value < LATEST:
        raise bad_parameter(parameter, f"{text!r} is out of range: use a time from 1678 to 2261")
    return value


def parse_range(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, ...]:
    """`start` and `end` parsed; `start` must come before `end`."""
    now = pd.Timestamp.now(tz="UTC")
    first, last = parse_time(start, "start", now), parse_time(end, "end", now)
    if first is not None and last is not None and first >= last:
        raise bad_parameter("end", f"end ({end}) must be after start ({start})")
    return first, last


def parse_every(text: str) -> int:
    """`every` in whole seconds (`"5m"` -> 300); 1 s to 365 days."""
    if not re.fullmatch(EVERY_PATTERN, text):
        raise bad_parameter(
            "every",
            f"{text[:40]!r} is not a duration: use a whole number and a unit s, m, h, d or w, "
            "such as 30s, 5m, 1h, 1d",
        )
    seconds = int(text[:-1]) * UNIT_SECONDS[text[-1]]
    if seconds > EVERY_MAX_SECONDS:
        raise bad_parameter("every", f"{text!r} is too long: use at most 365d")
    return seconds


def time_filter(asset: str | None, start, end) -> tuple[str, dict]:
    """A WHERE clause with bound parameters for an asset and a time range."""
    clauses, params = [], {}
    if asset is not None:
        clauses.append("asset = $asset")
        params["asset"] = asset
    if start is not None:
        clauses.append("time >= $start")
        params["start"] = start
    if end is not None:
        clauses.append("time < $end")
        params["end"] = end
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# -- formatting --------------------------------------------------------------------------------


def iso(ts: pd.Timestamp | None) -> str | None:
    """`2021-04-14T06:13:00Z`, with a fraction only when there is one."""
    return None if ts is None else iso_times(pd.DatetimeIndex([ts]))[0]


def iso_times(index: pd.DatetimeIndex) -> list[str]:
    """ISO-8601 UTC texts for a whole index at once (nanoseconds kept, trailing zeros not)."""
    index = index.as_unit("ns")  # pandas may keep a coarser unit, e.g. seconds for a date
    # numpy formats whole seconds in C, about ten times faster than strftime.
    base = np.datetime_as_string(index.tz_convert(None).to_numpy(), unit="s").tolist()
    nanos = (index.asi8 % 1_000_000_000).tolist()
    return [f"{b}Z" if not n else f"{b}.{n:09d}".rstrip("0") + "Z" for b, n in zip(base, nanos)]


def number(value) -> float | None:
    """A JSON-safe number: NaN (InfluxDB's "no value") becomes null."""
    if value is None or pd.isna(value):
        return None
    return float(value)


# -- queries -----------------------------------------------------------------------------------


def query_assets(db: InfluxDB) -> list[dict]:
    """Every asset of the catalogue (in its order) with its latest stored price and time
    and its number of points."""
    latest = db.query("SELECT last(price) AS price FROM price GROUP BY asset")
    counts = db.query("SELECT count(price) AS points FROM price GROUP BY asset")
    newest = {}
    if len(latest):
        for asset, t, price in zip(latest["asset"], iso_times(latest.index), latest["price"]):
            newest[asset] = (t, number(price))
    points = dict(zip(counts["asset"], counts["points"])) if len(counts) else {}
    out = []
    for asset in catalogue.load().assets.values():
        latest_time, latest_price = newest.get(asset.name, (None, None))
        out.append(
            {
                "asset": asset.name,
                "title": asset.title,
                "kind": asset.kind,
                "unit": asset.unit,
                "latest_time": latest_time,
                "latest_price": latest_price,
                "points": int(points.get(asset.name, 0)),
            }
        )
    return out


def query_prices(
    db: InfluxDB, asset: str, start, end, every: int | None, agg: str, limit: int
) -> tuple[list[dict], bool]:
    """Points of one asset in time order, and whether more than `limit` matched.

    With `every` (seconds) the points are `agg` of each time bucket, stamped with the
    bucket's start. When more points match than `limit`, the most recent ones are kept.
    """
    where, params = time_filter(asset, start, end)
    params["limit"] = limit + 1  # one more than asked tells whether the answer is cut short
    if every is None:
        q = f"SELECT price FROM price{where} ORDER BY time DESC LIMIT $limit"
    else:
        # `every` is an int computed by parse_every: a number, not user text. (InfluxDB 1.x
        # only binds a duration given as {"duration": ...}, which the shared client does not
        # send.) fill(none) skips empty buckets instead of returning nulls for them.
        q = (
            f"SELECT {AGG_FUNCTION[agg]} AS price FROM price{where} "
            f"GROUP BY time({int(every)}s) fill(none) ORDER BY time DESC LIMIT $limit"
        )
    df = db.query(q, params=params)
    if not len(df):
        return [], False
    truncated = len(df) > limit
    df = df.iloc[:limit].iloc[::-1]  # newest first from InfluxDB -> time order
    times, prices = iso_times(df.index), df["price"].tolist()
    return [{"time": t, "price": p} for t, p in zip(times, prices)], truncated


SUMMARY_FIELDS = ("count", "first", "last", "min", "max", "mean", "stddev")


def query_summary(db: InfluxDB, asset: str, start, end) -> dict:
    """Count, first, last, min, max, mean and stddev of the prices, and the first/last times."""
    where, params = time_filter(asset, start, end)
    columns = ", ".join(f"{name}(price) AS {name}" for name in SUMMARY_FIELDS)
    stats = db.query(f"SELECT {columns} FROM price{where}", params=params)
    # With several functions InfluxDB stamps the row with the range start; a single first()
    # or last() returns the time of that point.
    first = db.query(f"SELECT first(price) FROM price{where}", params=params)
    last = db.query(f"SELECT last(price) FROM price{where}", params=params)
    row = stats.iloc[0].to_dict() if len(stats) else {}
    out = {name: number(row.get(name)) for name in SUMMARY_FIELDS}
    out["count"] = int(out["count"] or 0)  # no point in the range: 0, and the rest null
    out["first_time"] = iso(first.index[0]) if len(first) else None
    out["last_time"] = iso(last.index[0]) if len(last) else None
    return out


def query_quarantine(db: InfluxDB, start, end, latest: int) -> dict:
    """Quarantined ticks per reason, and the `latest` records (newest first).

    These use the JSON answer (`InfluxDB.execute`) rather than a DataFrame: `raw` is
    text that must come back exactly as stored, even when it looks like a number.
    """
    where, params = time_filter(None, start, end)
    counts = db.execute(
        f"SELECT count(raw) AS count FROM quarantine{where} GROUP BY reason", params=params
    )
    # LIMIT 0 would mean "no limit" to InfluxDB: ask for no records by not asking at all.
    records = [{}]
    if latest:
        records = db.execute(
            f"SELECT raw, asset, reason FROM quarantine{where} ORDER BY time DESC LIMIT $latest",
            params={**params, "latest": latest},
        )
    reasons = [
        {"reason": series.get("tags", {}).get("reason", ""), "count": int(series["values"][0][1])}
        for series in counts[0].get("series", [])
    ]
    reasons.sort(key=lambda r: (-r["count"], r["reason"]))
    rows = []
    for series in records[0].get("series", []):
        columns = series["columns"]
        rows += [dict(zip(columns, values)) for values in series["values"]]
    return {
        "total": sum(r["count"] for r in reasons),
        "reasons": reasons,
        "latest": [
            {
                "time": r["time"],
                "reason": r.get("reason") or "",
                "asset": r.get("asset") or "",
                "raw": r.get("raw") or "",
            }
            for r in rows
        ],
    }
