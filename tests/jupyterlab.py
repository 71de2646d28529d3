"""JupyterLab as a learner meets it, for the browser tests: run a Jupyter server the way a
set-up does (``make lab``, or Binder's ``binder/start``), then take the learner's path in a
real headless Chromium.

The learner's path (:func:`learner_path`):

1. open JupyterLab; open ``notebooks/00_welcome_and_setup.ipynb`` from the file browser;
2. *Edit > Clear Outputs of All Cells*, then *Run > Run All Cells*, and wait until every code
   cell has run and the kernel is idle;
3. no cell failed (JupyterLab stops *Run All* at the first error), no error or ⛔ in any
   output, and a plotly chart rendered;
4. the dashboard that notebook 00 shows inline comes through Jupyter's proxy and its live
   charts grow; the launcher's "Price dashboard" tile opens it in a new tab, through the
   proxy too, and its charts grow there as well.

The server runs with a configuration of the test's own (``JUPYTER_CONFIG_DIR``): its port
and token, no browser, settings and workspaces in a temporary folder, autosave off (the
notebook file in the repository is never written) and every cell rendered (no windowing, so
every output is in the page).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from lab_helpers.dashboard import api_port
from lab_helpers.stack import free_port

NOTEBOOK = "00_welcome_and_setup.ipynb"
WAIT_MS = 60_000
RUN_ALL_MS = 240_000
DASHBOARD = "Price dashboard"
# The settings of JupyterLab that a test changes from the defaults (see the module help).
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No "official Jupyter news?" prompt over the page, no look-up of new versions.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def jupyter_config(folder: Path, port: int, token: str) -> dict[str, str]:
    """Write a Jupyter configuration for a test server into ``folder``; returns the
    environment variables that make a Jupyter server read it."""
    settings, workspaces = folder / "settings", folder / "workspaces"
    for name, values in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    workspaces.mkdir(parents=True, exist_ok=True)
    config = {
        "ServerApp": {"port": port, "port_retries": 0, "open_browser": False},
        "IdentityProvider": {"token": token},
        "LabApp": {"user_settings_dir": str(settings), "workspaces_dir": str(workspaces)},
    }
    (folder / "jupyter_server_config.json").write_text(json.dumps(config))
    return {"JUPYTER_CONFIG_DIR": str(folder)}


@dataclass
class Lab:
    """A running Jupyter server: ``url`` ends with its base URL (``http://127.0.0.1:P/`` or
    ``http://127.0.0.1:P/user/NAME/``)."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def output(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(
    command: list[str], *, cwd: Path, env: dict[str, str], url: str, token: str, log: Path,
    timeout: float = 240,
) -> Iterator[Lab]:  # fmt: skip
    """Run ``command`` (which ends up running a Jupyter server at ``url``) until the server
    answers; on exit stop its whole process group (make, Jupyter and what Jupyter started)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    lab = Lab(url, token, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise AssertionError(f"{command[0]} exited with {code}:\n{lab.output()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}api/status", params={"token": token}, timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                why = f"no Jupyter server at {url} in {timeout:.0f} s"
                raise AssertionError(f"{why}:\n{lab.output()}")
            time.sleep(0.25)
        yield lab
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (Jupyter shuts its kernels and proxied processes down),
    SIGKILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# -- the learner's path -------------------------------------------------------------------------


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in JupyterLab's menu bar, then ``item`` in its menu."""
    page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def open_from_file_browser(page, *names: str) -> None:
    """Double-click ``names`` in turn in the file browser (folders, then the file)."""
    for name in names:
        exact = re.compile(rf"^\s*{re.escape(name)}\s*$")
        page.locator(".jp-DirListing-itemText", has_text=exact).first.dblclick()


PROMPTS = (
    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
    ".map(e => e.textContent.trim())"
)


def wait_for_kernel(page, timeout: float = WAIT_MS / 1000) -> None:
    """Wait until the open notebook's kernel has started and is idle. When JupyterLab asks
    which kernel to start (it does when its list of kernels comes late, on a busy machine),
    take its proposal, as a learner would."""
    deadline = time.monotonic() + timeout
    ready = """() => {
        const name = document.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
        const state = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return /Python/.test(name ? name.textContent : '')
            && state && state.getAttribute('data-status') === 'idle';
    }"""
    while not page.evaluate(ready):
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        assert time.monotonic() < deadline, f"the kernel did not start within {timeout:.0f} s"
        page.wait_for_timeout(200)


def run_all_cells(page) -> list[str]:
    """Clear every output, run every cell from the menu, wait until each has run and the
    kernel is idle; returns the input prompts (``[1]:`` ...)."""
    wait_for_kernel(page)
    menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(f"() => ({PROMPTS})().every(p => !/\\d/.test(p))", timeout=WAIT_MS)
    menu(page, "Run", "Run All Cells")
    # Every cell is queued ([*]) at once; done when none is queued or running any more.
    page.wait_for_function(f"() => ({PROMPTS})().some(p => p.includes('*'))", timeout=WAIT_MS)
    page.wait_for_function(
        f"() => !({PROMPTS})().some(p => p.includes('*'))", timeout=RUN_ALL_MS, polling=500
    )
    wait_for_kernel(page)
    return page.evaluate(PROMPTS)


def failed_outputs(page) -> list[str]:
    """The text of every output that shows an error: a traceback, an exception or a ⛔ line."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.jp-OutputArea-output')]
            .map((e) => [e.getAttribute('data-mime-type'), e.textContent])
            .filter(([mime, text]) => text.includes('⛔') || text.includes('Traceback')
                || (mime === 'application/vnd.jupyter.stderr' && /Error|Exception/.test(text)))
            .map(([, text]) => text.slice(0, 500))"""
    )


LIVE_POINTS = (
    "() => [...document.querySelectorAll('.chart')]"
    ".reduce((n, div) => n + (div.data ? div.data[1].x.length : 0), 0)"
)


def dashboard_grows(frame, seconds: float = 60) -> tuple[int, int]:
    """Wait until the dashboard in ``frame`` (a Playwright page or frame) has drawn, is
    connected to the live stream, and its live traces have grown; returns the live points
    before and after."""
    frame.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    frame.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('Live')",
        timeout=WAIT_MS,
    )
    before = frame.evaluate(LIVE_POINTS)
    frame.wait_for_function(f"() => ({LIVE_POINTS})() > {before}", timeout=seconds * 1000)
    return before, frame.evaluate(LIVE_POINTS)


def learner_path(context, lab: Lab, lab_dir: Path, folders: tuple[str, ...] = ("notebooks",)):
    """Steps 1-4 of the module help, in the Playwright browser ``context``, with the lab's
    state in ``lab_dir``; returns a dict of what was seen (for the test's own report)."""
    seen = {}
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{lab.url}lab?reset&token={lab.token}")
    page.wait_for_selector(".jp-DirListing-item")
    open_from_file_browser(page, *folders, NOTEBOOK)
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")

    started = time.monotonic()
    prompts = run_all_cells(page)
    seen["run all (s)"] = round(time.monotonic() - started, 1)
    unrun = [i for i, p in enumerate(prompts) if not p.strip("[]: ").isdigit()]
    assert prompts and not unrun, f"code cells that did not run (an error stops Run All): {unrun}"
    assert failed_outputs(page) == []
    # A plotly chart drawn by JupyterLab's plotly renderer: its traces hold points, and its
    # axes and legend are drawn (the lines themselves may be WebGL, invisible to the DOM).
    charts = page.evaluate(
        """() => [...document.querySelectorAll('.jp-RenderedPlotly.js-plotly-plot')].map((div) => ({
            points: (div.data || []).reduce((n, trace) => n + (trace.x ? trace.x.length : 0), 0),
            ticks: div.querySelectorAll('.xtick').length,
            legend: div.querySelectorAll('.legend .traces').length}))"""
    )
    assert any(c["points"] and c["ticks"] and c["legend"] for c in charts), (
        f"no plotly chart rendered in the notebook: {charts}"
    )
    seen["plotly charts"] = charts

    # The dashboard inside notebook 00, through Jupyter's proxy.
    iframe = page.locator(f"iframe[title='{DASHBOARD}']")
    iframe.scroll_into_view_if_needed()
    frame = iframe.element_handle().content_frame()
    port = api_port(lab_dir)
    proxied = f"{lab.url}proxy/{port}/"
    assert frame.url == proxied, f"the inline dashboard is at {frame.url}, not {proxied}"
    # Its link: through the hub's proxy on JupyterHub (a path on the hub's host), else direct.
    # (A server under a base URL other than / is the simulated JupyterHub's.)
    link = page.locator("p", has_text="Dashboard:").locator("a").first.get_attribute("href")
    hub = urlsplit(lab.url).path != "/"
    assert link == (urlsplit(proxied).path if hub else f"http://127.0.0.1:{port}/"), link
    seen["inline dashboard live points"] = dashboard_grows(frame)

    # The launcher tile opens it in a new tab, through the proxy too.
    menu(page, "File", "New Launcher")
    with context.expect_page(timeout=WAIT_MS) as opened:
        page.locator(".jp-LauncherCard:visible", has_text=DASHBOARD).first.click()
    tab = opened.value
    tab.wait_for_url(proxied, timeout=WAIT_MS)
    seen["tile dashboard live points"] = dashboard_grows(tab)
    return seen


def follow_the_learner(
    command: list[str], *, cwd: Path, env: dict[str, str], config_dir: Path, lab_dir: Path,
    results: Path, base_url: str = "/",
) -> dict:  # fmt: skip
    """Run ``command`` (which starts a Jupyter server under ``base_url``) with a test
    configuration in ``config_dir``, then :func:`learner_path` in a new headless Chromium.
    The server's log goes to ``results``, and there too screenshots of every page on failure."""
    from .browser import chromium, screenshots_on_failure

    port, token = free_port(), secrets.token_hex(16)
    env = {**env, **jupyter_config(config_dir, port, token)}
    results.mkdir(parents=True, exist_ok=True)
    url, log = f"http://127.0.0.1:{port}{base_url}", results / "jupyter.log"
    with (
        running(command, cwd=cwd, env=env, url=url, token=token, log=log) as lab,
        chromium() as browser,
    ):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        with screenshots_on_failure(context, results):
            return learner_path(context, lab, lab_dir)
