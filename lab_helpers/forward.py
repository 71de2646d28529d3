"""Reach a Service of the cluster from this machine: `kubectl port-forward`, in the background.

`kubectl port-forward svc/api 8000:8000` runs until it is stopped, which would block a
notebook cell. `port_forward` runs that same command as a background process and returns
once kubectl says it listens, so a program (a notebook cell, a test) can use the address:

    from lab_helpers.forward import port_forward

    with port_forward("svc/api", 8000, "crypto-lab") as api:
        requests.get(api.url + "/api/assets").json()

kubectl picks the pod behind the Service once, when it starts: after that pod is replaced
(deleted, rolled out), open a new forward.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import deque
from pathlib import Path

from .cluster import DEFAULT_NAMESPACE, ClusterError
from .commands import find_tool, tool_path
from .stack import stop_process
from .wait import wait_for

LISTENING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


def command(
    target: str,
    remote_port: int,
    namespace: str = DEFAULT_NAMESPACE,
    local_port: int = 0,
    context: str | None = None,
) -> list[str]:
    """The `kubectl port-forward` command line (`local_port=0`: kubectl picks a free one)."""
    args = ["kubectl", "port-forward", "--namespace", namespace, target]
    args.append(f"{local_port or ''}:{remote_port}")
    if context:
        args += ["--context", context]
    return args


class PortForward:
    """A running `kubectl port-forward`: `url` (`http://127.0.0.1:<port>`), `port`,
    `close`; a context manager. `log` keeps kubectl's last lines."""

    def __init__(self, args: list[str], timeout: float = 30.0, log_file: Path | None = None):
        self.args = args
        self.log: deque[str] = deque(maxlen=50)
        argv = [find_tool("kubectl"), *args[1:]]
        self.process: subprocess.Popen
        if log_file is not None:
            # Outlives this Python process (make cluster): kubectl writes to a file.
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(log_file, "w") as out:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env={**os.environ, "PATH": tool_path()}, start_new_session=True,
                )  # fmt: skip
            self.port = self._wait_in_file(log_file, timeout)
        else:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env={**os.environ, "PATH": tool_path()},
            )  # fmt: skip
            self.port = self._wait_in_pipe(timeout)
        self.url = f"http://127.0.0.1:{self.port}"

    def _failed(self) -> ClusterError:
        last = next((line for line in reversed(self.log) if line.strip()), "no output")
        return ClusterError(f"`{' '.join(self.args)}` stopped: {last.strip()}")

    def _not_listening(self, timeout: float) -> ClusterError:
        command = " ".join(self.args)
        return ClusterError(f"`{command}` did not start listening within {timeout:.0f} s")

    def _wait_in_pipe(self, timeout: float) -> int:
        found: list[int] = []
        ready = threading.Event()
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def read() -> None:
            for line in stdout:
                self.log.append(line)
                match = LISTENING.search(line)
                if match and not found:
                    found.append(int(match.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True, name="kubectl port-forward").start()
        if not ready.wait(timeout) or not found:
            self.close()
            raise self._failed() if self.log else self._not_listening(timeout)
        return found[0]

    def _wait_in_file(self, log_file: Path, timeout: float) -> int:
        def port_in_log() -> int | None:
            text = log_file.read_text(errors="replace")
            self.log.extend(text.splitlines()[-50:])
            match = LISTENING.search(text)
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise self._failed()
            return None

        port = wait_for(port_in_log, timeout, every=0.2, error=None)
        if port is None:
            self.close()
            raise self._not_listening(timeout)
        return port

    @property
    def active(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Stop kubectl."""
        stop_process(self.process, timeout=10)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PortForward {self.url} ({'running' if self.active else 'stopped'})>"


def port_forward(
    target: str,
    remote_port: int,
    namespace: str = DEFAULT_NAMESPACE,
    local_port: int = 0,
    *,
    context: str | None = None,
    timeout: float = 30.0,
) -> PortForward:
    """Run `kubectl port-forward` in the background until it listens; see the module help.

    `target` is what kubectl takes: `svc/api`, `pod/influxdb-0`, `deployment/api`.
    """
    args = command(target, remote_port, namespace, local_port, context)
    print("$ " + " ".join(args) + "    # in the background")
    forward = PortForward(args, timeout)
    print(f"forwarding {forward.url} -> {target}:{remote_port} in {namespace}")
    return forward
