"""Run one of the lab's services as a real local process, for the tests.

The process gets exactly the command and environment that ``LocalStack`` (and the container
image) gives it, plus any extra variables a test sets, and is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import requests

from lab_helpers.stack import LocalStack, free_port


def wait_for(predicate, timeout: float = 20.0, what: str = "the condition", every: float = 0.1):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class StreamListener(threading.Thread):
    """Reads the api's live stream (``{url}/api/stream``) in the background until it holds
    ``count`` ticks (in ``ticks``); ``connected`` is set once the stream is open."""

    def __init__(self, url: str, count: int, timeout: float):
        super().__init__(daemon=True)
        self.url, self.count, self.timeout = url, count, timeout
        self.ticks: list[dict] = []
        self.connected = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", self.url + "/api/stream", timeout=self.timeout) as resp:
            self.connected.set()
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    self.ticks.append(json.loads(line[5:]))
                    if len(self.ticks) >= self.count:
                        return


@dataclass
class RunningService:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def run_app(
    stack: LocalStack, name: str, env: dict[str, str] | None = None, *, ready: bool = False,
    timeout: float = 30,
) -> Iterator[RunningService]:  # fmt: skip
    """Start ``services/<name>/main.py`` against ``stack``; wait for /healthz (or /readyz
    with ``ready=True``); on exit send SIGTERM and check that it stopped cleanly."""
    port = free_port()
    full_env = {**os.environ, **stack.app_env(name, port), **(env or {})}
    log = stack.lab_dir / "logs" / f"test-{name}-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            stack.app_command(name), env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    service = RunningService(name, f"http://127.0.0.1:{port}", proc, log)
    probe = service.url + ("/readyz" if ready else "/healthz")
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{service.output()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(probe, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not up within {timeout} s:\n{service.output()}")
            time.sleep(0.05)
        yield service
    finally:
        if proc.poll() is None:
            code = service.stop()
            assert code == 0, (
                f"{name} did not stop cleanly on SIGTERM ({code}):\n{service.output()}"
            )


def listening_addresses(pid: int) -> list[str]:
    """Local addresses (ip:port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for row in fh:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    ip_hex, port_hex = cols[1].split(":")
                    if len(ip_hex) == 8:
                        ip = ".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    else:
                        ip = "ipv6:" + ip_hex
                    found.append(f"{ip}:{int(port_hex, 16)}")
    return found
