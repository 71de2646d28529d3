"""What the stats service computes: daily log returns of one asset, from the api's prices.

Pure functions, apart from `daily_closes`, which asks the api over HTTP: the service
owns no data, it reads the api's contract (`GET /api/prices/{asset}`, docs/architecture.md).
"""

from __future__ import annotations

import math
import statistics

import httpx


class ApiError(Exception):
    """The api did not give the prices: the message says why, in one sentence."""


def daily_closes(client: httpx.Client, asset: str, days: int) -> list[dict]:
    """The last `days + 1` daily closes of `asset` (`{"time", "price"}`, oldest first), from
    the api's downsampled prices (`every=1d`, `agg=last`); days without a price left out."""
    try:
        answer = client.get(
            f"/api/prices/{asset}", params={"every": "1d", "agg": "last", "limit": days + 1}
        )
    except httpx.HTTPError as err:
        raise ApiError(f"the api does not answer ({type(err).__name__})") from None
    if answer.status_code in (400, 404):
        raise LookupError(answer.json().get("error", f"unknown asset {asset!r}"))
    if answer.status_code != 200:
        raise ApiError(f"the api answered {answer.status_code}")
    points = answer.json()["points"]
    return [p for p in points if p.get("price") is not None]


def summarize(asset: str, closes: list[dict]) -> dict:
    """Count, last price, mean and standard deviation of the daily log returns of `closes`
    (None where fewer than two returns exist)."""
    prices = [float(p["price"]) for p in closes]
    returns = [math.log(b / a) for a, b in zip(prices, prices[1:]) if a > 0 and b > 0]
    return {
        "asset": asset,
        "returns": len(returns),
        "first": closes[0]["time"] if closes else None,
        "last": closes[-1]["time"] if closes else None,
        "last_price": prices[-1] if prices else None,
        "mean_log_return": statistics.fmean(returns) if returns else None,
        "daily_volatility": statistics.stdev(returns) if len(returns) > 1 else None,
    }
