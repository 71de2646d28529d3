"""lab_helpers.dashboard: the dashboard's address wherever the lab runs, the notebook output
that shows it, and the launcher tile's server. (The page itself, inline in JupyterLab and
through the tile, is driven in a browser by tests/test_jupyterlab.py and tests/test_binder.py.)
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time

import pytest
import requests

from lab_helpers import dashboard
from lab_helpers.errors import LabError, StackError
from lab_helpers.stack import LocalStack, free_port
from lab_helpers.wait import wait_for

from .conftest import require_servers

HUB = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada-lovelace-x1y2/"}
CODESPACE = {
    "CODESPACES": "true",
    "CODESPACE_NAME": "fuzzy-lamp-7x9",
    "GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN": "app.github.dev",
}


def test_the_address_depends_on_where_the_lab_runs():
    assert dashboard.url(8000, env={}) == "http://127.0.0.1:8000/"
    assert dashboard.url(8017, env={}) == "http://127.0.0.1:8017/"  # 8000 was taken
    assert dashboard.url(8000, env=HUB) == "/user/ada-lovelace-x1y2/proxy/8000/"
    no_slash = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada"}
    assert dashboard.url(8000, env=no_slash) == "/user/ada/proxy/8000/"
    assert dashboard.url(8000, env=CODESPACE) == "https://fuzzy-lamp-7x9-8000.app.github.dev/"
    other_domain = {"CODESPACE_NAME": "x", "GITHUB_CODESPACES_PORT_FORWARDING_DOMAIN": "gh.io"}
    assert dashboard.url(8001, env=other_domain) == "https://x-8001.gh.io/"
    # A JupyterHub inside a codespace: the hub's proxy is what the browser reaches.
    assert dashboard.url(8000, env=HUB | CODESPACE).startswith("/user/")
    places = [dashboard.where(e) for e in ({}, HUB, CODESPACE)]
    assert places == ["local", "jupyterhub", "codespaces"]


def test_inline_view_only_through_a_jupyter_server():
    # On JupyterHub the proxied address frames the page; this test process is not a kernel of
    # any Jupyter server, so elsewhere there is nothing to frame it from.
    assert dashboard.inline_url(8000, env=HUB) == "/user/ada-lovelace-x1y2/proxy/8000/"
    assert dashboard.jupyter_server() is None
    assert dashboard.inline_url(8000, env={}) is None


def test_the_notebook_output_is_the_page_and_its_link():
    inline = dashboard.Dashboard("/user/a/proxy/8000/", "/user/a/proxy/8000/", 640)
    html = inline._repr_html_()
    assert '<iframe src="/user/a/proxy/8000/"' in html and 'height="640"' in html
    assert '<a href="/user/a/proxy/8000/" target="_blank"' in html
    assert repr(inline) == "dashboard: /user/a/proxy/8000/"
    link_only = dashboard.Dashboard("http://127.0.0.1:8000/", None, 640)._repr_html_()
    assert "<iframe" not in link_only and 'href="http://127.0.0.1:8000/"' in link_only
    quoted = dashboard.Dashboard('/"><script>x</script>/', None, 640)._repr_html_()
    assert "<script>" not in quoted


def test_bad_height_and_stopped_api_say_what_to_do(tmp_path):
    with pytest.raises(LabError, match="height='big' is not valid: use a number of pixels"):
        dashboard.show(8000, height="big")
    with pytest.raises(StackError, match=r"not running: start the local stack with `LocalStack"):
        dashboard.api_port(tmp_path)


def test_the_launcher_tile_is_registered_with_jupyter_server_proxy():
    from jupyter_server_proxy.config import ServerProcess

    group = "jupyter_serverproxy_servers"
    (entry,) = importlib.metadata.entry_points(group=group, name="dashboard")
    config = entry.load()()
    process = ServerProcess(name=entry.name, **config)
    assert process.launcher_entry.title == "Price dashboard"
    assert process.launcher_entry.path_info == "dashboard/"
    assert process.command[:3] == [sys.executable, "-m", "lab_helpers.dashboard"]
    assert "{port}" in process.command
    assert dashboard.ICON.read_text().lstrip().startswith("<svg")


# -- the tile's server, for real ------------------------------------------------------------


def tile(lab_dir, env=None):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lab_helpers.dashboard", "tile", "--port", str(port),
         "--lab-dir", str(lab_dir)],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def answer():
        try:
            return requests.get(url, allow_redirects=False, timeout=5)
        except requests.ConnectionError:
            return None

    try:
        wait_for(lambda: answer() is not None, 20, "the tile's server")
    except TimeoutError:
        process.kill()
        raise
    return process, answer


@pytest.mark.integration
def test_tile_starts_the_stack_then_sends_the_browser_to_the_api(tmp_path):
    require_servers()
    lab_dir = tmp_path / "lab"
    process, get = tile(lab_dir)
    try:
        first = get()
        assert first.status_code == 503 and "Starting the lab" in first.text
        assert '<meta http-equiv="refresh"' in first.text  # the page asks again by itself
        redirect = wait_for(lambda: (r := get()).status_code == 307 and [r], 90, "the redirect")[0]
        port = dashboard.api_port(lab_dir)
        # Relative, so that it works under any base URL: /dashboard/ -> /proxy/PORT/.
        assert redirect.headers["location"] == f"../proxy/{port}/"
        assert get().status_code == 307  # the stack runs: straight on, every time
        assert get().is_redirect and requests.get(f"http://127.0.0.1:{port}/healthz").ok
    finally:
        process.terminate()
        process.wait(timeout=10)
        LocalStack(lab_dir).down()


@pytest.mark.integration
def test_tile_says_why_the_stack_cannot_start(tmp_path):
    # No influxd anywhere this PATH (and the sbin folders) reaches.
    process, get = tile(tmp_path / "lab", env={"PATH": str(tmp_path)})
    try:
        assert get().status_code == 503
        page = wait_for(lambda: "could not start" in (r := get()).text and [r], 30, "the reason")[0]
        assert page.status_code == 503 and "influxd is not installed" in page.text
        time.sleep(0.5)
        assert "could not start" in get().text  # it does not retry in a loop
    finally:
        process.terminate()
        process.wait(timeout=10)
        LocalStack(tmp_path / "lab").down()
