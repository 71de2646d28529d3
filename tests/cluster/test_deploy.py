"""The lab on a real Kubernetes cluster (kind in CI), through lab_helpers.cluster only.

One fresh namespace for the module: secrets, server-side apply of the kind overlay, rollout;
then ticks end to end (source -> NATS -> ingest -> InfluxDB -> api, read through a
port-forward, and the live stream), scaling the ingest workers, a rolling update and its
rollback, self-healing after a deleted pod, logs, and the teardown.

Needs a cluster with the lab's images loaded (see conftest.py); skipped without one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets

import pytest
import requests

from lab_helpers import cluster
from tests.services import StreamListener, wait_for

# Pulling the InfluxDB and NATS images and starting everything takes minutes on a fresh node.
pytestmark = pytest.mark.timeout(900)
OVERLAY = os.environ.get("LAB_CLUSTER_OVERLAY", "kind")


@pytest.fixture(scope="module")
def lab(kube):
    """The whole lab in a namespace of its own, deleted at the end."""
    namespace = f"crypto-lab-test-{secrets.token_hex(3)}"
    try:
        cluster.create_secrets(namespace)
        cluster.apply(OVERLAY, namespace)
        try:
            cluster.wait_for_rollout(namespace, timeout=600, show=False)
        except cluster.ClusterError:
            print(cluster.pods(namespace).to_string())  # shown by pytest when it fails
            raise
        yield namespace
    finally:
        with contextlib.suppress(cluster.ClusterError):
            cluster.teardown(namespace)  # nothing to do when the last test already did it


def stored_points(url: str) -> int:
    assets = requests.get(url + "/api/assets", timeout=10).json()["assets"]
    return sum(asset["points"] for asset in assets)


def ready_pods(namespace: str, app: str) -> int:
    pods = cluster.pods(namespace)
    pods = pods[(pods["app"] == app) & (pods["phase"] == "Running")]
    return sum(ready.split("/")[0] == ready.split("/")[1] for ready in pods["ready"])


def test_every_workload_is_rolled_out_and_ready(lab):
    status = cluster.status(lab)
    assert list(status["name"]) == list(cluster.WORKLOADS)
    assert status["state"].str.contains("rolled out|complete").all(), status.to_string()
    pods = cluster.pods(lab)
    assert set(pods["app"]) == set(cluster.WORKLOADS)
    assert (pods["phase"] == "Running").all() and (pods["reason"] == "").all(), pods.to_string()
    services = cluster.services(lab).set_index("name")
    assert services.loc["api", "ports"] == "8000→http/TCP"
    assert {"influxdb", "nats", "source", "ingest"} <= set(services.index)
    with pytest.raises(cluster.ClusterError, match="no external address"):
        cluster.external_address(lab, "api")
    # Applying again changes nothing and is accepted (server-side apply is idempotent).
    cluster.apply(OVERLAY, lab, dry_run=True)


def test_ticks_flow_from_the_source_to_the_browser(lab):
    with cluster.port_forward(lab, "api", 8000) as api:
        first = wait_for(lambda: stored_points(api.url), 180, "the first stored ticks", every=1)
        listener = StreamListener(api.url, count=3, timeout=60)
        received = listener.ticks
        listener.start()
        assert listener.connected.wait(30), "the live stream did not open"
        listener.join(timeout=90)  # the source replays one tick a second
        assert len(received) >= 3, "the live stream delivered no ticks"
        assert all(tick["price"] > 0 and tick["asset"] for tick in received)
        wait_for(lambda: stored_points(api.url) > first, 60, "more ticks to be stored", every=1)
        assert api.errors == []


def test_more_ingest_workers_share_the_stream(lab):
    before = cluster.scale("ingest", 3, lab)
    try:
        cluster.wait_for_rollout(lab, "ingest", timeout=300, show=False)
        assert ready_pods(lab, "ingest") == 3
        with cluster.port_forward(lab, "api", 8000) as api:
            count = stored_points(api.url)
            wait_for(
                lambda: stored_points(api.url) > count, 60, "ticks stored with 3 workers", every=1
            )
    finally:
        cluster.scale("ingest", before, lab)
    cluster.wait_for_rollout(lab, "ingest", timeout=300, show=False)
    wait_for(lambda: ready_pods(lab, "ingest") == before, 120, "the workers to scale back", every=1)


def test_a_rolling_update_and_its_rollback(lab):
    deployment = cluster.get("Deployment", "api", lab)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    revision = int(deployment["metadata"]["annotations"][cluster.REVISION])
    marker = {"crypto-lab/test-rollout": secrets.token_hex(4)}

    # The same image with a changed pod template: a new revision, rolled out pod by pod.
    cluster.set_image("api", container["name"], container["image"], lab, annotations=marker)
    cluster.wait_for_rollout(lab, "api", timeout=300, show=False)
    updated = cluster.get("Deployment", "api", lab)
    assert int(updated["metadata"]["annotations"][cluster.REVISION]) == revision + 1
    assert marker.items() <= updated["spec"]["template"]["metadata"]["annotations"].items()
    history = cluster.history("api", lab)
    assert list(history["revision"])[-2:] == [revision, revision + 1]
    assert history["change_cause"].iloc[-1].startswith("set image")

    # Back to the previous template: its ReplicaSet becomes the newest revision again.
    assert cluster.rollback("api", lab) == revision
    cluster.wait_for_rollout(lab, "api", timeout=300, show=False)
    rolled_back = cluster.get("Deployment", "api", lab)
    annotations = rolled_back["spec"]["template"]["metadata"].get("annotations") or {}
    assert "crypto-lab/test-rollout" not in annotations
    assert int(rolled_back["metadata"]["annotations"][cluster.REVISION]) == revision + 2
    with cluster.port_forward(lab, "api", 8000) as api:
        assert requests.get(api.url + "/readyz", timeout=10).status_code == 200


def test_a_deleted_worker_is_replaced(lab):
    timeline = cluster.delete_pod_and_watch(lab, "ingest", timeout=180)
    deleted = timeline["pod"].iloc[0]
    assert timeline["state"].iloc[0] == "delete requested"
    assert timeline["state"].iloc[-1] == "ready" and timeline["pod"].iloc[-1] != deleted
    assert 0 < timeline.attrs["recovered_after"] < 180
    assert list(timeline["seconds"]) == sorted(timeline["seconds"])


def test_influxdb_keeps_the_prices_when_its_pod_is_replaced(lab):
    with cluster.port_forward(lab, "api", 8000) as api:
        before = stored_points(api.url)
    timeline = cluster.delete_pod_and_watch(lab, "influxdb", timeout=300)
    # A StatefulSet's replacement has the same name and the same volume.
    assert set(timeline["pod"]) == {"influxdb-0"}
    cluster.wait_for_rollout(lab, ["influxdb", "api"], timeout=300, show=False)
    with cluster.port_forward(lab, "api", 8000) as api:
        wait_for(
            lambda: stored_points(api.url) >= before, 120, "the stored prices to be back", every=1
        )


def test_logs_of_the_services(lab):
    text = cluster.logs(lab, "api", tail=20)
    lines = text.splitlines()
    assert lines, "the api wrote no log lines"
    assert isinstance(json.loads(lines[-1]), dict)  # one JSON object per line
    # Following starts with the last lines (tail), then goes on as the pod writes.
    with cluster.logs(lab, "source", follow=True, tail=3, on_line=lambda pod, line: None) as live:
        wait_for(lambda: live.lines, 60, "followed log lines", every=1)
        assert live.running
    assert not live.running and live.errors == []


def test_teardown_removes_everything(lab):
    cluster.teardown(lab, timeout=300)
    with pytest.raises(cluster.MissingError):
        cluster.get("Namespace", lab)
