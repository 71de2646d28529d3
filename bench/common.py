"""What every benchmark shares: results, timing, the machine, and servers of its own.

Every benchmark starts its own InfluxDB and NATS (and, when it needs them, the lab's services)
in a temporary folder on free loopback ports, exactly as the tests do, so it never touches a
learner's `.lab/` and can run next to a running lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import requests

from lab_helpers.influx import InfluxDB
from lab_helpers.stack import SERVERS, AppProcess, LocalStack, find_binary
from lab_helpers.wait import wait_for

SIZES = ("full", "quick", "tiny")
"""`full`: the figures in docs/benchmarks.md; `quick`: smaller, under 2 minutes in all;
`tiny`: just enough to run the code and its correctness checks (the test suite)."""


# ---------------------------------------------------------------------- results


@dataclass
class Figure:
    """One measured number, e.g. `Figure("lab_helpers", 812_000, "points/s")`."""

    label: str
    value: float | int | str
    unit: str = ""
    note: str = ""


@dataclass
class Target:
    """A goal: `measured` must be `>=` (or `<`) `required`."""

    label: str
    measured: float
    required: float
    op: str = ">="
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.op == ">=":
            return self.measured >= self.required
        if self.op == ">":
            return self.measured > self.required
        if self.op == "<":
            return self.measured < self.required
        if self.op == "<=":
            return self.measured <= self.required
        raise ValueError(self.op)


@dataclass
class Check:
    """A correctness condition the run verified (stored counts, identical results ...)."""

    label: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    """What one benchmark measured: figures, targets, correctness checks and notes."""

    name: str
    title: str
    size: str = "full"
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (title, preformatted text)
    seconds: float = 0.0
    error: str | None = None

    def figure(self, label: str, value, unit: str = "", note: str = "") -> None:
        self.figures.append(Figure(label, value, unit, note))
        print(f"  {label}: {fmt(value, unit)}{f'  ({note})' if note else ''}", flush=True)

    def median_time(self, label: str, seconds: list[float], digits: int = 2) -> None:
        """The median of repeated runs as a figure, every run in its note."""
        runs = ", ".join(f"{t:.{digits}f}" for t in seconds)
        self.figure(f"{label}: median time", median(seconds), "s", f"runs: {runs}")

    def target(self, label: str, measured: float, required: float, op: str = ">=", unit=""):
        t = Target(label, float(measured), float(required), op, unit)
        self.targets.append(t)
        verdict = "met" if t.met else "NOT met"
        print(
            f"  target {label}: {fmt(measured, unit)} {op} {fmt(required, unit)}: {verdict}",
            flush=True,
        )

    def check(self, label: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(label, bool(ok), detail))
        print(f"  check {label}: {'ok' if ok else 'FAILED'} {detail}", flush=True)
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict:
        out = asdict(self)
        for t, d in zip(self.targets, out["targets"]):
            d["met"] = t.met
        return out


def fmt(value, unit: str = "") -> str:
    """A number for people: thousands separators, sensible decimals, then the unit."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "" and isinstance(value, float) and value.is_integer():
        value = int(value)  # a count
    if unit == "x":  # ratios: enough digits to tell 1.203 from 1.2
        return (f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}") + "×"
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 1000):
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


# ---------------------------------------------------------------------- timing


def median(values) -> float:
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    """The `q` percentile (0-100) by linear interpolation, like `numpy.percentile`."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (10^6 bytes; `VmRSS` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6  # the kernel's "kB" are KiB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_idle(pid: int, *, below: float = 0.05, window: float = 0.3, timeout: float = 15.0):
    """Wait until a server uses less than `below` of a core over `window` seconds (it
    finished compacting or flushing), so it does not slow down the next measurement."""

    def idle() -> bool:
        before = cpu_seconds(pid)
        time.sleep(window)
        return cpu_seconds(pid) - before < below * window

    wait_for(idle, timeout, every=0, error=None)


# ---------------------------------------------------------------------- the machine


def _command_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    """CPU, cores, RAM, OS, the versions that matter, the date, and how busy the machine was."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} (Linux {platform.release()})"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": os_name,
        "python": platform.python_version(),
        "pandas": _package("pandas"),
        "numpy": _package("numpy"),
        "requests": _package("requests"),
        "nats-py": _package("nats-py"),
        "influxdb (python)": _package("influxdb"),
        "influxd": _command_version([find_binary("influxd"), "version"]),
        "nats-server": _command_version([find_binary("nats-server"), "--version"]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------- servers of its own


@contextlib.contextmanager
def bench_stack(name: str) -> Iterator[LocalStack]:
    """InfluxDB and NATS in a temporary folder on free ports; stopped and deleted at the end."""
    lab_dir = Path(tempfile.mkdtemp(prefix=f"lab-bench-{name}-"))
    stack = LocalStack(lab_dir, services=SERVERS)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(lab_dir, ignore_errors=True)


def server_pid(stack: LocalStack, name: str) -> int:
    """The pid of a server of the stack (`influxdb` or `nats`)."""
    return json.loads(stack.state_file.read_text())[name]["pid"]


def admin(stack: LocalStack, database: str | None = None) -> InfluxDB:
    """An admin client of the stack's InfluxDB."""
    return InfluxDB.connect("admin", settings=stack.settings, database=database)


@contextlib.contextmanager
def run_service(
    stack: LocalStack,
    name: str,
    env: dict[str, str] | None = None,
    *,
    ready: bool = True,
    timeout: float = 60,
) -> Iterator[AppProcess]:
    """A service for the duration of a `with`: started, up (`/readyz`, or `/healthz`
    with `ready=False`), and stopped with SIGTERM at the end."""
    service = start_service(stack, name, env)
    try:
        service.wait_up(ready=ready, timeout=timeout)
        yield service
    finally:
        service.stop()


def stored_so_far(worker: AppProcess) -> int:
    """Ticks an ingest worker has stored (0 while it does not answer yet). A benchmark's ticks
    are all valid: one quarantined means the generator broke a rule, so stop at once, saying
    which, rather than wait for a count that cannot be reached."""
    try:
        stats = worker.stats()
    except requests.RequestException:
        return 0
    if stats.get("quarantined_total"):
        reasons = ", ".join(f"{n:,} {why}" for why, n in stats["quarantined"].items())
        raise RuntimeError(f"the ingest worker quarantined ticks the benchmark made: {reasons}")
    return stats["stored"]


def start_service(stack: LocalStack, name: str, env: dict[str, str] | None = None) -> AppProcess:
    """Start `services/<name>/main.py` as the stack (and its container image) runs it, with
    warnings only in its log, plus `env`; does not wait (see `AppProcess.wait_up`)."""
    return stack.start_app(name, {"LOG_LEVEL": "warning", **(env or {})}, label="bench")
