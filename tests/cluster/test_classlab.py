"""The class lab on a real cluster: two student namespaces and kubeconfigs, every student
command of manifests/classlab/README.md run with the first student's kubeconfig, and each
request kubectl makes (``kubectl -v=6`` logs them) checked against the command's row of the
table. The second student's namespace refuses the first student.

Needs a cluster (kind in CI) with the lab's images loaded (``make cluster``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess

import pytest
import requests
import yaml

from lab_helpers import classlab, cluster, pods
from lab_helpers.commands import find_tool
from lab_helpers.wait import wait_for
from tests import rbac
from tests.cluster.kubectl import ROOT, run

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def students(kube, tmp_path_factory):
    """Two students' namespaces, labs (kind) and kubeconfigs; deleted at the end."""
    out = tmp_path_factory.mktemp("classlab")
    prefix = f"crypto-lab-t{secrets.token_hex(3)}-s"
    classlab.generate(2, out, prefix=prefix, cluster="kind")
    files = classlab.kubeconfigs(2, out, hours=1, prefix=prefix, context=kube.context)
    names = [f.parent.name for f in files]
    try:
        yield names, files, out
    finally:
        for name in names:
            with contextlib.suppress(AssertionError):
                run(f"kubectl delete namespace {name} --wait=false", context=kube.context)


@pytest.fixture(scope="module")
def rows() -> dict[str, rbac.Row]:
    return rbac.table()


# A Deployment's revision, which the deployment controller raises when it makes the new
# ReplicaSet of an update (single quotes keep jsonpath's escaped dots from the shell split).
REVISION = (
    "kubectl get deployment {name} -o "
    "'jsonpath={{.metadata.annotations.deployment\\.kubernetes\\.io/revision}}'"
)


def as_student(files, line: str, row: rbac.Row | None = None, check: bool = True):
    """Run ``line`` with the first student's kubeconfig (kubectl with ``-v=6``); when ``row``
    is given, every request kubectl made must be one the row lists."""
    if row is not None and line.startswith("kubectl "):
        line += " -v=6"
    done = run(line, kubeconfig=files[0], check=check)
    if row is not None:
        made = rbac.logged_needs(done.stderr)
        assert made or not line.startswith("kubectl "), f"no request logged by `{line}`"
        unlisted = sorted(made - row.needs)
        assert not unlisted, (
            f"`{line}` made requests the '{row.name}' row does not list: {unlisted}"
        )
    return done


def test_kubeconfigs_are_private_and_name_the_student_s_namespace(students):
    names, files, _ = students
    assert [f.parent.name for f in files] == names
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    config = yaml.safe_load(files[0].read_text())
    assert config["contexts"][0]["context"]["namespace"] == names[0]


def test_every_student_command_works_with_the_student_s_role(students, rows):
    names, files, out = students
    lab = out / names[0] / "lab"
    # secrets: the Python command (its API calls are checked offline, by inspection).
    done = as_student(files, "python -m lab_helpers.cluster secrets")
    assert "created" in done.stdout
    as_student(files, f"kubectl apply -k {lab}", rows["apply"])
    for workload, kind in pods.WORKLOADS.items():
        as_student(
            files, f"kubectl rollout status {kind.lower()}/{workload} --timeout=600s",
            rows["rollout status"] if kind == "Deployment" else None,
        )  # fmt: skip
    as_student(files, "kubectl get deployments,statefulsets,pods,services", rows["status"])
    logs = as_student(files, "kubectl logs deployment/api", rows["logs"])
    assert json.loads(logs.stdout.splitlines()[-1])
    as_student(files, "kubectl scale deployment ingest --replicas=3", rows["scale"])
    as_student(files, "kubectl rollout status deployment/ingest --timeout=300s")
    port_forward_as_student(files[0], rows["port-forward"])
    ingest = json.loads(as_student(files, "kubectl get pods -o json").stdout)["items"]
    victim = next(
        p["metadata"]["name"] for p in ingest if p["metadata"]["name"].startswith("ingest")
    )
    as_student(files, f"kubectl delete pod {victim}", rows["delete a pod"])
    revision = REVISION.format(name="ingest")
    before = int(as_student(files, revision).stdout or 0)
    as_student(
        files, "kubectl set image deployment/ingest ingest=lab-ingest:0.0.0-missing", rows["update"]
    )
    # rollout undo goes back from the newest ReplicaSet: wait until the controller made it.
    wait_for(lambda: int(as_student(files, revision).stdout or 0) > before, 60, "the new revision")
    as_student(files, "kubectl rollout undo deployment/ingest", rows["rollback"])
    as_student(
        files, "kubectl rollout status deployment/ingest --timeout=300s", rows["rollout status"]
    )
    as_student(files, f"kubectl delete -k {lab} --timeout=300s", rows["teardown"])
    as_student(
        files, "kubectl delete pvc,secret -l app.kubernetes.io/part-of=crypto-lab --timeout=300s",
        rows["teardown"],
    )  # fmt: skip
    left = as_student(files, "kubectl get pvc,secrets,deployments,statefulsets -o name")
    assert left.stdout.strip() == "", left.stdout


def port_forward_as_student(kubeconfig, row: rbac.Row) -> None:
    """``kubectl port-forward svc/api :8000 -v=6`` with the student's kubeconfig: the dashboard
    answers through it, and its requests are the row's."""
    import os
    import re

    from lab_helpers.commands import tool_path

    env = {**os.environ, "PATH": tool_path(), "KUBECONFIG": str(kubeconfig)}
    env.pop("LAB_KUBE_CONTEXT", None)
    proc = subprocess.Popen(
        [find_tool("kubectl"), "port-forward", "svc/api", ":8000", "-v=6"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/readyz", timeout=10).status_code == 200, 60, "api")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    made = rbac.logged_needs(stderr)
    assert made and not sorted(made - row.needs), sorted(made - row.needs)


def test_a_student_cannot_reach_another_student_s_namespace(students):
    names, files, _ = students
    refused = as_student(files, f"kubectl -n {names[1]} get pods", check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    cannot = as_student(files, f"kubectl auth can-i delete namespace/{names[0]}", check=False)
    assert cannot.stdout.strip() == "no"


def test_the_quota_is_the_teacher_s(students):
    names, files, _ = students
    quota = json.loads(as_student(files, "kubectl get resourcequota student-quota -o json").stdout)
    assert quota["spec"]["hard"]["requests.cpu"] == "900m"
    refused = as_student(files, "kubectl delete resourcequota student-quota", check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    assert cluster.DEFAULT_NAMESPACE not in names
