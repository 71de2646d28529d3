"""Ask a running service over HTTP, as notebooks 01 and 02 do: what one call costs, and what
its metrics say:

    from lab_helpers import probes

    probes.call_costs("http://127.0.0.1:8000/healthz")     # a function call vs an HTTP call
    print(probes.metric_lines(url + "/metrics", "ingest_ticks_stored"))
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator

import pandas as pd
import requests


def median_seconds(call: Callable[[], object], n: int = 200) -> float:
    """The median time of `n` calls of `call`, in seconds."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def call_costs(url: str, n: int = 200) -> pd.DataFrame:
    """The median time of a Python function call that builds the answer of a `/healthz`, and
    of an HTTP GET of `url` over one kept-open connection (as a service client does), in
    microseconds: a table with the columns `call` and `median_us`."""

    def in_process() -> dict:
        return {"status": "ok", "service": "api"}  # what the api's /healthz computes

    with requests.Session() as session:
        remote = median_seconds(lambda: session.get(url, timeout=5).json(), n)
    local = median_seconds(in_process, n)
    return pd.DataFrame(
        {"call": ["function", "HTTP on loopback"], "median_us": [local * 1e6, remote * 1e6]}
    )


def metric_lines(url: str, *prefixes: str) -> str:
    """The lines of a Prometheus text answer (GET `url`) whose metric starts with one of
    `prefixes`, without the `_created` timestamps and the help and type comments."""
    text = requests.get(url, timeout=5).text
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(prefixes) and "_created" not in line.split(" ")[0]
    )


@contextlib.contextmanager
def service_process(stack, name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start one more process of the stack's service `name` on a free port, with the stack's
    settings changed by `env`; yields its URL, and stops it at the end of the block (how
    notebook 02 starts an api with a wrong password)."""
    from .stack import free_port, stop_process

    port = free_port()
    full = {**os.environ, **stack.app_env(name, port), **(env or {})}
    process = subprocess.Popen(
        stack.app_command(name), env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout=30)
