"""The message broker: NATS JetStream subjects, the tick stream, and the tick wire format.

Ticks travel as small JSON objects, one per message:

    {"asset": "btc", "price": 63000.5, "time": "2021-04-14T06:13:00Z", "source": "replay", "seq": 7}

- `ticks.<asset>` (JetStream stream `TICKS`, file storage): every tick the source emits,
  good or bad; `ticks.<asset>.history` the history it sends first (the backfill). The
  stream keeps the messages, acknowledged or not, up to `STREAM_MAX_BYTES` (the
  oldest go first), so a worker that restarts loses nothing and a source can see how far it
  got. A `Nats-Msg-Id` header lets JetStream drop a message published twice within
  `DUPLICATE_WINDOW` (a source that restarts).
- `clean.<asset>` (plain NATS, no storage): each tick once it is cleaned and stored in
  InfluxDB; the api pushes these to browsers live.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

STREAM = "TICKS"
TICK_PREFIX = "ticks"
CLEAN_PREFIX = "clean"
DUPLICATE_WINDOW = 120.0  # seconds: JetStream drops a repeated Nats-Msg-Id within this window
MAX_MESSAGE_BYTES = 64 * 1024  # a tick is ~100 bytes; anything this large is not a tick
STREAM_MAX_BYTES = 512 * 1024 * 1024  # cap the stream's disk use on a learner's machine
INGEST_DURABLE = "ingest"
"""The durable JetStream consumer the ingest workers share, unless `INGEST_DURABLE` names
another (see `ingest_durable`)."""


def ingest_durable(env: Mapping[str, str] | None = None) -> str:
    """The name of the ingest workers' shared consumer: `INGEST_DURABLE` from `env` (default:
    this process's environment), else `INGEST_DURABLE`'s default, `ingest`."""
    return (os.environ if env is None else env).get("INGEST_DURABLE") or INGEST_DURABLE


_TOKEN = re.compile(r"[^a-z0-9_-]")

log = logging.getLogger(__name__)


def subject(prefix: str, asset: Any) -> str:
    """The subject for an asset, e.g. `subject("ticks", "BTC") == "ticks.btc"`.

    Any text becomes a valid single subject token (a bad asset name must still travel to
    the ingest worker, which quarantines it), so dots, spaces and wildcards are replaced.
    """
    token = _TOKEN.sub("_", str(asset).strip().lower())[:64] or "_"
    return f"{prefix}.{token}"


def history_subject(asset: Any) -> str:
    """The subject of an asset's backfilled history, `ticks.<asset>.history`: apart from
    its live ticks, so that a source can ask JetStream how far the history was sent."""
    return subject(TICK_PREFIX, asset) + ".history"


# One encoder for every message: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def encode(tick: dict) -> bytes:
    """A tick as JSON bytes. NaN and infinity are allowed: the source sends them on purpose."""
    return _ENCODER.encode(tick).encode()


# Why decode() refuses a message: it is not a tick at all. The quarantine records the reason.
TOO_LARGE = "message too large"
NOT_UTF8 = "not UTF-8"
INVALID_JSON = "invalid JSON"
TOO_DEEP = "JSON nested too deeply"
NOT_AN_OBJECT = "not a JSON object"
UNDECODABLE = "undecodable"
DECODE_REASONS = (TOO_LARGE, NOT_UTF8, INVALID_JSON, TOO_DEEP, NOT_AN_OBJECT, UNDECODABLE)
"""Every reason `decode` gives (`undecodable`: any other failure while decoding)."""


class BadMessage(ValueError):
    """A message that is not a tick at all; `reason` is what the quarantine records."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode(data: bytes) -> dict:
    """Parse one message into a dict, or raise `BadMessage` with the reason (one of
    `DECODE_REASONS`). Never raises anything else: whatever goes wrong while decoding
    one message concerns that message alone.

    A byte order mark in front of the JSON text is ignored (RFC 8259 allows a parser to).
    """
    try:
        if len(data) > MAX_MESSAGE_BYTES:
            raise BadMessage(TOO_LARGE)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadMessage(NOT_UTF8) from None
        try:
            value = json.loads(text)
        except RecursionError:  # thousands of nested [ or {: valid JSON, but not a tick
            raise BadMessage(TOO_DEEP) from None
        except ValueError:  # not JSON, or a number too long for Python to read
            raise BadMessage(INVALID_JSON) from None
        if not isinstance(value, dict):
            raise BadMessage(NOT_AN_OBJECT)
        return value
    except BadMessage:
        raise
    except Exception as err:  # anything unforeseen (bytes-like objects of odd types...)
        log.warning("a message could not be decoded: %r", err)
        raise BadMessage(UNDECODABLE) from None


def is_number(value: Any) -> bool:
    """True for a finite int or float (not bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


async def connect(url: str, name: str, **kw) -> nats.NATS:
    """Connect to NATS and keep reconnecting forever (a broker restart is not fatal)."""

    async def on_error(err):
        log.warning("nats error: %s", err)

    client: list[nats.NATS] = []  # filled below, so the callbacks can tell a close from a loss

    async def on_disconnect():
        if client and (client[0].is_closed or client[0].is_draining):
            log.info("disconnected from NATS (closing)")
        else:
            log.warning("disconnected from NATS; reconnecting")

    async def on_reconnect():
        log.info("reconnected to NATS")

    nc = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        **kw,
    )
    client.append(nc)
    return nc


async def ensure_stream(js) -> None:
    """Create the `TICKS` stream if it does not exist (idempotent)."""
    config = StreamConfig(
        name=STREAM,
        subjects=[f"{TICK_PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_bytes=STREAM_MAX_BYTES,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
