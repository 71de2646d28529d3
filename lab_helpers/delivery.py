"""The plumbing of notebook 05 (polling or push?): a source of its own to measure with, and
the servers' own counters that check a learner's measurements.

- `start_source`: one more `source` process, at a known pace, for the measurement;
- `nats_connections`: what the NATS server counted for the connections of a name;
- `api_metrics`: the api's Prometheus counters, as numbers;
- `sse_events`: the events of a Server-Sent Events text (what `curl -N` prints).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import requests

from .errors import StackError
from .stack import LocalStack, free_port, stop_process
from .wait import wait_for

SUBSCRIBER = "notebook-05-subscriber"
"""The NATS connection name of the learner's subscriber: the broker's counters are found by
it."""
DATASET = "sol_usd_daily"
"""What the measurement source replays: one tick per day of Solana's history, at `rate`."""
FRESH_ROWS = 300
"""Rows the replay needs ahead of the last stored price to start after it (else: from the
beginning)."""


@dataclass
class MeasurementSource:
    """A `source` process started by `start_source`; stop it with `stop` (or
    use it in a `with` block). It is stopped at the latest when the kernel exits."""

    stack: LocalStack
    process: subprocess.Popen
    url: str
    subject: str
    rate: float
    buffer: int
    log: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def nats_url(self) -> str:
        """The address of the NATS server it publishes to."""
        return self.stack.settings.require_nats_url()

    def stats(self) -> dict:
        """The source's own counters (`GET /stats`)."""
        return requests.get(self.url + "/stats", timeout=5).json()

    def last_seq(self) -> int:
        """The sequence number of the last tick the source published."""
        return self.stats()["last_seq"]

    def ticks(self, after: int, limit: int = 1000) -> dict:
        """One poll of `GET /ticks`: the ticks after `after` that the source still keeps."""
        params = {"after": after, "limit": limit}
        return requests.get(self.url + "/ticks", params=params, timeout=5).json()

    def stop(self, timeout: float = 15.0) -> int:
        """Stop the process and return its exit code: SIGTERM (it finishes cleanly), then,
        if it has not ended within `timeout` seconds, SIGKILL (the code is then -9)."""
        stop_process(self.process, timeout)
        if not self._stopped:
            self._stopped = True
            atexit.unregister(self.stop)
        return self.process.returncode

    def __enter__(self) -> MeasurementSource:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _fresh_start(stack: LocalStack, dataset: str) -> str | None:
    """Where the replay should start for its ticks to be new to the pipeline: just after the
    last price of its asset that the pipeline stored (a tick stored already would be
    quarantined as a duplicate), while enough rows are left; else None (from the start)."""
    from .data import DATASETS, load
    from .influx import InfluxDB

    asset = DATASETS[dataset].asset
    last = InfluxDB.connect("reader", settings=stack.settings).query(
        "SELECT last(price) FROM price WHERE asset = $asset AND source = $source",
        params={"asset": asset, "source": "replay"},
    )
    if len(last) and last.index[0] < load(dataset)["time"].iloc[-FRESH_ROWS]:
        return (last.index[0] + pd.Timedelta("1s")).isoformat()
    return None


def start_source(
    rate: float, buffer: int, *, dataset: str = DATASET, stack: LocalStack | None = None,
    timeout: float = 30.0,
) -> MeasurementSource:  # fmt: skip
    """Start one more `source` process for a measurement and wait until it publishes.

    It is the same program as the stack's source (`services/source/main.py`), on a free
    port, configured only by its environment: it replays `dataset` at `rate` ticks per
    second in a loop, keeps its last `buffer` ticks for pollers (`GET /ticks`), and
    publishes each tick to the stack's NATS on `ticks.<asset>`, so its ticks also flow
    through the pipeline. Its log is in the stack's `logs/` folder.

    Example: `source = start_source(rate=10, buffer=20)`, then `source.url`,
    `source.subject`, `source.last_seq()`, and `source.stop()` at the end.
    """
    from .data import DATASETS

    stack = stack or LocalStack()
    settings = {
        "SOURCE_DATASET": dataset, "SOURCE_RATE": str(rate), "SOURCE_BUFFER": str(buffer),
        "SOURCE_LOOP": "true",
    }  # fmt: skip
    start = _fresh_start(stack, dataset)
    if start:
        settings["SOURCE_START"] = start
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SOURCE_")}
    env |= stack.app_env("source", port) | settings  # the stack's addresses, then ours
    log = stack.lab_dir / "logs" / f"measurement-source-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            stack.app_command("source"), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    source = MeasurementSource(
        stack, process, f"http://127.0.0.1:{port}", f"ticks.{DATASETS[dataset].asset}", rate,
        buffer, log,
    )  # fmt: skip
    atexit.register(source.stop)

    def publishing() -> bool:
        if process.poll() is not None:
            source.stop()
            raise StackError(f"the measurement source stopped at start-up: see {log}")
        try:
            return source.last_seq() is not None  # it has published its first tick
        except requests.RequestException:
            return False  # not listening yet

    if not wait_for(publishing, timeout, error=None):
        source.stop()
        raise StackError(f"the measurement source did not start within {timeout:.0f} s: see {log}")
    return source


def service_url(name: str, stack: LocalStack | None = None) -> str:
    """The address of one of the stack's services (`api`, `source`...), running. A
    service that is busy and slow to answer its health check still counts."""
    stack = stack or LocalStack()
    for status in stack.status():
        if status.name == name and status.pid and status.url:
            return status.url
    raise StackError(f"the {name} service is not running: run `make stack-up` (or stack.up())")


def nats_monitor_url(stack: LocalStack) -> str:
    """The address of the NATS server's monitoring endpoint (`/connz`, `/varz`...)."""
    try:
        return json.loads(stack.state_file.read_text())["nats"]["monitor_url"]
    except (OSError, KeyError, ValueError):
        raise StackError("NATS is not running: run `make stack-up` (or stack.up())") from None


def nats_connections(stack: LocalStack, name: str) -> list[dict]:
    """What the NATS server counted for the client connections named `name`, open and
    recently closed, newest first: `cid`, `open`, `out_msgs` (messages it delivered to
    the connection) and `subjects` (of the subscriptions still open)."""
    monitor = nats_monitor_url(stack)
    found = []
    # Newest first in each state (these sort orders are descending), so the limit only
    # drops old connections.
    for state, order in (("open", "start"), ("closed", "stop")):
        params = {"state": state, "subs": "detail", "sort": order, "limit": 256}
        answer = requests.get(monitor + "/connz", params=params, timeout=5).json()
        for conn in answer.get("connections") or []:
            if conn.get("name") == name:
                subjects = [s["subject"] for s in conn.get("subscriptions_list_detail") or []]
                found.append(
                    {"cid": conn["cid"], "open": state == "open", "out_msgs": conn["out_msgs"],
                     "subjects": subjects}
                )  # fmt: skip
    return sorted(found, key=lambda c: c["cid"], reverse=True)


def api_metrics(api_url: str) -> dict[tuple[str, frozenset], float]:
    """The api's Prometheus metrics (`GET /metrics`) as `{(name, labels): value}`, the
    labels as a frozenset of `(label, value)` pairs."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(api_url.rstrip("/") + "/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(metrics: dict, name: str, **labels: str) -> float:
    """One value of `api_metrics` (0 when the api has not counted it yet)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def sse_events(text: str) -> list[dict]:
    """The events of a Server-Sent Events text, each `{"event": ..., "data": ...}` (the
    data decoded from JSON when it is JSON); comment lines (`: ...`) are skipped."""
    events, current = [], {}
    for line in text.splitlines() + [""]:
        if not line:
            if "data" in current:
                data = current["data"]
                try:
                    current["data"] = json.loads(data)
                except ValueError:
                    pass  # plain text data stays text
                events.append({"event": current.get("event", "message"), "data": current["data"]})
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "data" and "data" in current:
                current["data"] += "\n" + value  # a multi-line data field
            else:
                current[key] = value
    return events
