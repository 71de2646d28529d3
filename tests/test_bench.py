"""The benchmarks' own code runs and its correctness checks hold (tiny sizes, no timings).

``python -m bench --size tiny`` against servers of its own: every point of each way of loading
is stored, the three ways of querying return identical data, every synthetic tick streamed is
stored (none quarantined by a rule the generator forgot), every stream client gets every tick.
Whether a speed target is met is not asserted here: that depends on the machine.
"""

import json

from bench.run import main

from .conftest import require_servers


def run_tiny(names: tuple[str, ...], out) -> tuple[int, dict]:
    """Run the named benchmarks at the tiny size: the exit code and each one's result, after
    checking that none raised and every correctness check held."""
    require_servers()
    code = main(["--size", "tiny", *(f"--only={n}" for n in names), "--out", str(out)])
    report = json.loads((out / "results.json").read_text())
    results = {b["name"]: b for b in report["benchmarks"]}
    assert set(results) == set(names)
    for name, result in results.items():
        assert result["error"] is None, f"{name}: {result['error']}"
        failed = [c for c in result["checks"] if not c["ok"]]
        assert not failed, f"{name}: {failed}"
        # Something measured for every "at least" goal (a rate, a ratio); an "at most" goal
        # may measure 0 (no errors under load).
        assert result["targets"] and all(
            t["measured"] > 0 for t in result["targets"] if t["op"] in (">", ">=")
        )
    return code, results


def test_bulk_load_and_query_benchmarks_run_and_check_their_results(tmp_path):
    code, results = run_tiny(("bulk_load", "query"), tmp_path)
    assert all(t["measured"] > 0 for r in results.values() for t in r["targets"])
    bulk = {c["label"] for c in results["bulk_load"]["checks"]}
    assert {
        f"{way}: every point stored, every run" for way in ("lab_helpers", "raw limit", "2018 way")
    } <= bulk
    query = [c["label"] for c in results["query"]["checks"]]
    assert sum("exactly" in label for label in query) == 3  # lab_helpers, raw CSV, 2018 way
    assert code == 0
    assert (tmp_path / "benchmarks.md").read_text().startswith("# Benchmarks")


def test_streaming_memory_and_api_benchmarks_store_and_deliver_every_tick(tmp_path):
    _, results = run_tiny(("streaming", "memory", "api"), tmp_path)
    checks = {name: {c["label"] for c in r["checks"]} for name, r in results.items()}
    assert {
        "1 worker(s): every tick stored once, none quarantined",
        "2 worker(s): every tick stored once, none quarantined",
        "every tick queryable and received live",
    } <= checks["streaming"]
    assert "every tick stored" in checks["memory"]
    assert "every stream client received every tick exactly once" in checks["api"]
