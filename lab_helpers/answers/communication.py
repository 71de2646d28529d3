"""How the exercises of notebook 05 (polling or push?) are checked.

The checkers run the learner's consumers themselves, for a couple of seconds, and hold what
they measured against the servers' own counters: the measurement source's sequence numbers
(`/stats`), the NATS server's count of messages it delivered to the subscriber's connection
(`/connz`), and the api's count of stream requests (`/metrics`).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections import Counter
from urllib.parse import urlsplit

from .. import delivery
from ..errors import LabError
from ..exercises import Wrong, call_async

POLL_INTERVAL = 0.1  # seconds between two polls when the checker runs the learner's poller
RUN_SECONDS = 2.0  # how long the checker runs each consumer
MAX_CURL_SECONDS = 10  # the longest --max-time the checker runs


def _ticks(result, function: str) -> tuple[dict, list[int], list[float]]:
    """The learner's result, checked for shape: the dict, its seqs and its delays."""
    if not isinstance(result, dict) or not {"requests", "empty", "ticks"} <= set(result):
        raise Wrong(f"{function}() must return the dict it starts with: requests, empty, ticks")
    ticks = result["ticks"]
    if not isinstance(ticks, list) or not all(
        isinstance(t, dict) and {"seq", "latency_ms"} <= set(t) for t in ticks
    ):
        raise Wrong('each tick recorded as {"seq": ..., "latency_ms": ...}')
    return result, [t["seq"] for t in ticks], [float(t["latency_ms"]) for t in ticks]


def _same_ticks_once(seqs: list[int], first: int, last: int, what: str) -> None:
    """The seqs are each tick from `first` on, once, in order, up to about `last`."""
    if not seqs:
        raise Wrong(f"no tick recorded, while the source published {last - first + 1}")
    repeated = [seq for seq, n in Counter(seqs).items() if n > 1]
    if repeated:
        raise Wrong(f"tick {repeated[0]} was recorded {seqs.count(repeated[0])} times: {what}")
    if any(seq < first or seq > last for seq in seqs):
        raise Wrong(
            "some ticks recorded were not published by the measurement source in that time: "
            "take only its ticks"
        )
    missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    if seqs != sorted(seqs) or missing:
        raise Wrong(f"ticks are missing or out of order (first missing: {missing[:1]})")


def _delays(latencies: list[float], most_ms: float) -> None:
    if min(latencies) < -1:
        raise Wrong(
            f"a delay of {min(latencies):.0f} ms is negative: arrival minus `sent`, both on "
            "the wall clock (time.time())"
        )
    if max(latencies) < 0.1:
        raise Wrong(
            "every delay is under 0.1: give them in milliseconds, 1000 × (arrival - `sent`)"
        )
    if max(latencies) > most_ms:
        raise Wrong(
            f"a delay of {max(latencies):,.0f} ms is impossible here: the delay of a tick is "
            "1000 × (its arrival time.time() - its `sent`)"
        )


# -- 05.1 the polling client -------------------------------------------------------------------
def verify_poll(poll, source) -> None:
    after = source.last_seq()
    result = call_async(poll, source.url, POLL_INTERVAL, RUN_SECONDS, after, timeout=30)
    last = source.last_seq()
    result, seqs, latencies = _ticks(result, "poll")
    _same_ticks_once(seqs, after + 1, last, "ask for the ticks after the last one you received")
    if seqs[0] != after + 1:
        raise Wrong(f"the first ticks after `after` are missing: yours start at {seqs[0]}")
    late = last - seqs[-1]
    if late > source.rate * (POLL_INTERVAL + 1.0) + 1:
        raise Wrong(f"your poller stopped {late} ticks before the end: keep polling until then")
    requests, empty = result["requests"], result["empty"]
    most = RUN_SECONDS / POLL_INTERVAL + 3
    if requests > most:
        raise Wrong(
            f"{requests} requests in {RUN_SECONDS:g} s at an interval of {POLL_INTERVAL:g} s: "
            "wait `interval` seconds between two polls"
        )
    if not 0 <= empty < requests or requests - empty > len(seqs):
        raise Wrong(
            f"{requests} requests and {empty} empty ones do not fit {len(seqs)} ticks: count "
            "every request, and the empty answers among them"
        )
    _delays(latencies, most_ms=1000 * (POLL_INTERVAL + 5))


# -- 05.2 the push subscriber ------------------------------------------------------------------
def _closed_connection(source, wait: float = 3.0) -> dict:
    """The broker's record of the learner's newest connection, once the broker has seen it
    close (that takes a moment after the client returns)."""
    deadline = time.monotonic() + wait
    while True:
        connections = delivery.nats_connections(source.stack, delivery.SUBSCRIBER)
        if not connections:
            raise Wrong(
                f"the broker saw no connection named {delivery.SUBSCRIBER!r}: connect as the "
                "exercise's cell does"
            )
        if not connections[0]["open"]:
            return connections[0]
        if time.monotonic() > deadline:
            raise Wrong("your connection is still open: end with `await nc.drain()`")
        time.sleep(0.1)


def verify_subscribe(subscribe, source) -> None:
    before = source.last_seq()
    result = call_async(subscribe, source.nats_url, source.subject, RUN_SECONDS, timeout=30)
    last = source.last_seq()
    result, seqs, latencies = _ticks(result, "subscribe")
    newest = _closed_connection(source)
    if newest["subjects"] and set(newest["subjects"]) != {source.subject}:
        raise Wrong(
            f"you subscribed to {', '.join(newest['subjects'])}: the measurement source "
            f"publishes on {source.subject} (the `subject` argument)"
        )
    if not seqs:
        raise Wrong(
            f"no tick arrived, while the source published {last - before}: keep the "
            "subscription open for `seconds` before closing"
        )
    _same_ticks_once(seqs, before + 1, last, "record each message once")
    if newest["out_msgs"] != len(seqs):
        raise Wrong(
            f"the broker delivered {newest['out_msgs']} messages to your connection and you "
            f"recorded {len(seqs)}: record every message your callback gets, once"
        )
    if len(seqs) < (last - before) - source.rate * 1.0 - 1:
        raise Wrong(
            f"{len(seqs)} ticks recorded while the source published {last - before}: keep the "
            "subscription open for `seconds`"
        )
    if result["requests"] != 0:
        raise Wrong("a subscriber makes no request: it is pushed each message")
    _delays(latencies, most_ms=2000)


# -- 05.4 the stream, from the shell -----------------------------------------------------------
def _parse_curl(command, api: str) -> tuple[list[str], float]:
    if not isinstance(command, str):
        raise Wrong("`curl_command` is the command line, as one string")
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise Wrong(f"the shell cannot split that line ({err}): check the quotes") from None
    if not argv or argv[0] != "curl":
        raise Wrong("the command starts with curl")
    urls = [a for a in argv[1:] if a.startswith(("http://", "https://"))]
    if len(urls) != 1:
        raise Wrong("give curl one address: the api's, as in `API`")
    url, want = urlsplit(urls[0]), urlsplit(api)
    if url.netloc != want.netloc:
        raise Wrong(f"that is not the api's address: it is {api}")
    if url.path != "/api/stream":
        raise Wrong(
            f"{url.path} answers once and closes; the live stream of the api is /api/stream"
        )
    flags = [a for a in argv[1:] if a.startswith("-")]
    no_buffer = "--no-buffer" in flags or any(
        f.startswith("-") and not f.startswith("--") and "N" in f for f in flags
    )
    if not no_buffer:
        raise Wrong(
            "without -N (--no-buffer) curl keeps the events in its buffer and shows them late"
        )
    seconds = None
    for at, arg in enumerate(argv):
        if arg in ("-m", "--max-time") and at + 1 < len(argv):
            seconds = argv[at + 1]
        elif arg.startswith("--max-time="):
            seconds = arg.partition("=")[2]
    if seconds is None:
        raise Wrong("a stream never ends by itself, and neither would this command: --max-time")
    try:
        value = float(seconds)
    except ValueError:
        raise Wrong(f"--max-time takes a number of seconds, not {seconds!r}") from None
    if not 0 < value <= MAX_CURL_SECONDS:
        raise Wrong(f"a few seconds are enough: --max-time between 1 and {MAX_CURL_SECONDS}")
    return argv, value


def verify_curl(curl_command, API) -> None:
    argv, seconds = _parse_curl(curl_command, API)
    if shutil.which("curl") is None:
        raise LabError("curl is not installed here: install it (apt-get install curl)")
    route = {"route": "/api/stream", "status": "200"}
    before = delivery.api_metrics(API)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 10)
    after = delivery.api_metrics(API)
    opened = delivery.metric(after, "api_requests_total", **route) - delivery.metric(
        before, "api_requests_total", **route
    )
    if run.returncode not in (0, 28) or ": connected" not in run.stdout:
        raise Wrong(f"curl did not read the stream (exit {run.returncode}): {run.stderr[:200]}")
    if opened != 1:
        raise Wrong(f"the api counted {opened:g} stream requests during your command, not one")
    ticks = [e for e in delivery.sse_events(run.stdout) if e["event"] == "tick"]
    counted = delivery.metric(after, "api_stream_ticks_total") - delivery.metric(
        before, "api_stream_ticks_total"
    )
    if len(ticks) > counted or any(
        not isinstance(t["data"], dict) or not {"asset", "price", "time"} <= set(t["data"])
        for t in ticks
    ):
        raise Wrong("these events are not the api's ticks")
