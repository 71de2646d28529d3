"""The lab on a real Kubernetes cluster (kind in CI), driven as a person drives it: kubectl.

One fresh namespace for the module: ``kubectl apply -k``, the InfluxDB Secret, the rollouts;
then ticks end to end (source -> NATS -> ingest -> InfluxDB -> api, read through a
``kubectl port-forward``, and the live stream), ``kubectl scale``, a rolling update to a
broken image and ``kubectl rollout undo``, self-healing after ``kubectl delete pod`` (timed by
the API server's own timestamps), ``kubectl logs``, and ``kubectl delete -k``.

Needs a cluster with the lab's images loaded (``make cluster``); skipped without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets

import pytest
import requests

from lab_helpers import cluster, pods
from lab_helpers.forward import port_forward
from lab_helpers.wait import wait_for
from tests.cluster.kubectl import kustomization, run
from tests.services import StreamListener

# Pulling the InfluxDB and NATS images and starting everything takes minutes on a fresh node.
pytestmark = pytest.mark.timeout(900)
OVERLAY = os.environ.get("LAB_CLUSTER_OVERLAY", "kind")


@pytest.fixture(scope="module")
def lab(kube, tmp_path_factory):
    """The whole lab in a namespace of its own, deleted at the end."""
    namespace = f"crypto-lab-test-{secrets.token_hex(3)}"
    folder = kustomization(tmp_path_factory.mktemp("lab"), namespace, OVERLAY)
    try:
        run(f"kubectl create namespace {namespace}", context=kube.context)
        cluster.create_secrets(namespace)
        run(f"kubectl apply -k {folder}", context=kube.context)
        try:
            pods.wait_until_ready(namespace, timeout=600)
        except cluster.ClusterError:
            print(pods.pods(namespace).to_string())  # shown by pytest when it fails
            raise
        yield namespace, folder
    finally:
        with contextlib.suppress(AssertionError):
            run(f"kubectl delete namespace {namespace} --wait=false", context=kube.context)


def kubectl(lab, line: str, **kw):
    namespace, _ = lab
    return run(f"kubectl -n {namespace} {line}", context=cluster.current().context, **kw)


def stored_points(url: str) -> int:
    assets = requests.get(url + "/api/assets", timeout=10).json()["assets"]
    return sum(asset["points"] for asset in assets)


def test_every_workload_is_ready_and_applying_again_changes_nothing(lab):
    namespace, folder = lab
    table = pods.pods(namespace)
    assert set(table["app"]) == set(pods.WORKLOADS)
    assert (table["phase"] == "Running").all() and (table["reason"] == "").all(), table
    services = json.loads(kubectl(lab, "get services -o json").stdout)["items"]
    ports = {s["metadata"]["name"]: [p["port"] for p in s["spec"]["ports"]] for s in services}
    assert ports["api"] == [8000] and ports["influxdb"] == [8086] and 4222 in ports["nats"]
    # `kubectl diff` asks the API server what an apply would change: nothing (exit 0).
    diff = run(f"kubectl diff -k {folder}", context=cluster.current().context, check=False)
    assert diff.returncode == 0, diff.stdout


def test_ticks_flow_from_the_source_to_the_browser(lab):
    namespace, _ = lab
    with port_forward("svc/api", 8000, namespace, context=cluster.current().context) as api:
        first = wait_for(lambda: stored_points(api.url), 180, "the first stored ticks", every=1)
        listener = StreamListener(api.url, count=3, timeout=60)
        received = listener.ticks
        listener.start()
        assert listener.connected.wait(30), "the live stream did not open"
        listener.join(timeout=90)  # the source replays one tick a second
        assert len(received) >= 3, "the live stream delivered no ticks"
        assert all(tick["price"] > 0 and tick["asset"] for tick in received)
        wait_for(lambda: stored_points(api.url) > first, 60, "more ticks to be stored", every=1)


def ready(namespace: str, app: str) -> int:
    table = pods.pods(namespace)
    table = table[(table["app"] == app) & (table["phase"] == "Running")]
    return sum(r.split("/")[0] == r.split("/")[1] for r in table["ready"])


def test_kubectl_scale_adds_workers_that_share_the_stream(lab):
    namespace, _ = lab
    kubectl(lab, "scale deployment ingest --replicas=3")
    kubectl(lab, "rollout status deployment/ingest --timeout=300s")
    assert ready(namespace, "ingest") == 3
    with port_forward("svc/api", 8000, namespace, context=cluster.current().context) as api:
        count = stored_points(api.url)
        wait_for(lambda: stored_points(api.url) > count, 60, "ticks stored by 3 workers", every=1)
    kubectl(lab, "scale deployment ingest --replicas=2")
    wait_for(lambda: ready(namespace, "ingest") == 2, 120, "two workers again", every=1)


def test_a_broken_update_is_undone_by_rollout_undo(lab):
    namespace, _ = lab
    revision = json.loads(kubectl(lab, "get deployment api -o json").stdout)["metadata"][
        "annotations"
    ]["deployment.kubernetes.io/revision"]
    kubectl(lab, "set image deployment/api api=lab-api:0.0.0-missing")

    def bad_pod_reason() -> str:
        return " ".join(pods.pods(namespace).query("app == 'api'")["reason"])

    reason = wait_for(bad_pod_reason, 120, "the new api pod to fail", every=1)
    assert "ErrImageNeverPull" in reason or "ImagePull" in reason, reason
    assert ready(namespace, "api") == 1  # the old pod still serves (maxUnavailable: 0)
    kubectl(lab, "rollout undo deployment/api")
    kubectl(lab, "rollout status deployment/api --timeout=300s")
    history = kubectl(lab, "rollout history deployment/api").stdout
    assert str(int(revision) + 2) in history, history
    with port_forward("svc/api", 8000, namespace, context=cluster.current().context) as api:
        assert requests.get(api.url + "/readyz", timeout=10).status_code == 200


def test_a_deleted_worker_is_replaced(lab):
    namespace, _ = lab
    before = pods.watch("ingest", namespace)
    victim = before.names[0]
    kubectl(lab, f"delete pod {victim}")
    timeline = before.replacement(timeout=180)
    assert timeline["event"].iloc[0] == "delete requested" and timeline["pod"].iloc[0] == victim
    assert timeline["event"].iloc[-1] == "ready" and timeline["pod"].iloc[-1] != victim
    assert 0 <= timeline.attrs["recovered_after"] < 180
    assert list(timeline["seconds"]) == sorted(timeline["seconds"])


def test_influxdb_keeps_the_prices_when_its_pod_is_replaced(lab):
    namespace, _ = lab
    with port_forward("svc/api", 8000, namespace, context=cluster.current().context) as api:
        before = stored_points(api.url)
    watch = pods.watch("influxdb", namespace)
    kubectl(lab, "delete pod influxdb-0")
    timeline = watch.replacement(timeout=300)
    assert set(timeline["pod"]) == {"influxdb-0"}  # a StatefulSet's pod keeps its name
    pods.wait_until_ready(namespace, ["influxdb", "api"], timeout=300)
    with port_forward("svc/api", 8000, namespace, context=cluster.current().context) as api:
        wait_for(lambda: stored_points(api.url) >= before, 120, "the stored prices", every=1)


def test_kubectl_logs_shows_the_services_json_lines(lab):
    lines = kubectl(lab, "logs deployment/api --tail=20").stdout.splitlines()
    assert lines, "the api wrote no log lines"
    assert isinstance(json.loads(lines[-1]), dict)  # one JSON object per line


def test_delete_k_removes_everything(lab):
    namespace, folder = lab
    run(f"kubectl delete -k {folder} --timeout=300s", context=cluster.current().context)
    gone = run(f"kubectl get namespace {namespace}", context=cluster.current().context, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
