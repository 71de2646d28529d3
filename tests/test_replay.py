"""The replay logic of the source service: ticks, bad records, pacing, message ids."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
import pytest

from lab_helpers import data, etl
from lab_helpers.errors import ConfigError, DataError, UnknownAssetError
from lab_helpers.replay import (
    BAD_KINDS,
    EXPECTED_REASON,
    KINDS,
    Pacer,
    ReplayConfig,
    inject_bad,
    iso_utc,
    message_id,
    records,
    tick_epoch,
    valid_ticks,
    wall_delay,
)

CORE = ("asset", "price", "time", "source")


def without_seq(tick: dict) -> dict:
    return {k: v for k, v in tick.items() if k != "seq"}


# ---------------------------------------------------------------------------- valid ticks


def test_one_minute_ticks_match_the_data_set():
    frame = data.load("btc_usd_1min")
    pairs = list(records(ReplayConfig(), limit=3))
    assert [kind for kind, _ in pairs] == ["valid"] * 3
    first = pairs[0][1]
    row = frame.iloc[0]
    # A bar's close price is set at the end of its minute: the data set's time, not the label.
    assert first == {
        "asset": "btc",
        "price": row["price"],
        "time": "2021-03-15T22:17:00Z",
        "source": "replay",
        "seq": 0,
        "volume": row["volume"],
        "open": row["open"],
        "high": row["high"],
        "low": row["low"],
    }
    assert list(first)[:5] == [*CORE, "seq"]
    assert [t["seq"] for _, t in pairs] == [0, 1, 2]
    assert [t["time"] for _, t in pairs] == [iso_utc(t) for t in frame["time"].iloc[:3]]


def test_daily_assets_are_merged_in_time_order():
    config = ReplayConfig(dataset=None, assets=("btc", "gold"), start="2020-01-01")
    ticks = [t for _, t in records(config, limit=40)]
    times = [tick_epoch(t) for t in ticks]
    assert times == sorted(times)
    assert {t["asset"] for t in ticks} == {"btc", "gold"}
    # Crypto closes at midnight UTC, the gold PM fix at 15:00 London.
    assert ticks[0] == {
        "asset": "btc",
        "price": 7183.88,
        "time": "2020-01-01T00:00:00Z",
        "source": "replay",
        "seq": 0,
        "volume": 140384995.27,
    }
    gold = next(t for t in ticks if t["asset"] == "gold")
    assert gold["time"] == "2020-01-02T15:00:00Z"
    assert "volume" not in gold  # the metals file has no volume: no NaN field either


def test_start_skips_earlier_rows_and_loop_starts_again_from_there():
    config = ReplayConfig(start="2021-04-19T23:59:00Z", loop=True)
    pairs = list(records(config, limit=12))
    times = [t["time"] for _, t in pairs]
    rows = 5  # the last five bars of the file: 23:59 to 00:03
    assert times[:rows] == times[rows : 2 * rows]
    assert times[0] == "2021-04-19T23:59:00Z"
    assert times[rows - 1] == "2021-04-20T00:03:00Z"
    assert [t["seq"] for _, t in pairs] == list(range(12))  # seq goes on counting


def test_without_loop_the_replay_ends_with_the_data():
    config = ReplayConfig(start="2021-04-19T23:59:00Z")
    assert len(list(records(config))) == 5


@pytest.mark.parametrize(
    "config, error",
    [
        (dict(start="2030-01-01"), DataError),
        (dict(dataset="nope"), UnknownAssetError),
        (dict(dataset=None, assets=("gold",), frequency="1min"), UnknownAssetError),
    ],
)
def test_records_checks_the_data_before_the_first_tick(config, error):
    with pytest.raises(error):
        records(ReplayConfig(**config))


@pytest.mark.parametrize(
    "config, words",
    [
        (dict(bad_share=1.5), "out of range"),
        (dict(bad_share=0.1, bad_kinds=("typo",)), "unknown bad-record kind 'typo'"),
        (dict(bad_share=0.1, bad_kinds=()), "no bad-record kind"),
        (dict(start="yesterday-ish"), "not a time"),
        (dict(dataset=None), "nothing to replay"),
        (dict(frequency="hourly"), "frequency"),
    ],
)
def test_bad_configuration_is_one_clear_error(config, words):
    with pytest.raises(ConfigError, match=words):
        ReplayConfig(**config)


# ---------------------------------------------------------------------------- bad records


def sample(share=0.3, seed=11, n=3000, kinds=BAD_KINDS) -> list[tuple[str, dict]]:
    config = ReplayConfig(bad_share=share, bad_kinds=kinds, seed=seed)
    return list(records(config, limit=n))


def test_the_same_seed_gives_the_same_records_and_another_seed_others():
    assert sample(seed=5) == sample(seed=5)
    assert [k for k, _ in sample(seed=5)] != [k for k, _ in sample(seed=6)]


def test_the_bad_share_is_the_share_of_emitted_records():
    kinds = Counter(kind for kind, _ in sample(share=0.2, n=10_000))
    bad = 10_000 - kinds["valid"]
    assert 0.18 < bad / 10_000 < 0.22
    assert set(kinds) == set(KINDS)  # every kind shows up
    assert sample(share=0.0, n=200) == [("valid", t) for _, t in sample(share=0.0, n=200)]


def test_only_the_chosen_kinds_are_injected():
    kinds = {kind for kind, _ in sample(kinds=("nan_price", "duplicate"))}
    assert kinds == {"valid", "nan_price", "duplicate"}


def test_seq_counts_every_emitted_record_from_zero():
    assert [t["seq"] for _, t in sample()] == list(range(3000))


def test_every_valid_row_is_emitted_once_and_unchanged():
    config = ReplayConfig(start="2021-04-19T00:00:00Z", bad_share=0.3, seed=2)
    pairs = list(records(config))  # to the end of the data: nothing is still held back
    good = [without_seq(t) for kind, t in pairs if kind in ("valid", "out_of_order")]
    frame = data.load("btc_usd_1min")
    rows = list(valid_ticks(frame[frame["time"] >= pd.Timestamp("2021-04-19", tz="UTC")]))
    assert len(rows) == 1444
    # The late ticks come out a few places later: in time order, they are the data set.
    assert sorted(good, key=lambda t: t["time"]) == rows
    assert len(pairs) > len(rows) + 300  # ... plus the inserted bad records


def test_each_bad_kind_looks_like_its_name():
    pairs = sample(share=0.5)
    emitted_before: list[dict] = []
    latest = -math.inf
    for kind, tick in pairs:
        price = tick.get("price")
        if kind == "missing_price":
            assert "price" not in tick
        elif kind == "nan_price":
            assert isinstance(price, float) and math.isnan(price)
        elif kind == "negative_price":
            assert price < 0
        elif kind == "wrong_type":
            assert price == "abc" or (isinstance(price, list) and price[0] > 0)
        elif kind == "unknown_asset":
            assert data.normalize_asset(tick["asset"]) is None
        elif kind == "broken_timestamp":
            assert tick_epoch(tick) is None
        elif kind == "duplicate":
            assert without_seq(tick) in [without_seq(t) for t in emitted_before[-5:]]
        elif kind == "out_of_order":
            assert tick_epoch(tick) < latest  # older than a tick already sent
        if kind in ("valid", "out_of_order"):
            emitted_before.append(tick)
            latest = max(latest, tick_epoch(tick))


def test_the_injector_works_on_any_tick_iterator():
    ticks = [
        {"asset": "eth", "price": 1.0 + i, "time": f"2024-01-01T00:0{i}:00Z"} for i in range(5)
    ]
    out = list(inject_bad(ticks))
    assert out == [("valid", {**t, "seq": i}) for i, t in enumerate(ticks)]
    assert ticks[0] == {"asset": "eth", "price": 1.0, "time": "2024-01-01T00:00:00Z"}


def test_held_back_ticks_are_released_at_the_end_of_the_data():
    config = ReplayConfig(start="2021-04-19T23:50:00Z", bad_share=1.0, bad_kinds=("out_of_order",))
    pairs = list(records(config))
    # No valid tick ever comes out, so the held ticks wait for the end, in their order.
    assert [k for k, _ in pairs] == ["out_of_order"] * 14
    assert sorted(t["time"] for _, t in pairs) == [t["time"] for _, t in pairs]


# ---------------------------------------------------------------------------- with the ETL


def test_the_etl_quarantines_each_bad_kind_for_its_reason():
    pairs = sample(share=0.4, n=2000, seed=3)
    kinds = [kind for kind, _ in pairs]
    result = etl.clean(pd.DataFrame([tick for _, tick in pairs]))
    assert len(result.clean) + len(result.quarantine) == len(pairs)

    reasons = dict(zip(result.quarantine["row"], result.quarantine["reason"]))
    for row, kind in enumerate(kinds):
        assert reasons.get(row) == EXPECTED_REASON[kind], (row, kind, pairs[row][1])
    # Late ticks are stored: the clean table holds every valid and every out_of_order tick.
    clean_seqs = set(result.clean["seq"].astype(int))
    good = {t["seq"] for k, t in pairs if k in ("valid", "out_of_order")}
    assert clean_seqs == good
    assert result.clean["time"].is_monotonic_increasing  # one asset: sorted by time
    assert Counter(kinds)["out_of_order"] > 10


def test_a_duplicate_in_another_batch_is_clean_there():
    pairs = sample(share=0.5, kinds=("duplicate",), n=40)
    dup = next(i for i, (kind, _) in enumerate(pairs) if kind == "duplicate")
    alone = etl.clean(pd.DataFrame([pairs[dup][1]]))
    assert len(alone.clean) == 1 and alone.quarantine.empty


# ---------------------------------------------------------------------------- pacing


def test_wall_delay_plays_the_data_time_faster_or_at_a_fixed_rate():
    assert wall_delay(0.0, 60.0, speedup=60) == 1.0
    assert wall_delay(0.0, 86_400.0, speedup=86_400) == 1.0
    assert wall_delay(0.0, 60.0, speedup=60, rate=4) == 0.25  # rate wins
    assert wall_delay(None, 60.0, speedup=60) == 0.0  # the first tick
    assert wall_delay(60.0, 0.0, speedup=60) == 0.0  # a late tick does not wait
    assert wall_delay(0.0, None, speedup=60) == 0.0  # nor a tick without a time
    assert wall_delay(0.0, 60.0) == 0.0  # no pacing at all


def test_the_pacer_gives_one_second_per_minute_bar_at_speedup_60():
    pacer = Pacer(speedup=60)
    config = ReplayConfig(start="2021-03-28T00:01:00Z")
    delays = [pacer.delay(t) for _, t in records(config, limit=6)]
    # The 1-minute file has three gaps (no bar at 00:04 here): they last longer.
    assert delays == [0.0, 1.0, 1.0, 2.0, 1.0, 1.0]


def test_the_pacer_clock_never_goes_back():
    pacer = Pacer(speedup=60)
    ticks = [
        {"time": "2021-01-01T00:00:00Z"},
        {"time": "2021-01-01T00:02:00Z"},
        {"time": "2021-01-01T00:01:00Z"},  # late: no wait
        {"time": "not a time"},  # broken: no wait
        {"time": "2021-01-01T00:03:00Z"},  # one minute after the newest, not two
    ]
    assert [pacer.delay(t) for t in ticks] == [0.0, 2.0, 0.0, 0.0, 1.0]
    fixed = Pacer(rate=10)
    assert [fixed.delay(t) for t in ticks] == [0.1] * 5


def test_tick_epoch_reads_iso_text_only():
    assert tick_epoch({"time": "1970-01-01T00:01:00Z"}) == 60.0
    assert tick_epoch({"time": "1970-01-01T00:01:00"}) == 60.0  # naive: UTC
    assert tick_epoch({"time": "1970-01-01T01:01:00+01:00"}) == 60.0
    for broken in ("", "2021-02-30T10:00:00Z", "2021-04-14T25:61:00Z", 60, None):
        assert tick_epoch({"time": broken}) is None
    assert tick_epoch({}) is None


# ---------------------------------------------------------------------------- identity


def test_message_id_is_the_content_without_sent():
    tick = {"asset": "btc", "price": 1.5, "time": "2021-01-01T00:00:00Z", "seq": 3}
    assert message_id(tick) == message_id({**tick, "sent": 123.4})
    assert message_id(tick) == message_id(dict(reversed(tick.items())))
    assert message_id(tick) != message_id({**tick, "seq": 4})
    assert len(message_id(tick)) == 32


def test_a_duplicate_record_has_its_own_message_id():
    pairs = sample(share=0.5, kinds=("duplicate",), n=60)
    ids = [message_id(t) for _, t in pairs]
    assert len(set(ids)) == len(ids)
    # ... while the same run twice gives the same ids (a restarted source is deduplicated).
    assert ids == [message_id(t) for _, t in sample(share=0.5, kinds=("duplicate",), n=60)]


def test_iso_utc():
    assert iso_utc("2021-04-14T08:13:00+02:00") == "2021-04-14T06:13:00Z"
    assert iso_utc(pd.Timestamp("2021-04-14 06:13")) == "2021-04-14T06:13:00Z"
    assert iso_utc("2015-11-14T20:46:03.511254Z") == "2015-11-14T20:46:03.511254Z"
