"""The live stream: one NATS subscription to `clean.>`, fanned out to every open
`/api/stream` connection as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field

from lab_helpers import broker
from lab_helpers.service import log_fields

from metrics import STREAM_BAD, STREAM_CLIENTS, STREAM_DROPPED, STREAM_TICKS


@dataclass(eq=False)
class StreamClient:
    """One open `/api/stream` connection: its asset filter and its bounded queue."""

    assets: frozenset[str] | None
    queue: asyncio.Queue
    closed: bool = False

    def wants(self, asset: str) -> bool:
        return self.assets is None or asset in self.assets


@dataclass(eq=False)
class TickHub:
    """One NATS subscription to `clean.>` shared by every stream client (fan-out).

    Each client has a bounded queue. A client whose queue is full is too slow: it is
    disconnected (its browser reconnects by itself) instead of holding memory or slowing
    the others down.
    """

    service: str  # the service's name: of its NATS connection and its logger
    nats_url: str
    queue_size: int
    heartbeat: float
    clients: set[StreamClient] = field(default_factory=set)
    nc: object | None = None
    _task: asyncio.Task | None = None
    _closing: bool = False

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(self.service)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def start(self) -> None:
        """Connect and subscribe in the background: the REST endpoints work without NATS."""
        self._task = asyncio.create_task(self._subscribe())

    async def _subscribe(self) -> None:
        # broker.connect keeps retrying until the server answers, and then reconnects and
        # re-subscribes by itself after any outage.
        self.nc = await broker.connect(self.nats_url, name=self.service)
        await self.nc.subscribe(f"{broker.CLEAN_PREFIX}.>", cb=self._on_message)
        self.log.info("subscribed to clean ticks", extra=log_fields(nats=self.nats_url))

    async def _on_message(self, msg) -> None:
        asset = msg.subject.partition(".")[2]
        try:
            tick = broker.decode(msg.data)
            # Re-encoded: one line (SSE data cannot hold a newline) and no NaN (not JSON).
            data = json.dumps(tick, separators=(",", ":"), allow_nan=False).encode()
        except ValueError as err:  # BadMessage is a ValueError too
            STREAM_BAD.inc()
            self.log.debug("skipped a message on %s: %s", msg.subject, err)
            return
        STREAM_TICKS.inc()
        for client in list(self.clients):
            if client.wants(asset):
                try:
                    client.queue.put_nowait(data)
                except asyncio.QueueFull:
                    self._drop(client)

    def _drop(self, client: StreamClient) -> None:
        STREAM_DROPPED.inc()
        self.log.warning("dropped a stream client that did not keep up")
        self._close_client(client)

    def _close_client(self, client: StreamClient) -> None:
        client.closed = True
        self.clients.discard(client)
        with suppress(asyncio.QueueFull):
            client.queue.put_nowait(None)  # wakes the client's loop; if full, it is awake

    async def events(self, assets: frozenset[str] | None) -> AsyncIterator[bytes]:
        """The SSE byte stream of one client: ticks, and a comment line as a heartbeat."""
        client = StreamClient(assets, asyncio.Queue(maxsize=self.queue_size))
        if self._closing:
            return
        self.clients.add(client)
        STREAM_CLIENTS.inc()
        try:
            # `retry`: how long a browser waits before it reconnects. The comment tells a
            # client that it is subscribed.
            yield b"retry: 3000\n: connected\n\n"
            while not client.closed:
                try:
                    data = await asyncio.wait_for(client.queue.get(), timeout=self.heartbeat)
                except TimeoutError:
                    # Keeps proxies from closing an idle connection, and finds dead clients.
                    yield b": heartbeat\n\n"
                    continue
                if data is None or client.closed:
                    break
                yield b"event: tick\ndata: " + data + b"\n\n"
        finally:
            self.clients.discard(client)
            STREAM_CLIENTS.dec()

    def close_streams(self) -> None:
        """End every open stream (on shutdown); new ones end at once."""
        self._closing = True
        for client in list(self.clients):
            self._close_client(client)

    async def stop(self) -> None:
        """Close the streams and the NATS connection."""
        self.close_streams()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.nc is not None and not self.nc.is_closed:
            with suppress(Exception):  # already gone: nothing left to close
                await asyncio.wait_for(self.nc.close(), timeout=2)


def close_streams_on_signal(hub: TickHub) -> None:
    """End the SSE streams as soon as SIGTERM or SIGINT arrives.

    uvicorn waits for every open response to finish before it runs the app's shutdown, and
    an SSE stream never finishes by itself; so the streams are closed from the signal
    handler, and then uvicorn's own handler runs as before. Call this during startup, once
    uvicorn has installed its handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # an in-process test client: no process signal to catch, none may be set
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(hub.close_streams)
            previous(signum, frame)

        signal.signal(sig, handler)
