"""The api's Prometheus metrics, served at `/metrics`: requests, and the live stream."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "api_requests_total", "HTTP requests answered", ["route", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "api_request_seconds",
    "Time from receiving a request to starting the response",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
STREAM_CLIENTS = Gauge("api_stream_clients", "Open /api/stream connections", registry=REGISTRY)
STREAM_TICKS = Counter(
    "api_stream_ticks_total", "Ticks received on clean.> for the live stream", registry=REGISTRY
)
STREAM_DROPPED = Counter(
    "api_stream_dropped_clients_total",
    "Stream clients disconnected because they did not keep up",
    registry=REGISTRY,
)
STREAM_BAD = Counter(
    "api_stream_bad_messages_total",
    "Messages on clean.> that were not a JSON tick (skipped)",
    registry=REGISTRY,
)
