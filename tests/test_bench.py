"""The benchmarks' own code runs and its correctness checks hold (tiny sizes, no timings).

``python -m bench --size tiny --only bulk_load --only query`` against servers of its own: every
point of each way of loading is stored, and the three ways of querying return identical data.
Whether a speed target is met is not asserted here: that depends on the machine.
"""

import json

from bench.run import main

from .conftest import require_servers


def test_bulk_load_and_query_benchmarks_run_and_check_their_results(tmp_path):
    require_servers()
    code = main(
        ["--size", "tiny", "--only", "bulk_load", "--only", "query", "--out", str(tmp_path)]
    )
    report = json.loads((tmp_path / "results.json").read_text())
    results = {b["name"]: b for b in report["benchmarks"]}
    assert set(results) == {"bulk_load", "query"}
    for name, result in results.items():
        assert result["error"] is None, f"{name}: {result['error']}"
        failed = [c for c in result["checks"] if not c["ok"]]
        assert not failed, f"{name}: {failed}"
        assert result["targets"] and all(t["measured"] > 0 for t in result["targets"])
    bulk = {c["label"] for c in results["bulk_load"]["checks"]}
    assert {
        f"{way}: every point stored, every run" for way in ("lab_helpers", "raw limit", "2018 way")
    } <= bulk
    query = [c["label"] for c in results["query"]["checks"]]
    assert sum("exactly" in label for label in query) == 3  # lab_helpers, raw CSV, 2018 way
    assert code == 0
    assert (tmp_path / "benchmarks.md").read_text().startswith("# Benchmarks")
