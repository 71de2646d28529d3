"""The live price adapters: documented endpoints, parsers, and the poller.

The parsers are tested only with the documentation's example answers in ``tests/payloads/``
(see the README there); the poller talks to an ``httpx.MockTransport``. Nothing here calls a
real API.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab_helpers.errors import ConfigError, DataError
from lab_helpers.live import (
    APIS,
    EndpointState,
    LiveDataError,
    Poller,
    backoff_delay,
    plan,
)

PAYLOADS = Path(__file__).parent / "payloads"
RECEIVED = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)


def payload(name: str):
    return json.loads((PAYLOADS / name).read_text())


def parse(api: str, body, asset: str) -> dict:
    return APIS[api].parse(body, asset, RECEIVED)


# ---------------------------------------------------------------------------- endpoints


def test_the_documented_urls():
    assert (
        APIS["coinbase"].url("btc") == "https://api.exchange.coinbase.com/products/BTC-USD/ticker"
    )
    assert APIS["kraken"].url("btc") == "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"
    assert APIS["kraken"].url("eth") == "https://api.kraken.com/0/public/Ticker?pair=ETHUSD"
    assert (
        APIS["binance"].url("sol") == "https://api.binance.com/api/v3/ticker/price?symbol=SOLUSDT"
    )
    assert APIS["gold-api"].url("gold") == "https://api.gold-api.com/price/XAU"
    assert APIS["gold-api"].url("platinum") == "https://api.gold-api.com/price/XPT"
    with pytest.raises(ConfigError, match="coinbase has no price for 'gold'"):
        APIS["coinbase"].url("gold")


def test_plan_asks_the_first_api_that_has_the_asset():
    endpoints = plan(["BTC", "XAU", "ether"])
    assert [(e.api.name, e.asset) for e in endpoints] == [
        ("coinbase", "btc"),
        ("gold-api", "gold"),
        ("coinbase", "eth"),
    ]
    assert [e.api.name for e in plan(["btc"], ("kraken", "coinbase"))] == ["kraken"]


@pytest.mark.parametrize(
    "assets, apis, words",
    [
        (["btc"], ("ftx",), "unknown price API 'ftx'"),
        (["doge"], ("coinbase",), "unknown asset 'doge'"),
        (["gold"], ("coinbase", "kraken"), "none of the APIs coinbase, kraken has a price"),
    ],
)
def test_plan_errors_are_one_sentence(assets, apis, words):
    with pytest.raises(ConfigError, match=words):
        plan(assets, apis)


# ---------------------------------------------------------------------------- parsers


def test_coinbase_documented_ticker():
    assert parse("coinbase", payload("coinbase_ticker.json"), "btc") == {
        "asset": "btc",
        "price": 333.99,
        "time": "2015-11-14T20:46:03.511254Z",  # the last trade's own time
        "source": "coinbase",
    }


def test_kraken_documented_ticker():
    # No time in the answer: the tick is stamped when the answer arrived.
    assert parse("kraken", payload("kraken_ticker.json"), "btc") == {
        "asset": "btc",
        "price": 30303.2,
        "time": "2024-05-01T12:00:30Z",
        "source": "kraken",
    }


def test_binance_documented_ticker_is_not_in_dollars():
    with pytest.raises(LiveDataError, match="'LTCBTC' is not quoted in US dollars"):
        parse("binance", payload("binance_ticker_price.json"), "ltc")


def test_binance_ticker_for_a_dollar_pair():
    # The documented answer, for the symbol the source asks for.
    body = payload("binance_ticker_price.json") | {"symbol": "BTCUSDT"}
    assert parse("binance", body, "btc") == {
        "asset": "btc",
        "price": 4.000002,
        "time": "2024-05-01T12:00:30Z",
        "source": "binance",
    }
    with pytest.raises(LiveDataError, match="about 'BTCUSDT', not 'eth'"):
        parse("binance", body, "eth")


def test_gold_api_documented_price():
    assert parse("gold-api", payload("gold_api_price.json"), "gold") == {
        "asset": "gold",
        "price": 4165.200195,
        "time": "2026-07-03T16:08:54Z",
        "source": "gold-api",
    }
    with pytest.raises(LiveDataError, match="about 'XAU', not 'silver'"):
        parse("gold-api", payload("gold_api_price.json"), "silver")


@pytest.mark.parametrize(
    "api, name, words",
    [
        ("coinbase", "coinbase_error.json", "coinbase answered with an error: 'Invalid Price'"),
        ("kraken", "kraken_error.json", "EQuery:Unknown asset pair"),
        ("binance", "binance_error.json", "binance answered with an error: 'Invalid symbol.'"),
    ],
)
def test_documented_error_answers(api, name, words):
    with pytest.raises(LiveDataError, match=words):
        parse(api, payload(name), "btc")


GOOD = {
    "coinbase": ("coinbase_ticker.json", "btc"),
    "kraken": ("kraken_ticker.json", "btc"),
    "binance": ("binance_ticker_price.json", "ltc"),
    "gold-api": ("gold_api_price.json", "gold"),
}


def broken(name: str) -> list:
    """The documented answer with each field removed, emptied or of another type."""
    body = payload(name)
    out = [None, [], "<html>busy</html>", 42, {}, [body]]
    for key in body:
        out.append({k: v for k, v in body.items() if k != key})
        for value in (None, "", "abc", -1, 0, [], {}, True, "NaN", "1e999", 10**400):
            out.append(body | {key: value})
    return out


@pytest.mark.parametrize("api", list(GOOD))
def test_malformed_answers_are_a_clear_error_never_a_crash(api):
    name, asset = GOOD[api]
    errors = 0
    for body in broken(name):
        try:
            tick = parse(api, body, asset)
        except LiveDataError as err:
            assert str(err).startswith(api), str(err)
            errors += 1
            continue
        # Changing a field the parser does not read is fine: the tick is still a price.
        assert tick["price"] > 0 and tick["asset"] == asset and tick["source"] == api
    assert errors > 10


def test_live_data_error_is_a_lab_data_error():
    assert issubclass(LiveDataError, DataError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=json_values, field_value=json_values)
def test_any_json_gives_a_tick_or_a_live_data_error(body, field_value):
    for api, (name, asset) in GOOD.items():
        documented = payload(name)
        for candidate in (body, {**documented, next(iter(documented)): field_value}):
            try:
                tick = parse(api, candidate, asset)
            except LiveDataError:
                continue
            assert isinstance(tick["price"], float) and tick["price"] > 0
            assert tick["time"].endswith("Z")


# ---------------------------------------------------------------------------- the poller


def test_backoff_doubles_up_to_a_cap():
    assert [backoff_delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff_delay(50) == 300.0
    assert backoff_delay(3, base=0.5, cap=1.5) == 1.5


class FakeApis:
    """An ``httpx.MockTransport`` handler answering with the documented payloads."""

    def __init__(self):
        self.answers: dict[str, list[httpx.Response]] = {}
        self.requests: list[str] = []

    def queue(self, url: str, *responses: httpx.Response) -> None:
        self.answers.setdefault(url, []).extend(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(url)
        answers = self.answers[url]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(name: str, **changes) -> httpx.Response:
    return httpx.Response(200, json=payload(name) | changes)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def poll_once(poller: Poller, state: EndpointState, fake: FakeApis):
    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            return await poller.poll(state, client)

    return asyncio.run(run())


def make(assets=("btc",), apis=("coinbase",), **kw):
    errors = []
    clock = Clock()
    poller = Poller(
        plan(list(assets), apis),
        interval=10,
        clock=clock,
        on_error=lambda api, msg: errors.append((api, msg)),
        **kw,
    )
    return poller, clock, errors


def test_a_poll_returns_the_tick_and_waits_the_interval():
    poller, clock, errors = make(("btc", "gold"), ("coinbase", "gold-api"))
    fake = FakeApis()
    fake.queue(APIS["coinbase"].url("btc"), ok("coinbase_ticker.json"))
    fake.queue(APIS["gold-api"].url("gold"), ok("gold_api_price.json"))
    coinbase, gold = poller.states
    assert poll_once(poller, coinbase, fake)["price"] == 333.99
    assert coinbase.next_try == 1010.0
    assert poll_once(poller, gold, fake)["asset"] == "gold"
    assert gold.next_try == 1030.0  # gold-api asks for 30 s between calls
    assert errors == []


def test_an_unchanged_answer_is_not_a_new_tick():
    poller, clock, _ = make()
    fake = FakeApis()
    url = APIS["coinbase"].url("btc")
    fake.queue(url, ok("coinbase_ticker.json"), ok("coinbase_ticker.json"))
    fake.queue(url, ok("coinbase_ticker.json", time="2015-11-14T20:46:04Z", price="334.5"))
    state = poller.states[0]
    assert poll_once(poller, state, fake) is not None
    assert poll_once(poller, state, fake) is None  # same trade as before
    assert poll_once(poller, state, fake)["price"] == 334.5


@pytest.mark.parametrize(
    "failure, words",
    [
        (httpx.Response(500, text="oops"), "coinbase answered HTTP 500"),
        (httpx.Response(200, text="<html>maintenance</html>"), "coinbase: the answer is not JSON"),
        (httpx.ConnectTimeout("timed out"), "timed out"),
        (httpx.Response(200, json={"message": "NotFound"}), "coinbase answered with an error"),
    ],
)
def test_failures_back_off_then_recover(failure, words):
    poller, clock, errors = make()
    fake = FakeApis()
    fake.queue(APIS["coinbase"].url("btc"), failure, failure, failure, ok("coinbase_ticker.json"))
    state = poller.states[0]
    waits = []
    for _ in range(3):
        assert poll_once(poller, state, fake) is None
        waits.append(state.next_try - clock.now)
    assert waits == [1.0, 2.0, 4.0]
    assert len(errors) == 3 and errors[0][0] == "coinbase" and words in errors[0][1]
    assert state.errors == 3 and words in state.last_error
    assert poll_once(poller, state, fake)["price"] == 333.99
    assert state.failures == 0 and state.next_try - clock.now == 10.0


def test_retry_after_is_honoured():
    poller, clock, errors = make()
    fake = FakeApis()
    fake.queue(APIS["coinbase"].url("btc"), httpx.Response(429, headers={"Retry-After": "60"}))
    assert poll_once(poller, poller.states[0], fake) is None
    assert poller.states[0].next_try == 1060.0
    assert errors == [("coinbase", "coinbase answered HTTP 429")]


def test_the_poller_yields_each_new_tick():
    fake = FakeApis()
    url = APIS["kraken"].url("btc")  # kraken: each answer is stamped when it arrives
    prices = ["30000.1", "30000.2", "30000.3"]
    for price in prices:
        body = payload("kraken_ticker.json")
        body["result"]["XXBTZUSD"]["c"][0] = price
        fake.queue(url, httpx.Response(200, json=body))

    async def run():
        client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        poller = Poller(plan(["btc"], ("kraken",)), interval=0.01, client=client)
        ticks = []
        async for tick in poller.ticks():
            ticks.append(tick)
            if len(ticks) == 3:
                break
        await client.aclose()
        return ticks

    ticks = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert [t["price"] for t in ticks] == [30000.1, 30000.2, 30000.3]
    assert fake.requests == [url] * 3
    assert all(t["source"] == "kraken" and t["asset"] == "btc" for t in ticks)


def test_a_poller_needs_an_endpoint():
    with pytest.raises(ConfigError):
        Poller([])
