// The dashboard: one chart per asset (stored history + live ticks), the latest price per
// asset, and the quarantine counts.
//
// Addresses: every request is relative to the page ("api/assets", not "/api/assets"), so the
// dashboard works wherever it is served: at /, or under a proxy's prefix such as Jupyter's
// /proxy/8000/ or /user/NAME/proxy/8000/ (Binder, JupyterHub).
//
// Safety: everything shown comes from the network, so it is put on the page only as text
// (textContent, DOM nodes), never parsed as HTML; a price tick whose `source` is
// "<img src=x onerror=...>" shows those characters and runs nothing.
"use strict";

(function () {
  const HISTORY_POINTS = 500; // stored points per chart, downsampled to about this many
  const LIVE_POINTS = 1000; // live ticks kept per chart; older ones scroll out
  const FLUSH_MS = 250; // draw buffered ticks at most this often (a burst = one redraw)
  const QUARANTINE_POLL_MS = 5000;
  const ASSETS_POLL_MS = 15000;
  const LATEST_RECORDS = 5;
  const HISTORY_RELOAD_MS = 2000; // a burst of backfilled history = one reload per chart
  const HISTORY_SOURCE = "history"; // the source's backfill (lab_helpers.replay.BACKFILL_SOURCE)
  // Why a chart is empty, and how to fill it.
  const NO_DATA =
    "No price of this asset is stored yet. When the stack starts (make stack-up), its " +
    "source sends the history of every asset, then live ticks: this chart fills as the " +
    "ingest workers store them. Nothing after a minute? Check `make stack-status`; for an " +
    "asset you added yourself, see data/README.md, \"Add your own asset\".";

  const charts = new Map(); // asset -> {div, xs: [], ys: []} (xs/ys: ticks not drawn yet)
  const rows = new Map(); // asset -> {time, cells} of the latest-price table
  let flushTimer = null;

  // -- small helpers ------------------------------------------------------------------------

  /** A new element with optional class and text (text is never parsed as HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setStatus(text, problem) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("problem", Boolean(problem));
  }

  /** GET a JSON document; an HTTP error becomes an Error with the api's one-sentence reason. */
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(typeof body.error === "string" ? body.error : response.statusText);
    }
    return body;
  }

  /** A time as ISO-8601 UTC ("...Z"), or null when it is not a valid time text. */
  function toISO(value) {
    if (typeof value !== "string") return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date.toISOString();
  }

  function showTime(iso) {
    return iso ? iso.replace("T", " ").replace(/(\.000)?Z$/, "") : "–";
  }

  function showPrice(price) {
    return typeof price === "number"
      ? price.toLocaleString("en-US", { maximumFractionDigits: price < 10 ? 6 : 2 })
      : "–";
  }

  // -- latest-price table -------------------------------------------------------------------

  function addRow(info) {
    const tr = el("tr");
    tr.dataset.asset = info.asset;
    const cells = {
      price: el("td", "number price", "–"),
      time: el("td", "time", "–"),
      source: el("td", "source", "–"),
    };
    tr.append(el("th", "asset", info.asset.toUpperCase()), cells.price, el("td", "", info.unit));
    tr.append(cells.time, cells.source);
    tr.firstChild.scope = "row";
    document.querySelector("#latest tbody").append(tr);
    rows.set(info.asset, { time: null, cells });
    showLatest(info.asset, toISO(info.latest_time), info.latest_price, "(stored)");
  }

  /** Show a price if it is newer than the one shown (polls must not undo live ticks). */
  function showLatest(asset, time, price, source) {
    const row = rows.get(asset);
    if (!row || !time || (row.time && time < row.time)) return;
    row.time = time;
    row.cells.price.textContent = showPrice(price);
    row.cells.time.textContent = showTime(time);
    row.cells.source.textContent = source;
  }

  async function pollAssets() {
    const { assets } = await getJSON("api/assets");
    for (const info of assets) {
      showLatest(info.asset, toISO(info.latest_time), info.latest_price, "(stored)");
    }
  }

  // -- quarantine tables --------------------------------------------------------------------

  async function pollQuarantine() {
    const report = await getJSON(`api/quarantine?latest=${LATEST_RECORDS}`);
    const counts = report.reasons.map((r) => {
      const tr = el("tr");
      tr.append(el("td", "reason", r.reason), el("td", "number count", r.count));
      return tr;
    });
    if (!counts.length) {
      const tr = el("tr");
      const td = el("td", "empty", "Nothing quarantined.");
      td.colSpan = 2;
      tr.append(td);
      counts.push(tr);
    }
    document.querySelector("#quarantine tbody").replaceChildren(...counts);
    document.getElementById("quarantine-total").textContent =
      `Ticks the ingest set aside, per reason: ${report.total} in all.`;
    const latest = report.latest.map((r) => {
      const tr = el("tr");
      const raw = el("td", "raw", r.raw.length > 120 ? `${r.raw.slice(0, 120)}…` : r.raw);
      raw.title = r.raw; // the whole message on hover (an attribute value: never parsed)
      tr.append(el("td", "time", showTime(toISO(r.time))), el("td", "", r.reason), raw);
      return tr;
    });
    document.querySelector("#quarantine-latest tbody").replaceChildren(...latest);
  }

  // -- charts -------------------------------------------------------------------------------

  function addChart(info) {
    const section = el("section", "chart-card");
    const title = el("h3", "", `${info.asset.toUpperCase()} (${info.unit})`);
    const div = el("div", "chart");
    div.id = `chart-${info.asset}`;
    div.setAttribute("role", "img");
    div.setAttribute("aria-label", `Price of ${info.asset.toUpperCase()} over time`);
    const note = el("p", "chart-empty", NO_DATA);
    note.id = `empty-${info.asset}`;
    section.append(title, note, div);
    document.getElementById("charts").append(section);
    const traces = [
      { name: "history", x: [], y: [], mode: "lines", line: { color: "#9aa5b1", width: 1.5 } },
      { name: "live", x: [], y: [], mode: "lines+markers", marker: { size: 4 } },
    ];
    const layout = {
      height: 260,
      margin: { l: 64, r: 12, t: 8, b: 36 },
      xaxis: { type: "date" },
      yaxis: { title: { text: info.unit }, tickformat: ",.6~r" },
      legend: { orientation: "h", x: 0, y: 1.12 },
      paper_bgcolor: "rgba(0,0,0,0)",
    };
    Plotly.newPlot(div, traces, layout, { displayModeBar: false, responsive: true });
    charts.set(info.asset, { div, note, xs: [], ys: [], empty: true, reload: null });
  }

  /** Remove the "no prices" note once a chart has data. */
  function markFilled(chart) {
    if (!chart.empty) return;
    chart.empty = false;
    chart.note.hidden = true;
  }

  /** Backfilled history arrives in bursts: load the chart's history once the burst ends. */
  function reloadHistorySoon(asset, chart) {
    clearTimeout(chart.reload);
    chart.reload = setTimeout(() => {
      chart.reload = null;
      loadHistory(asset).catch((err) => setStatus(`Could not refresh: ${err.message}`, true));
    }, HISTORY_RELOAD_MS);
  }

  /** Load the stored history of one asset, downsampled to about HISTORY_POINTS points. */
  async function loadHistory(asset) {
    const name = encodeURIComponent(asset);
    const summary = await getJSON(`api/summary/${name}`);
    if (!summary.count) return;
    let url = `api/prices/${name}?limit=${HISTORY_POINTS}`;
    if (summary.count > HISTORY_POINTS) {
      const span = (Date.parse(summary.last_time) - Date.parse(summary.first_time)) / 1000;
      const every = Math.max(1, Math.ceil(span / HISTORY_POINTS));
      const start = encodeURIComponent(summary.first_time);
      url += `&start=${start}&every=${every}s&agg=mean`;
    }
    const series = await getJSON(url);
    const x = series.points.map((p) => p.time);
    const y = series.points.map((p) => p.price);
    const chart = charts.get(asset);
    // A line needs two points; markers show a short history (or a single price) too.
    const mode = x.length < 50 ? "lines+markers" : "lines";
    Plotly.restyle(chart.div, { x: [x], y: [y], mode: [mode] }, [0]);
    if (x.length) markFilled(chart);
  }

  // -- the live stream ----------------------------------------------------------------------

  function onTick(event) {
    let tick;
    try {
      tick = JSON.parse(event.data);
    } catch {
      return; // not JSON: ignore it
    }
    if (!tick || typeof tick !== "object") return;
    const chart = typeof tick.asset === "string" ? charts.get(tick.asset) : undefined;
    const time = toISO(tick.time);
    if (!chart || !time || typeof tick.price !== "number" || !Number.isFinite(tick.price)) {
      return; // an asset without a chart, or no usable time or price
    }
    if (tick.source === HISTORY_SOURCE) {
      reloadHistorySoon(tick.asset, chart); // history joins the grey line, not the live one
      return;
    }
    chart.xs.push(time);
    chart.ys.push(tick.price);
    if (chart.xs.length > LIVE_POINTS) {
      chart.xs.shift();
      chart.ys.shift();
    }
    const source = typeof tick.source === "string" ? tick.source : "";
    showLatest(tick.asset, time, tick.price, source);
    if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  /** Draw the buffered ticks: one extendTraces per chart, keeping LIVE_POINTS points. */
  function flush() {
    flushTimer = null;
    for (const chart of charts.values()) {
      if (!chart.xs.length) continue;
      Plotly.extendTraces(chart.div, { x: [chart.xs], y: [chart.ys] }, [1], LIVE_POINTS);
      chart.xs = [];
      chart.ys = [];
      markFilled(chart);
    }
  }

  function connectStream() {
    const source = new EventSource("api/stream");
    source.addEventListener("tick", onTick);
    source.onopen = () => setStatus("Live: connected to the price stream.");
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused: the browser gives up, so try again later.
        setStatus("Live stream unavailable: retrying in 5 s…", true);
        setTimeout(connectStream, 5000);
      } else {
        setStatus("Live stream interrupted: reconnecting…", true);
      }
    };
  }

  // -- start ----------------------------------------------------------------------------------

  /** Run `task` now and every `ms`; a failure shows in the status line and is retried. */
  function every(ms, task) {
    const run = () =>
      task().catch((err) => setStatus(`Could not refresh: ${err.message}`, true));
    run();
    setInterval(run, ms);
  }

  async function start() {
    if (typeof Plotly === "undefined") {
      setStatus("The chart library (plotly.js) did not load: reload the page.", true);
      return;
    }
    let assets;
    try {
      ({ assets } = await getJSON("api/assets"));
    } catch (err) {
      setStatus(`The api did not answer (${err.message}): retrying in 5 s…`, true);
      setTimeout(start, 5000);
      return;
    }
    for (const info of assets) {
      addRow(info);
      addChart(info);
    }
    connectStream();
    every(QUARANTINE_POLL_MS, pollQuarantine);
    setInterval(() => pollAssets().catch(() => {}), ASSETS_POLL_MS);
    const results = await Promise.allSettled(assets.map((info) => loadHistory(info.asset)));
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) {
      setStatus(`Some history did not load: ${failed[0].reason.message}`, true);
    }
    document.body.dataset.ready = "true"; // lets tests and scripts wait for the first draw
  }

  start();
})();
