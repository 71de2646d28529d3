"""Run the benchmarks and write their report.

Command line (from the repository root):

    python -m bench                      # all six: docs/benchmarks.md, docs/benchmarks.json
    python -m bench --quick              # smaller sizes, under 2 minutes; build/bench only
    python -m bench --only bulk_load --only query

Every run writes `build/bench/results.json`. A full run of all six benchmarks also writes
`docs/benchmarks.md` (a table per benchmark, the targets met or not, and the machine) and
`docs/benchmarks.json` (a copy of the results). A missed target never fails the run (speed
depends on the machine); a failed correctness check or a benchmark that crashed does (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from importlib import import_module
from pathlib import Path

from lab_helpers.config import project_root

from .common import SIZES, Result, fmt, machine_info

BENCHMARKS = ("bulk_load", "query", "streaming", "api", "memory", "notebooks")
"""The benchmarks, in the order they run (a module of this package each)."""


def run_all(names: list[str], size: str) -> dict:
    """Run the benchmarks `names` at `size`; returns the results as a dict (JSON-ready)."""
    machine = machine_info()
    started = time.perf_counter()
    results = []
    for name in names:
        module = import_module(f".{name}", __package__)
        print(f"== {name} ({size}): {module.TITLE}", flush=True)
        t0 = time.perf_counter()
        try:
            result = module.run(size)
        except Exception as err:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            result = Result(name, module.TITLE, size, error=f"{type(err).__name__}: {err}")
        result.seconds = time.perf_counter() - t0
        print(f"   ({result.seconds:.0f} s)", flush=True)
        results.append(result.to_dict())
    machine["load_average_end"] = list(os.getloadavg())
    return {
        "size": size,
        "machine": machine,
        "seconds": time.perf_counter() - started,
        "benchmarks": results,
    }


def ok(report: dict) -> bool:
    """True when no benchmark crashed and every correctness check held."""
    return all(
        b["error"] is None and all(c["ok"] for c in b["checks"]) for b in report["benchmarks"]
    )


def _verdict(target: dict) -> str:
    return "✅ met" if target["met"] else "❌ not met"


def markdown(report: dict) -> str:
    """The report as docs/benchmarks.md."""
    m = report["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    load_end = ", ".join(f"{x:.2f}" for x in m.get("load_average_end", []))
    out = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (`python -m bench`); how each one works is in "
        "[bench/README.md](../bench/README.md). Every ratio compares figures measured side by "
        "side in the same run on the same machine, because absolute figures depend on the "
        "machine and on what else it is doing.",
        "",
        "## Summary",
        "",
        "| benchmark | target | measured | required | met |",
        "|---|---|---|---|---|",
    ]
    for b in report["benchmarks"]:
        for t in b["targets"]:
            out.append(
                f"| {b['name']} | {t['label']} | {fmt(t['measured'], t['unit'])} | "
                f"{t['op']} {fmt(t['required'], t['unit'])} | {_verdict(t)} |"
            )
        if b["error"]:
            out.append(f"| {b['name']} | (did not run) | {b['error']} | | ❌ |")
    out += [
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} (pandas {m['pandas']}, numpy {m['numpy']}, "
        f"requests {m['requests']}, nats-py {m['nats-py']}, influxdb {m['influxdb (python)']}) |",
        f"| influxd | {m['influxd']} |",
        f"| nats-server | {m['nats-server']} |",
        f"| date | {m['date']} |",
        f"| load average (1, 5, 15 min) | {load} at the start; {load_end} at the end |",
        f"| size | {report['size']}, {report['seconds'] / 60:.1f} minutes in all |",
        "",
        "The machine is shared: the load average shows how busy it was. Figures from a busy "
        "machine vary from run to run; the ratios, measured side by side, vary less.",
    ]
    for b in report["benchmarks"]:
        out += ["", f"## {b['title']}", ""]
        if b["error"]:
            out += [f"**Did not run**: `{b['error']}`", ""]
        if b["figures"]:
            out += ["| figure | value | note |", "|---|---|---|"]
            out += [
                f"| {f['label']} | {fmt(f['value'], f['unit'])} | {f['note']} |"
                for f in b["figures"]
            ]
            out.append("")
        if b["targets"]:
            out += ["| target | measured | required | met |", "|---|---|---|---|"]
            out += [
                f"| {t['label']} | {fmt(t['measured'], t['unit'])} | {t['op']} "
                f"{fmt(t['required'], t['unit'])} | {_verdict(t)} |"
                for t in b["targets"]
            ]
            out.append("")
        if b["checks"]:
            out.append("Correctness checks:")
            out.append("")
            out += [
                f"- {'✅' if c['ok'] else '❌'} {c['label']}"
                + (f" ({c['detail']})" if c["detail"] else "")
                for c in b["checks"]
            ]
            out.append("")
        out += [note + "\n" for note in b["notes"]]
        for title, text in b["blocks"]:
            out += [f"{title}:", "", "```", text, "```", ""]
        out.append(f"*{b['seconds']:.0f} s to run.*")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under 2 minutes)")
    parser.add_argument("--size", choices=SIZES, help="full, quick or tiny (tiny: for the tests)")
    parser.add_argument(
        "--out",
        type=Path,
        default=project_root() / "build" / "bench",
        help="folder for results.json (default build/bench)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=project_root() / "docs",
        help="folder for benchmarks.md and benchmarks.json, written after a full run of all six",
    )
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    report = run_all(names, size)

    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    (args.out / "results.json").write_text(text + "\n")
    (args.out / "benchmarks.md").write_text(markdown(report))
    print(f"results: {args.out / 'results.json'}, {args.out / 'benchmarks.md'}")
    if size == "full" and names == list(BENCHMARKS):
        args.docs.mkdir(parents=True, exist_ok=True)
        (args.docs / "benchmarks.json").write_text(text + "\n")
        (args.docs / "benchmarks.md").write_text(markdown(report))
        print(f"report: {args.docs / 'benchmarks.md'}")
    met = sum(t["met"] for b in report["benchmarks"] for t in b["targets"])
    total = sum(len(b["targets"]) for b in report["benchmarks"])
    print(f"{met} of {total} targets met; checks {'all hold' if ok(report) else 'FAILED'}")
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
