"""The api's answers as pydantic models: they document `/openapi.json` (each field with a
description and an example) and check what the routes return."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(examples=["every: '1h);DROP' is not a duration: use ..."])
    detail: list[dict] | None = None


class AssetInfo(BaseModel):
    asset: str = Field(examples=["btc"])
    title: str = Field(examples=["Bitcoin"])
    kind: str = Field(
        description="crypto, metal, or the kind its catalogue entry names", examples=["crypto"]
    )
    unit: str = Field(examples=["USD/coin"])
    latest_time: str | None = Field(description="time of the latest stored price")
    latest_price: float | None = Field(examples=[63000.5])
    points: int = Field(description="number of stored prices", examples=[54949])


class AssetList(BaseModel):
    assets: list[AssetInfo]


class Point(BaseModel):
    time: str = Field(description="ISO-8601 UTC", examples=["2021-04-14T06:13:00Z"])
    price: float = Field(examples=[63000.5])


class PriceSeries(BaseModel):
    asset: str = Field(examples=["btc"])
    start: str | None = Field(examples=["2021-04-14T00:00:00Z"])
    end: str | None = Field(examples=["2021-04-15T00:00:00Z"])
    every: str | None = Field(description="bucket length, when downsampled", examples=["1h"])
    agg: str | None = Field(description="aggregate of each bucket", examples=["mean"])
    count: int = Field(description="number of points returned", examples=[24])
    truncated: bool = Field(description="more points matched than `limit`; the latest are kept")
    points: list[Point]


class Summary(BaseModel):
    asset: str = Field(examples=["btc"])
    start: str | None = None
    end: str | None = None
    count: int = Field(examples=[1440])
    first: float | None = Field(description="the earliest price in the range")
    last: float | None = Field(description="the latest price in the range")
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stddev: float | None = Field(description="sample standard deviation (null below 2 points)")
    first_time: str | None = None
    last_time: str | None = None


class ReasonCount(BaseModel):
    reason: str = Field(examples=["price not a number"])
    count: int = Field(examples=[12])


class QuarantineRecord(BaseModel):
    time: str = Field(description="when the message reached the broker")
    reason: str = Field(examples=["invalid JSON"])
    asset: str = Field(description="the asset, when the message named one")
    raw: str = Field(description="the message as received (at most 1,000 characters)")


class QuarantineReport(BaseModel):
    start: str | None = None
    end: str | None = None
    total: int = Field(examples=[17])
    reasons: list[ReasonCount]
    latest: list[QuarantineRecord]


ERRORS = {
    400: {"model": ErrorBody, "description": "A parameter is not valid (the error says which)"},
    503: {"model": ErrorBody, "description": "InfluxDB is not reachable right now"},
}
