"""The api's settings, read once from environment variables.

The same names in every service: `Settings` and `read_settings(env)`. The variables and their
meaning are listed in `services/api/README.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab_helpers.config import (
    SERVICE_PORTS,
    ConfigError,
    Credentials,
    csv_list,
    env_value,
    load_settings,
    number,
)

SERVICE = "api"
DEFAULT_PORT = SERVICE_PORTS[SERVICE]
ROLE = "reader"
"""Its InfluxDB identity: the read-only user."""

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


@dataclass(frozen=True)
class Settings:
    """What the api needs to know (`read_settings` reads it).

    - `nats_url`, `influx_url`, `database`: where the ticks and the prices are (`LAB_*`);
    - `credentials`: its InfluxDB identity, the read-only `reader` user;
    - `cors_origins`: the web pages of other addresses that may call it (`API_CORS_ORIGINS`);
    - `max_points`: the most points one answer holds (`API_MAX_POINTS`);
    - `stream_queue`, `heartbeat`: ticks a slow stream client may fall behind before it is
      dropped, and the seconds between keep-alive lines (`API_STREAM_QUEUE`,
      `API_STREAM_HEARTBEAT`).
    """

    nats_url: str
    influx_url: str
    database: str
    credentials: Credentials
    cors_origins: tuple[str, ...] = ()
    max_points: int = 10_000
    stream_queue: int = 1_000
    heartbeat: float = 15.0


def read_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and check every setting from `env` (default: the environment); a `ConfigError`
    (one sentence naming the variable) for the first bad one."""
    lab = load_settings(env)
    influx_url = lab.require_influx_url()
    origins = env_value("API_CORS_ORIGINS", (), csv_list, env=env)
    for origin in origins:
        # "*" would let every web page read the api from a visitor's browser: origins are
        # listed one by one, and an origin is a scheme and a host, without a path.
        if not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"API_CORS_ORIGINS entry {origin!r} is not valid: list origins such as "
                "https://lab.example.org,http://localhost:3000 (no '*', no path)"
            )
    # The defaults are the dataclass's own (Settings.max_points ...): one home each.
    return Settings(
        nats_url=lab.require_nats_url(),
        influx_url=influx_url,
        database=lab.influx_database,
        credentials=lab.credentials(ROLE),
        cors_origins=origins,
        max_points=env_value(
            "API_MAX_POINTS", Settings.max_points, int, env=env, minimum=1, maximum=100_000
        ),
        stream_queue=env_value(
            "API_STREAM_QUEUE", Settings.stream_queue, int, env=env, minimum=1, maximum=100_000
        ),
        heartbeat=env_value(
            "API_STREAM_HEARTBEAT", Settings.heartbeat, number, env=env, minimum=0.1, maximum=300
        ),
    )
