"""Run one of the lab's services as a real local process, for the tests.

The process gets exactly the command and environment that ``LocalStack`` (and the container
image) gives it, plus any extra variables a test sets, and is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx

from lab_helpers.stack import AppProcess, LocalStack

SERVICES = Path(__file__).resolve().parent.parent / "services"


def service_modules(name: str) -> SimpleNamespace:
    """The modules of ``services/<name>/`` (``main``, ``settings`` ...), imported the way
    ``python services/<name>/main.py`` imports them (its folder first on the path), to test
    their parts in-process. They are not left in ``sys.modules``: every service has a
    ``settings`` and a ``main`` of its own."""
    folder = SERVICES / name
    own = sorted(path.stem for path in folder.glob("*.py"))
    saved = {module: sys.modules.pop(module) for module in own if module in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        return SimpleNamespace(**{module: importlib.import_module(module) for module in own})
    finally:
        sys.path.remove(str(folder))
        for module in own:
            sys.modules.pop(module, None)
        sys.modules.update(saved)


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


@contextlib.contextmanager
def run_app(
    stack: LocalStack, name: str, env: dict[str, str] | None = None, *, ready: bool = False,
    timeout: float = 30,
) -> Iterator[AppProcess]:  # fmt: skip
    """Start ``services/<name>/main.py`` against ``stack``; wait for /healthz (or /readyz
    with ``ready=True``); on exit send SIGTERM and check that it stopped cleanly."""
    service = stack.start_app(name, env, label="test")
    try:
        service.wait_up(ready=ready, timeout=timeout)
        yield service
    finally:
        if service.process.poll() is None:
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
