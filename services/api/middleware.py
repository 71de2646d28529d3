"""What the api does around every request: counts and times it (`/metrics`), and adds the
security headers that keep the dashboard to its own files."""

from __future__ import annotations

import time

from starlette.datastructures import MutableHeaders

from metrics import REQUEST_SECONDS, REQUESTS

# The dashboard runs only its own files: scripts from this server, no inline code, and data
# only from this server. plotly.js adds the style rules of its charts at run time, which CSP
# allows for styles only with 'unsafe-inline' (scripts never get it). Only pages of its own
# address may frame it: a notebook in JupyterLab does, through Jupyter's proxy
# (lab_helpers.dashboard), which serves it from JupyterLab's own address.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "SAMEORIGIN",
}


class HttpMetrics:
    """ASGI middleware: counts and times every request, and adds the security headers.

    Plain ASGI (not BaseHTTPMiddleware) so that a long SSE response streams through
    untouched. The time measured is until the response starts, which for the stream is
    the time to subscribe, not the length of the connection.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        answered = False

        async def send_with_headers(message):
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                route = route_name(scope)
                REQUESTS.labels(route, str(message["status"])).inc()
                REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not answered:  # the app failed before answering: the client gets a 500
                REQUESTS.labels(route_name(scope), "500").inc()


def route_name(scope) -> str:
    """The route's path template (`/api/prices/{asset}`): one label value per endpoint."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
