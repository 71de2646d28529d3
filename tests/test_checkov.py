"""checkov, the infrastructure-as-code scanner, finds nothing to fail in the rendered manifests
(every overlay and component, the class lab) and in the Dockerfiles.

checkov runs from a virtual environment of its own (``scripts/setup.sh tools``). A check the lab
does not follow is skipped next to the object it concerns, with the reason: for Kubernetes an
annotation ``checkov.io/skip<N>: CKV_...=<reason>`` in the manifest, for a Dockerfile a
``# checkov:skip=CKV_...:<reason>`` comment. This test also checks that every skip has a reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab_helpers import classlab
from lab_helpers.stack import APPS
from tests.tools import isolated_tool

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "base": "manifests/base",
    "aks": "manifests/overlays/aks",
    "kind": "manifests/overlays/kind",
}
COMPONENTS = ["bad-records", "live-source"]


def checkov() -> Path:
    return isolated_tool("checkov", "checkov")


def kustomize(folder: Path) -> str:
    kubectl = Path(sys.executable).parent / "kubectl"
    run = subprocess.run([str(kubectl), "kustomize", str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Every variant rendered into one folder of YAML files, for one checkov run."""
    out = tmp_path_factory.mktemp("rendered")
    for name, folder in VARIANTS.items():
        (out / f"{name}.yaml").write_text(kustomize(ROOT / folder))
    for component in COMPONENTS:
        folder = tmp_path_factory.mktemp(component)
        kind = os.path.relpath(ROOT / "manifests" / "overlays" / "kind", folder)
        extra = os.path.relpath(ROOT / "manifests" / "components" / component, folder)
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump({"resources": [kind], "components": [extra]})
        )
        (out / f"kind-{component}.yaml").write_text(kustomize(folder))
    classroom = tmp_path_factory.mktemp("classlab")
    classlab.generate(2, classroom, registry="class.azurecr.io")
    (out / "classlab-access.yaml").write_text(kustomize(classroom))
    (out / "classlab-lab.yaml").write_text(kustomize(classroom / "crypto-lab-student01" / "lab"))
    return out


def scan(*args: str) -> dict:
    run = subprocess.run(
        [str(checkov()), "--output", "json", "--skip-download", "--soft-fail", *args],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {r["check_type"]: r for r in reports if isinstance(r, dict) and "check_type" in r}


def failures(report: dict) -> list[str]:
    return [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for f in report["results"]["failed_checks"]
    ]


def test_checkov_passes_every_rendered_manifest(rendered):
    reports = scan("--framework", "kubernetes", "--directory", str(rendered))
    report = reports["kubernetes"]
    summary = report["summary"]
    print(f"kubernetes: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} skipped")  # fmt: skip
    assert summary["passed"] > 100  # it did look at the objects
    assert not failures(report), "\n".join(failures(report))
    for skipped in report["results"]["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{skipped['check_id']} {skipped['resource']}: no reason given"


def test_checkov_passes_the_dockerfiles():
    files = [str(ROOT / "services" / name / "Dockerfile") for name in APPS]
    args = ["--framework", "dockerfile"]
    for path in files:
        args += ["--file", path]
    report = scan(*args)["dockerfile"]
    summary = report["summary"]
    print(f"dockerfile: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['skipped']} skipped")  # fmt: skip
    assert summary["passed"] >= 3 * 5
    assert not failures(report), "\n".join(failures(report))


def test_every_skip_in_the_manifests_has_a_reason():
    found = 0
    for path in (ROOT / "manifests").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text().replace("$namespace", "x")):
            annotations = ((doc or {}).get("metadata") or {}).get("annotations") or {}
            for key, value in annotations.items():
                if key.startswith("checkov.io/skip"):
                    found += 1
                    check, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_[A-Z0-9_]+", check), f"{path}: {value}"
                    assert len(reason.strip()) > 20, f"{path}: {check} skipped without a reason"
    for name in APPS:
        text = (ROOT / "services" / name / "Dockerfile").read_text()
        for check, reason in re.findall(r"# checkov:skip=(CKV2?_[A-Z0-9_]+):(.*)", text):
            found += 1
            assert len(reason.strip()) > 20, f"{name}: {check} is skipped without a reason"
    assert found, "no skip at all: then the other tests say everything passes by itself"
