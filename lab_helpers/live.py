"""Live prices from public REST APIs: the endpoints, a parser per API, and a poller.

Each API is a `LiveApi`: the documented URL of its price endpoint and a parser that
turns the documented JSON answer into a tick (`asset` as the lab names it, `price` as a
float, `time` as ISO 8601 UTC text, `source` the API's name). None needs an API key.

* `coinbase`: `GET https://api.exchange.coinbase.com/products/BTC-USD/ticker`, the last
  trade; the tick's time is the trade's time.
* `kraken`: `GET https://api.kraken.com/0/public/Ticker?pair=XBTUSD`, the last trade; the
  answer has no time, so the tick's time is when the answer arrived.
* `binance`: `GET https://api.binance.com/api/v3/ticker/price?symbol=BTCUSDT`, the latest
  price; no time either (when the answer arrived).
* `gold-api`: `GET https://api.gold-api.com/price/XAU` (gold, silver, platinum), the spot
  price per troy ounce; the tick's time is the API's `updatedAt`.

A parser raises `LiveDataError` (one sentence) for an answer that is not a price in the
documented format: an error message from the API, a missing field, a price that is not a
positive number, a pair not quoted in US dollars. It never raises anything else.

Binance quotes crypto against USDT, a dollar stablecoin, which is taken as USD here; it also
refuses clients in some countries (HTTP 451), so Coinbase is the default for crypto.

`Poller` asks each endpoint every `interval` seconds, with a timeout, and backs off
exponentially from an endpoint that fails (`backoff_delay`), honouring `Retry-After`.
The sample answers in `tests/payloads/` are the documentation's examples (see the README
there); the tests never call the real APIs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from . import catalogue
from .errors import ConfigError, DataError
from .replay import iso_utc

USER_AGENT = "lab-helpers-source/0.1 (teaching lab; polls a few public price endpoints)"


class LiveDataError(DataError):
    """An API answer that is not a price in the documented format."""


Parser = Callable[[Any, str, datetime], dict]


@dataclass(frozen=True)
class LiveApi:
    """One public price API: where to ask for an asset, and how to read the answer.

    `symbols` maps the lab's asset names to the API's own (the `live` field of each
    asset in the catalogue, `data/assets.yaml`); `min_interval` is the shortest polling
    interval the API's documentation asks for; `docs` is where the format is documented.
    """

    name: str
    url_template: str
    parser: Parser
    docs: str
    min_interval: float = 1.0

    @property
    def symbols(self) -> dict[str, str]:
        """`{asset: symbol}`: the assets of the catalogue that list this API."""
        return catalogue.load().live_symbols(self.name)

    def url(self, asset: str) -> str:
        """The request URL for `asset` (a lab name such as `"btc"`)."""
        symbols = self.symbols
        if asset not in symbols:
            raise ConfigError(
                f"{self.name} has no price for {asset!r}: it has {', '.join(symbols)}"
            )
        return self.url_template.format(symbol=symbols[asset])

    def is_symbol_of(self, symbol: object, asset: str) -> bool:
        """True when `symbol` in an answer names `asset`: its symbol in the catalogue,
        or any name the catalogue knows for it (`XBT` for bitcoin)."""
        if not isinstance(symbol, str):
            return False
        own = self.symbols.get(asset, "")
        return symbol.upper() == own.upper() or catalogue.load().normalize(symbol) == asset

    def parse(self, payload: Any, asset: str, received: datetime | None = None) -> dict:
        """The tick in `payload` (the decoded JSON answer to `url(asset)`).

        `received` is when the answer arrived (default: now); it is the tick's time for
        APIs whose answer has no time of its own.
        """
        return self.parser(payload, asset, received or datetime.now(UTC))


# ---------------------------------------------------------------------------- field helpers


def _require(payload: Any, key: str, api: str) -> Any:
    if not isinstance(payload, dict):
        raise LiveDataError(f"{api}: the answer is a {type(payload).__name__}, not an object")
    if key not in payload:
        raise LiveDataError(f"{api}: the answer has no {key!r} field")
    return payload[key]


def _price(value: Any, api: str) -> float:
    """A positive, finite price from a number or numeric text."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LiveDataError(f"{api}: the price {value!r} is not a number")
    try:
        price = float(value)
    except (ValueError, OverflowError):
        raise LiveDataError(f"{api}: the price {value!r} is not a number") from None
    if not math.isfinite(price) or price <= 0:
        raise LiveDataError(f"{api}: the price {value!r} is not a positive number")
    return price


def _time(value: Any, api: str) -> str:
    """ISO 8601 text from the API as the lab's UTC text."""
    if not isinstance(value, str):
        raise LiveDataError(f"{api}: the time {value!r} is not ISO 8601 text")
    try:
        return iso_utc(datetime.fromisoformat(value))
    except ValueError:
        raise LiveDataError(f"{api}: the time {value!r} is not ISO 8601 text") from None


def _check_asset(same: bool, asset: str, api: str, symbol: Any) -> None:
    if not same:
        raise LiveDataError(f"{api}: the answer is about {symbol!r}, not {asset!r}")


def _tick(asset: str, price: float, time_text: str, api: str) -> dict:
    return {"asset": asset, "price": price, "time": time_text, "source": api}


# ---------------------------------------------------------------------------- parsers


def parse_coinbase(payload: Any, asset: str, received: datetime) -> dict:
    """Coinbase Exchange `GET /products/{product_id}/ticker`: the last trade.

    `{"trade_id": 4729088, "price": "333.99", "size": "0.193", "bid": "333.98",
    "ask": "333.99", "volume": "5957.11914015", "time": "2015-11-14T20:46:03.511254Z"}`;
    errors are `{"message": "..."}`. The answer does not name the product: `asset` does.
    """
    if isinstance(payload, dict) and "message" in payload and "price" not in payload:
        raise LiveDataError(f"coinbase answered with an error: {payload['message']!r}")
    price = _price(_require(payload, "price", "coinbase"), "coinbase")
    return _tick(asset, price, _time(_require(payload, "time", "coinbase"), "coinbase"), "coinbase")


def _kraken_pair(key: str) -> tuple[str, str]:
    """`"XXBTZUSD"` -> `("XBT", "USD")`: Kraken writes its older assets with four letters,
    X for crypto and Z for fiat (XXBT + ZUSD); newer ones plainly (`SOLUSD`)."""
    if len(key) == 8 and key[0] == "X" and key[4] == "Z":
        return key[1:4], key[5:]
    if key.endswith("USD"):
        return key[:-3], "USD"
    return key, "?"


def parse_kraken(payload: Any, asset: str, received: datetime) -> dict:
    """Kraken `GET /0/public/Ticker?pair=XBTUSD`: `c[0]`, the last trade's price.

    `{"error": [], "result": {"XXBTZUSD": {"c": ["30303.20000", "0.00067643"], ...}}}`;
    errors come as `{"error": ["EQuery:Unknown asset pair"]}`. The answer has no time:
    the tick gets `received`.
    """
    errors = _require(payload, "error", "kraken")
    if errors:
        raise LiveDataError(f"kraken answered with an error: {errors!r}")
    result = _require(payload, "result", "kraken")
    if not isinstance(result, dict) or len(result) != 1:
        raise LiveDataError("kraken: 'result' should hold exactly one pair")
    key, ticker = next(iter(result.items()))
    base, quote = _kraken_pair(key)
    kraken = APIS["kraken"]
    _check_asset(kraken.is_symbol_of(key, asset) or kraken.is_symbol_of(base, asset), asset,
                 "kraken", key)  # fmt: skip
    if quote != "USD":
        raise LiveDataError(f"kraken: {key!r} is not quoted in US dollars")
    last = _require(ticker, "c", "kraken")
    if not isinstance(last, list) or not last:
        raise LiveDataError(f"kraken: the last trade 'c' is {last!r}, not [price, volume]")
    return _tick(asset, _price(last[0], "kraken"), iso_utc(received), "kraken")


def parse_binance(payload: Any, asset: str, received: datetime) -> dict:
    """Binance `GET /api/v3/ticker/price?symbol=BTCUSDT`: the latest price.

    `{"symbol": "LTCBTC", "price": "4.00000200"}`; errors are
    `{"code": -1121, "msg": "Invalid symbol."}`. Only pairs against USDT or USD are prices
    in dollars. The answer has no time: the tick gets `received`.
    """
    if isinstance(payload, dict) and "code" in payload and "msg" in payload:
        raise LiveDataError(f"binance answered with an error: {payload['msg']!r}")
    symbol = _require(payload, "symbol", "binance")
    text = symbol.upper() if isinstance(symbol, str) else ""
    quote = next((q for q in ("USDT", "USD") if text.endswith(q)), None)
    if quote is None:
        raise LiveDataError(f"binance: {symbol!r} is not quoted in US dollars (USDT or USD)")
    binance = APIS["binance"]
    same = binance.is_symbol_of(text, asset) or binance.is_symbol_of(text[: -len(quote)], asset)
    _check_asset(same, asset, "binance", symbol)
    price = _price(_require(payload, "price", "binance"), "binance")
    return _tick(asset, price, iso_utc(received), "binance")


def parse_gold_api(payload: Any, asset: str, received: datetime) -> dict:
    """gold-api.com `GET /price/{symbol}`: the spot price in USD per troy ounce.

    `{"currency": "USD", "name": "Gold", "price": 4165.200195, "symbol": "XAU",
    "updatedAt": "2026-07-03T16:08:54Z", ...}`. The tick's time is `updatedAt`
    (`received` if the answer has none).
    """
    symbol = _require(payload, "symbol", "gold-api")
    _check_asset(APIS["gold-api"].is_symbol_of(symbol, asset), asset, "gold-api", symbol)
    currency = payload.get("currency", "USD")
    if currency != "USD":
        raise LiveDataError(f"gold-api: the price is in {currency!r}, not USD")
    price = _price(_require(payload, "price", "gold-api"), "gold-api")
    updated = payload.get("updatedAt")
    moment = _time(updated, "gold-api") if updated is not None else iso_utc(received)
    return _tick(asset, price, moment, "gold-api")


APIS: dict[str, LiveApi] = {
    api.name: api
    for api in (
        LiveApi(
            "coinbase",
            "https://api.exchange.coinbase.com/products/{symbol}/ticker",
            parse_coinbase,
            "https://docs.cdp.coinbase.com/api-reference/exchange-api/rest-api/products/"
            "get-product-ticker",
        ),
        LiveApi(
            "kraken",
            "https://api.kraken.com/0/public/Ticker?pair={symbol}",
            parse_kraken,
            "https://docs.kraken.com/api/docs/rest-api/get-ticker-information",
        ),
        LiveApi(
            "binance",
            "https://api.binance.com/api/v3/ticker/price?symbol={symbol}",
            parse_binance,
            "https://github.com/binance/binance-spot-api-docs/blob/master/rest-api.md",
        ),
        LiveApi(
            "gold-api",
            "https://api.gold-api.com/price/{symbol}",
            parse_gold_api,
            "https://gold-api.com/llms.txt",
            min_interval=30.0,  # its documentation asks clients to cache answers for 30 s
        ),
    )
}
"""Every supported API by name."""

DEFAULT_APIS = ("coinbase", "gold-api")


@dataclass(frozen=True)
class Endpoint:
    """One asset from one API."""

    api: LiveApi
    asset: str

    @property
    def url(self) -> str:
        return self.api.url(self.asset)


def plan(
    assets: tuple[str, ...] | list[str], apis: tuple[str, ...] = DEFAULT_APIS
) -> list[Endpoint]:
    """Which API to ask for each asset: the first one in `apis` that has it.

    `plan(["btc", "gold"])` asks Coinbase for BTC and gold-api.com for gold. Raises
    `ConfigError` for an unknown API or asset, or an asset that
    none of `apis` has.
    """
    unknown = [name for name in apis if name not in APIS]
    if unknown:
        raise ConfigError(f"unknown price API {unknown[0]!r}: use some of {', '.join(APIS)}")
    known = catalogue.load()
    for name, entry in known.assets.items():
        strange = [api for api in entry.live if api not in APIS]
        if strange:
            raise ConfigError(
                f"the catalogue lists an unknown price API {strange[0]!r} for {name!r}: use "
                f"some of {', '.join(APIS)} in its live field"
            )
    endpoints = []
    for name in assets:
        asset = known.normalize(name)
        if asset is None:
            raise ConfigError(f"unknown asset {name!r}: choose some of {', '.join(known)}")
        offered = known[asset].live
        api = next((APIS[a] for a in apis if a in offered), None)
        if api is None:
            others = ", ".join(offered) or "none: add a live field to its catalogue entry"
            raise ConfigError(
                f"none of the APIs {', '.join(apis)} has a price for {asset!r}: add one that "
                f"has ({others})"
            )
        endpoints.append(Endpoint(api, asset))
    return endpoints


# ---------------------------------------------------------------------------- the poller


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after `failures` failures in a row: 1, 2, 4, 8 ... up to `cap`."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, 30))


def _retry_after(response: httpx.Response) -> float:
    """The `Retry-After` header in seconds (0 if absent or not a number)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


@dataclass
class EndpointState:
    """What the poller remembers about one endpoint."""

    endpoint: Endpoint
    next_try: float = 0.0
    failures: int = 0
    errors: int = 0
    last_error: str | None = None
    last_time: str | None = None  # the time of the last tick, to skip an unchanged answer
    polls: int = 0


class Poller:
    """Polls `endpoints` and yields each new tick: `async for tick in poller.ticks(): ...`.

    Every endpoint is asked every `interval` seconds (or its API's `min_interval` if that
    is longer), all due endpoints at once, each with `timeout`. An endpoint that fails (no
    answer, HTTP error, an answer that is not a price) is skipped for `backoff_delay`
    seconds, longer after each failure in a row, and `on_error(api, message)` is called. An
    answer whose time has not moved since the last one (no new trade) is not a new tick.
    """

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        interval: float = 10.0,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        on_error: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not endpoints:
            raise ConfigError("the poller needs at least one endpoint")
        self.states = [EndpointState(e) for e in endpoints]
        self.interval = interval
        self.timeout = timeout
        self.client = client
        self.on_error = on_error
        self.clock = clock

    async def ticks(self) -> AsyncIterator[dict]:
        """Poll forever, yielding new ticks (cancel the consuming task to stop)."""
        if self.client is not None:
            async for tick in self._loop(self.client):
                yield tick
            return
        async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as client:
            async for tick in self._loop(client):
                yield tick

    async def _loop(self, client: httpx.AsyncClient) -> AsyncIterator[dict]:
        while True:
            now = self.clock()
            due = [s for s in self.states if s.next_try <= now]
            results = await asyncio.gather(*(self.poll(s, client) for s in due))
            for tick in results:
                if tick is not None:
                    yield tick
            # Every endpoint just polled got a next_try in the future: this sleep is > 0.
            await asyncio.sleep(max(0.0, min(s.next_try for s in self.states) - self.clock()))

    async def poll(self, state: EndpointState, client: httpx.AsyncClient) -> dict | None:
        """Ask one endpoint once; the new tick, or `None` (no change, or a failure)."""
        endpoint = state.endpoint
        state.polls += 1
        retry_after = 0.0
        try:
            response = await client.get(endpoint.url, timeout=self.timeout)
            received = datetime.now(UTC)
            if response.status_code != 200:
                retry_after = _retry_after(response)
                raise LiveDataError(f"{endpoint.api.name} answered HTTP {response.status_code}")
            try:
                payload = response.json()
            except ValueError:
                raise LiveDataError(f"{endpoint.api.name}: the answer is not JSON") from None
            tick = endpoint.api.parse(payload, endpoint.asset, received)
        except (httpx.HTTPError, LiveDataError) as err:
            return self._failed(state, str(err) or type(err).__name__, retry_after)
        except Exception as err:  # a poller must outlive any surprise in an answer
            return self._failed(state, f"unexpected {type(err).__name__}: {err}", retry_after)
        state.failures = 0
        state.next_try = self.clock() + max(self.interval, endpoint.api.min_interval)
        if tick["time"] == state.last_time:
            return None
        state.last_time = tick["time"]
        return tick

    def _failed(self, state: EndpointState, message: str, retry_after: float) -> None:
        """Count a failure and skip the endpoint for the back-off (or `Retry-After`)."""
        state.failures += 1
        state.errors += 1
        state.last_error = message
        state.next_try = self.clock() + max(backoff_delay(state.failures), retry_after)
        if self.on_error is not None:
            self.on_error(state.endpoint.api.name, message)
        return None
