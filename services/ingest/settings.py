"""The ingest service's settings, read once from environment variables.

The same names in every service: `Settings` and `read_settings(env)`. The variables and their
meaning are listed in `services/ingest/README.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab_helpers import broker
from lab_helpers.config import SERVICE_PORTS, Credentials, env_value, load_settings, number
from lab_helpers.ingest import DEFAULT_BATCH, DEFAULT_MEMORY

SERVICE = "ingest"
DEFAULT_PORT = SERVICE_PORTS[SERVICE]
DEFAULT_MAX_WAIT = 0.2
"""Seconds a fetch waits for messages (`INGEST_MAX_WAIT`)."""
DEFAULT_DURABLE = broker.INGEST_DURABLE
"""The JetStream consumer that every replica shares (`INGEST_DURABLE`)."""
DEFAULT_ACK_WAIT = 30.0
"""Seconds before JetStream delivers an unacknowledged message again (`INGEST_ACK_WAIT`)."""
DEFAULT_MAX_DELIVER = 5
"""Deliveries after which a message is quarantined as "poison" instead of tried again."""
DEFAULT_STALL = 60.0
"""Seconds without progress (messages waiting, none acknowledged, InfluxDB and NATS fine)
after which `/healthz` fails, so that Kubernetes restarts a stuck worker."""


@dataclass(frozen=True)
class Settings:
    """What the ingest service needs to know (`read_settings` reads it).

    - `nats_url`, `influx_url`, `database`: where to read and write (`LAB_*`);
    - `credentials`: its InfluxDB identity, the write-only `ingest` user;
    - `batch`, `max_wait`: messages per fetch and how long a fetch waits (`INGEST_BATCH`,
      `INGEST_MAX_WAIT`);
    - `durable`, `ack_wait`: the shared consumer and its redelivery delay (`INGEST_DURABLE`,
      `INGEST_ACK_WAIT`);
    - `memory`: stored ticks remembered to find duplicates (`INGEST_DEDUP_SIZE`);
    - `max_deliver`, `stall_after`: when a message is poison, when the worker is stuck
      (`INGEST_MAX_DELIVER`, `INGEST_STALL_SECONDS`).
    """

    nats_url: str
    influx_url: str
    database: str
    credentials: Credentials
    batch: int
    max_wait: float
    durable: str
    ack_wait: float
    memory: int
    max_deliver: int
    stall_after: float


def durable_name(text: str) -> str:
    """A JetStream consumer name: letters, digits, `-` and `_` (dots would split it)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ValueError(text)
    return text


durable_name.__name__ = "a name of letters, digits, - and _"


def read_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and check every setting from `env` (default: the environment); a `ConfigError`
    (one sentence naming the variable) for the first bad one."""
    lab = load_settings(env)
    return Settings(
        nats_url=lab.require_nats_url(),
        influx_url=lab.require_influx_url(),
        database=lab.influx_database,
        # LAB_INFLUX_USER (the image's own identity), else the stack's ingest user.
        credentials=lab.credentials(SERVICE),
        batch=env_value("INGEST_BATCH", DEFAULT_BATCH, int, env=env, minimum=1, maximum=10_000),
        max_wait=env_value(
            "INGEST_MAX_WAIT", DEFAULT_MAX_WAIT, number, env=env, minimum=0.01, maximum=30
        ),
        durable=env_value("INGEST_DURABLE", DEFAULT_DURABLE, durable_name, env=env),
        ack_wait=env_value(
            "INGEST_ACK_WAIT", DEFAULT_ACK_WAIT, number, env=env, minimum=1, maximum=3600
        ),
        memory=env_value(
            "INGEST_DEDUP_SIZE", DEFAULT_MEMORY, int, env=env, minimum=0, maximum=10_000_000
        ),
        max_deliver=env_value(
            "INGEST_MAX_DELIVER", DEFAULT_MAX_DELIVER, int, env=env, minimum=2, maximum=1000
        ),
        stall_after=env_value(
            "INGEST_STALL_SECONDS", DEFAULT_STALL, number, env=env, minimum=1, maximum=86_400
        ),
    )
