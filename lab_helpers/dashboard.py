"""The lab's web dashboard, wherever the notebook runs: its address, the dashboard inside a
notebook, and the "Price dashboard" tile of JupyterLab's launcher.

From a notebook:

    from lab_helpers import dashboard
    dashboard.url()     # the address to open in your browser
    dashboard.show()    # the dashboard inside the notebook (JupyterLab), with its link

The dashboard is a page of the `api` service, which the local stack runs on port 8000 (or
on a free port when 8000 is taken: the address always names the port it really uses). How
your browser reaches it depends on where the lab runs:

- **on your machine**: `http://127.0.0.1:PORT/`;
- **on Binder or any JupyterHub** (`JUPYTERHUB_SERVICE_PREFIX` is set): the api is only
  reachable inside the session's container, so the address goes through Jupyter's own proxy
  (`jupyter-server-proxy`): `/user/NAME/proxy/PORT/` on the hub's host;
- **in GitHub Codespaces** (`CODESPACE_NAME`): the forwarded port,
  `https://NAME-PORT.app.github.dev/`.

Inside JupyterLab, the inline view always goes through Jupyter's proxy, `/proxy/PORT/`: the
page then comes from JupyterLab's own address, the only one the dashboard lets frame it. For
the same reason the dashboard uses relative addresses only (`api/assets`, not
`/api/assets`): it works at `/`, at `/proxy/PORT/` and at `/user/NAME/proxy/PORT/`.
Its address must end with `/`.

Command line:

    python -m lab_helpers.dashboard                 # print the dashboard's address
    python -m lab_helpers.dashboard tile --port N   # the launcher tile's server (Jupyter runs it)
"""

from __future__ import annotations

import html
import os
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .errors import LabError, StackError, command_line

ICON = Path(__file__).with_name("dashboard.svg")
TITLE = "Price dashboard"
# The name of the jupyter-server-proxy entry: the tile opens {base_url}dashboard/.
PROXY_NAME = "dashboard"


def api_port(lab_dir: Path | str | None = None) -> int:
    """The port the local stack's `api` service listens on (it serves the dashboard).

    Raises `StackError` with what to do when it is not running.
    """
    from .stack import LocalStack

    for status in LocalStack(lab_dir, services=["api"]).status():
        if status.name == "api" and status.healthy:
            return urlsplit(status.url).port
    raise StackError(
        "the api service (which serves the dashboard) is not running: start the local stack "
        "with `LocalStack().up()` in a notebook, or `make stack-up` in a terminal"
    )


def where(env: Mapping[str, str] | None = None) -> str:
    """Where this Python runs, as far as the dashboard's address is concerned:
    `"jupyterhub"` (Binder included), `"codespaces"` or `"local"`."""
    env = os.environ if env is None else env
    if env.get("JUPYTERHUB_SERVICE_PREFIX"):
        return "jupyterhub"
    if env.get("CODESPACE_NAME"):
        return "codespaces"
    return "local"


def _hub_prefix(env: Mapping[str, str]) -> str:
    prefix = env["JUPYTERHUB_SERVICE_PREFIX"]
    return prefix if prefix.endswith("/") else prefix + "/"


def url(port: int | None = None, *, env: Mapping[str, str] | None = None) -> str:
    """The dashboard's address for your browser, from where the lab runs (see the module help).

    `port` is the api's port on this machine (default: where the local stack runs it).
    On Binder or JupyterHub the address is a path on the hub's host (`/user/NAME/proxy/PORT/`):
    a link to it works from any notebook or page of the session.
    """
    env = os.environ if env is None else env
    port = api_port() if port is None else port
    place = where(env)
    if place == "jupyterhub":
        return f"{_hub_prefix(env)}proxy/{port}/"
    if place == "codespaces":
        domain = env.get("GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN", "app.github.dev")
        return f"https://{env['CODESPACE_NAME']}-{port}.{domain}/"
    return f"http://127.0.0.1:{port}/"


def jupyter_server(pid: int | None = None) -> dict | None:
    """The running Jupyter server whose process is `pid` (default: this kernel's parent,
    i.e. the server that started this kernel), as Jupyter records it (`url`, `base_url`,
    ...); `None` outside one (a script, papermill, VS Code) or without the proxy extension."""
    try:
        import jupyter_server_proxy  # noqa: F401  the /proxy/PORT/ routes
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    pid = os.getppid() if pid is None else pid
    return next((s for s in list_running_servers() if s.get("pid") == pid), None)


def inline_url(port: int | None = None, *, env: Mapping[str, str] | None = None) -> str | None:
    """The address a notebook frames the dashboard from: through the Jupyter server that runs
    this kernel (`{base_url}proxy/PORT/`), or `None` when no Jupyter server runs it (the
    dashboard only lets pages of its own address frame it)."""
    env = os.environ if env is None else env
    port = api_port() if port is None else port
    if where(env) == "jupyterhub":
        return url(port, env=env)
    server = jupyter_server()
    if server is None:
        return None
    base = server.get("base_url") or "/"
    return f"{base if base.endswith('/') else base + '/'}proxy/{port}/"


class Dashboard:
    """The dashboard as a notebook output: the page itself (in JupyterLab) and its link.

    Made by `show`. As text (a terminal, a log) it is the link alone.
    """

    def __init__(self, link: str, frame: str | None, height: int):
        self.link, self.frame, self.height = link, frame, height

    def __repr__(self) -> str:
        return f"dashboard: {self.link}"

    def _repr_html_(self) -> str:
        link = html.escape(self.link, quote=True)
        parts = []
        if self.frame:
            parts.append(
                f'<iframe src="{html.escape(self.frame, quote=True)}" title="{TITLE}" '
                f'width="100%" height="{self.height}" style="border: 1px solid #d9d9d9; '
                'border-radius: 4px"></iframe>'
            )
            note = "it opens in a tab of its own"
        else:
            note = "open it in your browser; in JupyterLab it also shows right here"
        parts.append(
            f'<p>Dashboard: <a href="{link}" target="_blank" rel="noopener">{link}</a> ({note})</p>'
        )
        return "\n".join(parts)


def show(port: int | None = None, *, height: int = 640) -> Dashboard:
    """The live dashboard inside the notebook, with its link (see `url`).

    In JupyterLab (on your machine, Binder, JupyterHub or Codespaces) the page shows in the
    cell's output, `height` pixels high, and updates itself as ticks arrive; elsewhere (a
    headless run, VS Code) only the link shows.
    """
    if not isinstance(height, int) or not 100 <= height <= 5000:
        raise LabError(f"height={height!r} is not valid: use a number of pixels, 100 to 5000")
    port = api_port() if port is None else port
    return Dashboard(url(port), inline_url(port), height)


# -- the launcher tile -----------------------------------------------------------------------


def server_proxy() -> dict:
    """The `jupyter-server-proxy` entry of the dashboard (registered in `pyproject.toml`):
    a launcher tile "Price dashboard" that opens `{base_url}dashboard/`.

    The api normally runs already (`make lab` and Binder start the stack), maybe not on port
    8000, and it may stop and start again on another port while Jupyter runs. So the tile does
    not start an api of its own: Jupyter starts `serve_tile`, a tiny server that sends
    the browser on to `{base_url}proxy/PORT/` with the port the api has right now, and
    starts the stack first if it is not running.
    """
    return {
        "command": [sys.executable, "-m", "lab_helpers.dashboard", "tile", "--port", "{port}"],
        "timeout": 30,
        "launcher_entry": {"title": TITLE, "icon_path": str(ICON)},
    }


def _tile_page(title: str, text: str, refresh: bool) -> bytes:
    meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f'<title>{TITLE}</title></head><body style="font-family: sans-serif; margin: 2em">'
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    ).encode()


class _Starter:
    """Starts the local stack once, in the background, and remembers how it went."""

    def __init__(self, lab_dir: Path | str | None):
        self.lab_dir = lab_dir
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self.error = None
                self._thread = threading.Thread(target=self._up, daemon=True)
                self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _up(self) -> None:
        from .stack import LocalStack

        try:
            LocalStack(self.lab_dir).up()
        except LabError as err:
            self.error = str(err)


def serve_tile(port: int, lab_dir: Path | str | None = None) -> None:
    """Answer on `127.0.0.1:port` until stopped: `GET /` redirects to the api through
    Jupyter's proxy (`../proxy/PORT/`, relative, so it works under any base URL); while the
    stack starts, a page that reloads itself; if it cannot start, the reason."""
    starter = _Starter(lab_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            if urlsplit(self.path).path != "/":
                return self._answer(404, _tile_page("Not here", "The dashboard is at ./", False))
            try:
                target = api_port(lab_dir)
            except StackError:
                target = None
            if target is not None:
                self.send_response(307)
                self.send_header("Location", f"../proxy/{target}/")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                return None
            if not starter.busy and starter.error:
                text = f"The lab's services could not start: {starter.error}"
                return self._answer(503, _tile_page("The dashboard is not running", text, False))
            starter.start()
            text = "Starting the lab's services (InfluxDB, NATS, ingest, api, source)…"
            return self._answer(503, _tile_page("One moment", text, True))

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (the http.server API)
            pass  # Jupyter's own log already shows the proxied requests

    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


@command_line
def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m lab_helpers.dashboard [tile --port N]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.dashboard", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    tile = sub.add_parser("tile", help="the launcher tile's server (started by Jupyter)")
    tile.add_argument("--port", type=int, required=True)
    tile.add_argument("--lab-dir", help="where the local state lives (default .lab/)")
    args = parser.parse_args(argv)
    if args.command == "tile":
        serve_tile(args.port, args.lab_dir)
        return 0
    print(url())
    return 0


if __name__ == "__main__":
    sys.exit(main())
