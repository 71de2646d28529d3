"""The cluster code type-checks with mypy against the stubs of the Kubernetes client in use
(``kubernetes-stubs-elephant-fork``, the stubs for client 37.x): every call to the official
client, its models' optional fields, the exceptions it raises."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_CODE = [
    "cluster", "pods", "forward", "manifests", "commands", "shell", "kind", "classlab",
    "azure", "images", "helm", "costs",
]  # fmt: skip


def test_the_stubs_match_the_client():
    try:
        stubs = metadata.version("kubernetes-stubs-elephant-fork")
    except metadata.PackageNotFoundError:
        pytest.skip("kubernetes-stubs-elephant-fork is not installed: pip install -e '.[dev]'")
    client = metadata.version("kubernetes")
    assert stubs.split(".")[0] == client.split(".")[0], (stubs, client)


def test_the_cluster_code_type_checks_with_mypy():
    pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[dev]'")
    files = [str(ROOT / "lab_helpers" / f"{name}.py") for name in CLUSTER_CODE]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-version", "3.11", "--no-incremental",
         "--ignore-missing-imports", "--follow-imports=silent", "--show-error-codes", *files],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    print(run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr)
    assert run.returncode == 0 and "Success: no issues found" in run.stdout, run.stdout


def test_mypy_would_see_a_wrong_call(tmp_path):
    """The check can fail: the stubs know the client's signatures and models."""
    pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[dev]'")
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from kubernetes.client import CoreV1Api\n"
        "pods = CoreV1Api().list_namespaced_pod(namespace=1)\n"
        "print(pods.items[0].metadata.name.upper())\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", str(wrong)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 1 and "arg-type" in run.stdout and "union-attr" in run.stdout
