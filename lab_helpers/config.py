"""All the lab's settings in one place: read from the environment and from `.lab/`.

Precedence, highest first: environment variables (`LAB_*`; for credentials, a role's own
`LAB_INFLUX_<ROLE>_*` before the process's `LAB_INFLUX_USER`), then the files the local
stack writes under `.lab/` (`stack.json` for addresses, `credentials.json` for the
generated InfluxDB users), then defaults. No secret is ever a default: credentials only
come from the environment or from `.lab/credentials.json` (mode 0600, never committed).

Environment variables
---------------------
`LAB_MODE`            `local` (default) or `cluster`
`LAB_DIR`             where local state lives (default: `.lab` in the project folder)
`LAB_DATA_DIR`        the bundled price history and the asset catalogue `assets.yaml`
                        (default: `data` in the project folder)
`LAB_INFLUX_URL`      InfluxDB v1 HTTP API, e.g. `http://127.0.0.1:8086` (the local stack
                        then uses that server instead of starting its own; so for NATS)
`LAB_INFLUX_DB`       database for the prices (default `prices`)
`LAB_INFLUX_USER` / `LAB_INFLUX_PASSWORD`   the identity this process uses
`LAB_INFLUX_<ROLE>_USER` / `..._PASSWORD`  per role: ADMIN, INGEST, READER
`LAB_NATS_URL`        NATS server, e.g. `nats://127.0.0.1:4222`
`LAB_KUBE_CONTEXT`    kube context for `lab_helpers.cluster` (default: the current one)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

MODES = ("local", "cluster")
# The three InfluxDB identities: admin sets up, ingest only writes, reader only reads.
ROLES = ("admin", "ingest", "reader")
DEFAULT_DATABASE = "prices"
SERVICE_PORTS = {"api": 8000, "source": 8001, "ingest": 8002, "stats": 8003}
"""The port each service of the lab listens on when `LAB_PORT` does not say otherwise: the
stack, the images, the manifests and the services' own settings agree on it."""
STACK_FILE = "stack.json"
"""The local stack's record in `.lab/`: each server's address and process."""
CREDENTIALS_FILE = "credentials.json"
"""The InfluxDB users the local stack generated, in `.lab/`."""


def project_root() -> Path:
    """The folder holding `pyproject.toml` of the lab (where `.lab/` and `data/` live)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


def data_dir(env: dict[str, str] | None = None) -> Path:
    """The folder of the price files and the asset catalogue: `LAB_DATA_DIR`, else `data/`
    of the project (cheap: hot paths call it, so it reads no file)."""
    env = os.environ if env is None else env
    return Path(env.get("LAB_DATA_DIR") or project_root() / "data").resolve()


@dataclass(frozen=True)
class Credentials:
    """A user name and password for InfluxDB. The password never shows in `repr`."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class Settings:
    """The lab's configuration. Build it with `load_settings`.

    Attributes: `mode`, `lab_dir`, `data_dir`, `influx_url`, `influx_database`,
    `nats_url` and the InfluxDB credentials per role (see `credentials`).
    """

    mode: str
    lab_dir: Path
    data_dir: Path
    influx_url: str | None
    influx_database: str
    nats_url: str | None
    _credentials: dict[str, Credentials] = field(default_factory=dict, repr=False)

    def credentials(self, role: str = "admin") -> Credentials:
        """The InfluxDB user for `role` (`admin`, `ingest` or `reader`)."""
        if role not in ROLES:
            raise ConfigError(f"unknown InfluxDB role {role!r}: use one of {', '.join(ROLES)}")
        try:
            return self._credentials[role]
        except KeyError:
            raise ConfigError(
                f"no InfluxDB credentials for the {role!r} user: start the local stack with "
                "`python -m lab_helpers.stack up` (it generates them in .lab/credentials.json), "
                f"or set LAB_INFLUX_{role.upper()}_USER and LAB_INFLUX_{role.upper()}_PASSWORD"
            ) from None

    def require_influx_url(self) -> str:
        return _required_url(self.influx_url, "InfluxDB", "LAB_INFLUX_URL")

    def require_nats_url(self) -> str:
        return _required_url(self.nats_url, "NATS", "LAB_NATS_URL")


def _required_url(url: str | None, server: str, variable: str) -> str:
    """`url`, or a `ConfigError` saying how to give the `server`'s address."""
    if not url:
        raise ConfigError(
            f"{server} address unknown: start the local stack with "
            f"`python -m lab_helpers.stack up`, or set {variable}"
        )
    return url


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path}: {err}; delete it and run the stack again") from None


def load_settings(env: dict[str, str] | None = None, lab_dir: Path | str | None = None) -> Settings:
    """Read the settings from the environment and `.lab/` (see the module help).

    `env` defaults to `os.environ`; `lab_dir` overrides `LAB_DIR` (tests use it).
    """
    env = os.environ if env is None else env
    mode = env.get("LAB_MODE", "local").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"LAB_MODE={mode!r} is not valid: use 'local' or 'cluster'")
    root = project_root()
    lab_dir = Path(lab_dir or env.get("LAB_DIR") or root / ".lab").resolve()

    stack = _read_json(lab_dir / STACK_FILE) if mode == "local" else {}
    stored = _read_json(lab_dir / CREDENTIALS_FILE) if mode == "local" else {}

    # A service is given just its own identity (LAB_INFLUX_USER): set explicitly, it wins
    # over the stack's file for every role; a role's own variables win over both.
    own = None
    if env.get("LAB_INFLUX_USER") and env.get("LAB_INFLUX_PASSWORD"):
        own = {"username": env["LAB_INFLUX_USER"], "password": env["LAB_INFLUX_PASSWORD"]}
    creds: dict[str, Credentials] = {}
    for role in ROLES:
        entry = own or stored.get(role) or {}
        user = env.get(f"LAB_INFLUX_{role.upper()}_USER", entry.get("username"))
        password = env.get(f"LAB_INFLUX_{role.upper()}_PASSWORD", entry.get("password"))
        if user and password:
            creds[role] = Credentials(user, password)

    return Settings(
        mode=mode,
        lab_dir=lab_dir,
        data_dir=data_dir(env),
        influx_url=env.get("LAB_INFLUX_URL") or stack.get("influxdb", {}).get("url"),
        influx_database=env.get("LAB_INFLUX_DB", DEFAULT_DATABASE),
        nats_url=env.get("LAB_NATS_URL") or stack.get("nats", {}).get("url"),
        _credentials=creds,
    )


def env_value(
    name: str,
    default,
    cast=str,
    *,
    env: dict[str, str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple | None = None,
):
    """Read one setting of a service from the environment, checked; `ConfigError`
    (one sentence naming the variable) when it is not valid.

    `cast` turns the text into a value (`int`, `float`, `str`, `as_bool`...).
    """
    env = os.environ if env is None else env
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = cast(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={text!r} is not valid: expected {cast.__name__}") from None
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{name}={text!r} is not valid: use one of {', '.join(map(str, choices))}"
        )
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ConfigError(f"{name}={text!r} is out of range: use {minimum} to {maximum}")
    return value


def as_bool(text: str) -> bool:
    """`1/true/yes/on` -> True, `0/false/no/off` -> False (any case)."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


as_bool.__name__ = "a boolean (true/false)"


def number(text: str) -> float:
    """A number (`float`), but never NaN, which every range check would let through."""
    value = float(text)
    if math.isnan(value):
        raise ValueError(text)
    return value


number.__name__ = "a number"


def csv_list(text: str) -> tuple[str, ...]:
    """`"btc, eth"` -> `("btc", "eth")`."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


csv_list.__name__ = "a comma-separated list"
