"""The dashboard in a real headless Chromium (driven by Playwright), served by the api process,
with history from the real InfluxDB and live ticks published on the real NATS.

Needs Debian's Chromium at /usr/bin/chromium and the ``playwright`` Python package (see
``tests/browser.py``). The same page behind Jupyter's proxy, at ``/proxy/PORT/`` and
``/user/NAME/proxy/PORT/``, is tested in ``tests/test_jupyterlab.py`` and
``tests/test_binder.py``; here, that every address it uses is relative and that only pages of
its own address may frame it.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests

from lab_helpers.data import ASSETS
from lab_helpers.influx import InfluxDB, quote_ident
from tests.browser import RESULTS, chromium, require_browser
from tests.services import run_app
from tests.test_api import T0, iso, publish, seeded, tick

pytestmark = pytest.mark.integration

STATIC = Path(__file__).resolve().parent.parent / "services" / "api" / "static"
SCREENSHOT = RESULTS / "dashboard.png"
WAIT_MS = 15_000
PAYLOAD = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def settings(stack):
    """The stack's settings with a database of this module's own: nothing another test
    stores can show on the page (every chart without seeded data must stay empty)."""
    name = f"dashboard_{uuid.uuid4().hex[:8]}"
    admin = InfluxDB.connect("admin", settings=stack.settings, database=name)
    admin.create_database(name)
    reader = quote_ident(stack.settings.credentials("reader").username)
    admin.execute(f"GRANT READ ON {quote_ident(name)} TO {reader}")
    yield dataclasses.replace(stack.settings, influx_database=name)
    admin.drop_database(name)


@pytest.fixture(scope="module")
def api(stack, settings):
    require_browser()
    env = {"LAB_INFLUX_DB": settings.influx_database}
    with seeded(settings), run_app(stack, "api", env, ready=True) as service:
        yield service


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def page(browser, api):
    """The dashboard, loaded and subscribed to the stream; ``page.problems`` collects console
    errors, page errors and dialogs (an alert() would be an injected script running)."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda err: page.problems.append(f"page error: {err}"))

    def on_dialog(dialog):
        page.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(api.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('Live')",
        timeout=WAIT_MS,
    )
    yield page
    page.close()


def trace_length(page, asset: str, trace: int) -> int:
    """Number of points in one plotly trace (0: stored history, 1: live ticks)."""
    return page.evaluate(
        "([id, n]) => document.getElementById(id).data[n].x.length", [f"chart-{asset}", trace]
    )


def latest_row(page, asset: str) -> dict:
    return page.evaluate(
        """(asset) => {
            const row = document.querySelector(`#latest tr[data-asset="${asset}"]`);
            const text = (cls) => row.querySelector(cls).textContent;
            return {price: text('.price'), time: text('.time'), source: text('.source')};
        }""",
        asset,
    )


def test_every_asset_gets_a_chart_with_its_history(page):
    for asset in ASSETS:
        assert page.locator(f"#chart-{asset} svg.main-svg").count() >= 1, asset
    # The seeded assets have stored history: loaded, downsampled to at most ~500 points.
    for asset in ("btc", "eth", "gold", "sol"):
        assert 1 <= trace_length(page, asset, 0) <= 501, asset
    rows = page.locator("#latest tbody tr")
    assert rows.count() == len(ASSETS)
    assert page.locator("#latest thead th").all_text_contents()[:2] == ["Asset", "Price"]
    assert latest_row(page, "gold")["price"] == "2,345.5"  # the newest stored gold price
    assert page.problems == []


def test_an_empty_chart_says_why_and_how_to_fill_it(page):
    for asset in ("xrp", "ltc", "silver", "platinum"):  # nothing is stored for them
        note = page.locator(f"#empty-{asset}")
        assert note.is_visible(), asset
        text = note.text_content()
        assert "No price of this asset is stored yet" in text, text
        assert "make stack-up" in text and "Add your own asset" in text
    for asset in ("btc", "eth", "gold", "sol"):  # their history is shown instead
        assert page.locator(f"#empty-{asset}").is_hidden(), asset
    assert page.problems == []


def test_backfilled_history_fills_the_history_line_not_the_live_one(page, stack, settings):
    times = [T0 + pd.Timedelta(days=d) for d in (10, 11, 12)]
    admin = InfluxDB.connect("admin", settings=settings)
    history = pd.DataFrame({"time": times, "asset": "xrp", "price": [1.0, 1.1, 1.2]})
    admin.write(history.assign(source="history"), "price", tags=["asset", "source"], time="time")
    # The ingest workers publish each stored tick, the backfilled ones too.
    publish(stack.settings.nats_url, [tick("xrp", 1.2, iso(times[-1]), source="history")])
    page.wait_for_function(
        "([id, n]) => document.getElementById(id).data[0].x.length >= n",
        arg=["chart-xrp", 3],
        timeout=WAIT_MS,
    )
    assert trace_length(page, "xrp", 1) == 0  # not drawn as a live tick
    assert page.locator("#empty-xrp").is_hidden()
    assert page.problems == []


def test_live_ticks_extend_the_chart_and_update_the_table(page, api, stack):
    before = trace_length(page, "btc", 1)
    when = [iso(T0 + pd.Timedelta(minutes=100_000 + i)) for i in range(3)]
    publish(
        stack.settings.nats_url,
        [tick("btc", 61_000.0 + i, when[i], seq=i) for i in range(3)],
    )
    page.wait_for_function(
        "([id, n]) => document.getElementById(id).data[1].x.length >= n",
        arg=["chart-btc", before + 3],
        timeout=WAIT_MS,
    )
    live = page.evaluate("() => document.getElementById('chart-btc').data[1]")
    assert live["y"][-3:] == [61_000.0, 61_001.0, 61_002.0]
    assert [x.replace(".000Z", "Z") for x in live["x"][-3:]] == when
    row = latest_row(page, "btc")
    assert row["price"] == "61,002" and row["time"] == when[-1].replace("T", " ")[:-1]
    # The table keeps the newest price: a later poll of stored prices does not undo it.
    page.wait_for_timeout(200)
    assert latest_row(page, "btc")["price"] == "61,002"
    assert page.problems == []


def test_html_in_data_is_shown_as_text(page, api, stack):
    when = iso(T0 + pd.Timedelta(minutes=200_000))
    publish(stack.settings.nats_url, [tick("eth", 3_333.0, when, source=PAYLOAD)])
    page.wait_for_function(
        "(text) => document.querySelector('#latest tr[data-asset=eth] .source')"
        ".textContent === text",
        arg=PAYLOAD,
        timeout=WAIT_MS,
    )
    # The quarantine list shows the seeded raw message with the same payload, as text too.
    page.wait_for_function(
        "(text) => [...document.querySelectorAll('#quarantine-latest td.raw')]"
        ".some((td) => td.textContent === text)",
        arg=PAYLOAD,
        timeout=WAIT_MS,
    )
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    page.wait_for_timeout(300)  # an injected onerror would have fired by now
    assert page.problems == []


def test_quarantine_table_shows_the_counts_per_reason(page, api):
    report = requests.get(api.url + "/api/quarantine", timeout=10).json()
    want = [[r["reason"], str(r["count"])] for r in report["reasons"]]
    page.wait_for_function(
        "(n) => document.querySelectorAll('#quarantine tbody tr td.count').length === n",
        arg=len(want),
        timeout=WAIT_MS,
    )
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#quarantine tbody tr')].map(
            (tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent))"""
    )
    assert shown == want
    assert {"invalid JSON", "price not a number"} <= {reason for reason, _ in shown}
    caption = page.locator("#quarantine-total").text_content()
    assert f"{report['total']} in all" in caption


def test_screenshot(page):
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    print(f"screenshot: {SCREENSHOT}")


def test_page_loads_nothing_from_other_hosts(browser, api):
    page = browser.new_page()
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(api.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    page.close()
    hosts = {urlsplit(url).netloc for url in urls if not url.startswith("data:")}
    assert hosts == {urlsplit(api.url).netloc}, sorted(hosts)


# -- behind a proxy ------------------------------------------------------------------------------

ABSOLUTE = re.compile(r"""(?:src|href)="/|(?:fetch|getJSON|EventSource)\(\s*[`"']/|[`"']/api/""")


def test_every_address_the_page_uses_is_relative():
    """Behind Jupyter's proxy the page lives under a prefix (/proxy/8000/): an absolute path
    such as /api/assets would leave it."""
    for name in ("index.html", "dashboard.js"):
        text = (STATIC / name).read_text()
        code = re.sub(r"^\s*//.*$", "", text, flags=re.M)  # comments may quote the wrong way
        assert not ABSOLUTE.findall(code), f"{name}: {ABSOLUTE.findall(code)}"
    assert 'src="static/dashboard.js"' in (STATIC / "index.html").read_text()
    assert ABSOLUTE.search('getJSON("/api/assets")') and ABSOLUTE.search('<a href="/x">')


def test_only_its_own_address_may_frame_the_page(api):
    """A notebook frames the dashboard through Jupyter's proxy, from the same address; no other
    page may frame it."""
    headers = requests.get(api.url + "/", timeout=10).headers
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "SAMEORIGIN"
