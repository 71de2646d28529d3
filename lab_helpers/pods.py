"""What runs on the cluster, as a program checks it: are the lab's pods ready, and if not, why;
how fast a deleted pod comes back. The official `kubernetes` client, read-only.

`kubectl get pods` shows the same to a person; a notebook or a test needs it as data:

    from lab_helpers import pods

    pods.pods("crypto-lab")                    # a DataFrame: ready, restarts, node, reason
    pods.wait_until_ready("crypto-lab")        # every workload's pods ready, or why not

    before = pods.watch("ingest", "crypto-lab")   # remember the ingest pods now
    # ... `kubectl -n crypto-lab delete pod <one of them>` in a %%cluster cell ...
    before.replacement()                       # when the new pod was created, scheduled, ready
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .cluster import NAME_LABEL, ClusterError, Connection, api_message, current
from .wait import wait_for

if TYPE_CHECKING:
    from kubernetes.client import V1Pod

# The lab's workloads (docs/architecture.md): each one's pods carry app.kubernetes.io/name.
WORKLOADS = {
    "influxdb": "StatefulSet",
    "nats": "StatefulSet",
    "source": "Deployment",
    "ingest": "Deployment",
    "api": "Deployment",
}
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def is_ready(pod: V1Pod) -> bool:
    """True when the pod's `Ready` condition is true and it is not being deleted."""
    if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def problem(pod: V1Pod) -> str:
    """Why a pod does not run, in one sentence with what to do ("" when nothing is wrong)."""
    status = pod.status
    if status is None:
        return ""
    for cs in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is None or not waiting.reason:
            continue
        reason, message = waiting.reason, waiting.message or ""
        if reason in PULL_FAILURES:
            return (
                f"{reason}: the node has no image {cs.image} and cannot pull it (kind: `make "
                "cluster` loads the images; AKS: push them to your registry, or use the "
                "prebuilt ones)"
            )
        if reason == "CreateContainerConfigError":
            hint = " (run `python -m lab_helpers.cluster secrets`)" if "secret" in message else ""
            return f"{reason}: {message}{hint}"
        if reason == "CrashLoopBackOff":
            return f"{reason}: {cs.name} keeps crashing; read `kubectl logs --previous`"
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"{cond.reason or 'Unschedulable'}: {cond.message or ''}".rstrip(": ")
    return ""


def _list(conn: Connection, namespace: str, selector: str | None = None) -> list[V1Pod]:
    from kubernetes.client import ApiException

    try:
        return list(conn.core.list_namespaced_pod(namespace, label_selector=selector).items)
    except ApiException as err:
        raise ClusterError(
            f"pods in {namespace!r}: the API server said {api_message(err)}"
        ) from None


def pods(namespace: str | None = None) -> pd.DataFrame:
    """The pods of a namespace: name, app, phase, ready, restarts, node and, when something is
    wrong, the reason (image not pulled, Secret missing, crash loop, unschedulable...)."""
    conn = current()
    rows = []
    for pod in _list(conn, namespace or conn.namespace):
        meta, status, spec = pod.metadata, pod.status, pod.spec
        statuses = (status.container_statuses if status else None) or []
        containers = len(spec.containers) if spec else 0
        terminating = meta is not None and meta.deletion_timestamp is not None
        rows.append(
            {
                "name": meta.name if meta else "",
                "app": ((meta.labels if meta else None) or {}).get(NAME_LABEL, ""),
                "phase": "Terminating" if terminating else (status.phase if status else ""),
                "ready": f"{sum(bool(s.ready) for s in statuses)}/{containers}",
                "restarts": sum(s.restart_count or 0 for s in statuses),
                "node": (spec.node_name if spec else None) or "",
                "reason": problem(pod),
            }
        )
    columns = ["name", "app", "phase", "ready", "restarts", "node", "reason"]
    return pd.DataFrame(rows, columns=columns)


def wait_until_ready(
    namespace: str | None = None,
    apps: Iterable[str] | None = None,
    timeout: float = 300.0,
    *,
    poll: float = 2.0,
) -> pd.DataFrame:
    """Wait until every pod of each app (default: the lab's five workloads) is ready and none
    is terminating; returns `pods`. After `timeout` seconds, `ClusterError`
    says what is still missing and why (image not pulled, Secret missing, crash loop...)."""
    conn = current()
    namespace = namespace or conn.namespace
    wanted = list(apps or WORKLOADS)
    missing: dict[str, str] = {}  # app -> why it is not ready, as last seen

    def all_ready() -> bool:
        missing.clear()
        for app in wanted:
            found = _list(conn, namespace, f"{NAME_LABEL}={app}")
            if not found:
                missing[app] = "no pod yet"
            elif not all(is_ready(p) for p in found):
                reasons = sorted({problem(p) for p in found} - {""})
                waiting = sum(not is_ready(p) for p in found)
                missing[app] = "; ".join([f"{waiting} of {len(found)} not ready", *reasons])
        return not missing

    def still_missing() -> str:
        waiting_for = "; ".join(f"{app}: {why}" for app, why in missing.items())
        return f"the pods in {namespace} to be ready ({waiting_for})"

    wait_for(all_ready, timeout, still_missing, every=poll, error=ClusterError)
    return pods(namespace)


def _time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


class PodWatch:
    """The pods of one app at one moment, to follow what happens to them afterwards.

    Made by `watch`. `replacement` then follows the API server's events from that
    moment on (a Kubernetes *watch* from the listing's resource version), so nothing that
    happened in between is missed, however long the cells in between took.
    """

    def __init__(self, conn: Connection, namespace: str, app: str) -> None:
        from kubernetes.client import ApiException

        self.conn, self.namespace, self.app = conn, namespace, app
        self.selector = f"{NAME_LABEL}={app}"
        try:
            listing = conn.core.list_namespaced_pod(namespace, label_selector=self.selector)
        except ApiException as err:
            raise ClusterError(f"pods of {app}: the API server said {api_message(err)}") from None
        self.resource_version = listing.metadata.resource_version if listing.metadata else None
        # A pod already on its way out (after a scale-down, say) is not one to delete: no
        # replacement would come for it.
        self.before: dict[str, str] = {
            str(p.metadata.uid): str(p.metadata.name)
            for p in listing.items
            if p.metadata is not None and p.metadata.deletion_timestamp is None
        }
        if not self.before:
            raise ClusterError(f"there is no pod of {app} in namespace {namespace!r} to watch")

    @property
    def names(self) -> list[str]:
        """The pods as they were when the watch was made, sorted by name."""
        return sorted(self.before.values())

    def replacement(self, timeout: float = 180.0) -> pd.DataFrame:
        """Follow the pods until one that was not there before is ready; the timeline.

        A DataFrame `seconds, pod, event`: seconds after the delete request, from the API
        server's own timestamps (the deleted pod's deletion time minus its grace period; the
        new pod's creation, scheduling and readiness). `attrs["recovered_after"]` is when the
        new pod became ready. Call it after deleting a pod (`kubectl delete pod NAME`).
        """
        from kubernetes import watch as k8s_watch
        from kubernetes.client import ApiException, V1Pod

        deleted: dict[str, datetime] = {}
        events = k8s_watch.Watch().stream(
            self.conn.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
            resource_version=self.resource_version,
            timeout_seconds=max(1, int(timeout)),
        )
        try:
            for event in events:
                pod = event.get("object") if event else None
                meta = pod.metadata if isinstance(pod, V1Pod) else None
                if pod is None or meta is None or meta.uid is None:
                    continue
                if meta.uid in self.before:
                    stamp = _time(meta.deletion_timestamp)
                    if stamp is not None and meta.uid not in deleted:
                        grace = pd.Timedelta(seconds=meta.deletion_grace_period_seconds or 0)
                        deleted[meta.uid] = stamp - grace
                    continue
                if isinstance(pod, V1Pod) and is_ready(pod) and deleted:
                    return self._timeline(deleted, pod)
        except ApiException as err:
            # 410 Gone: the API server keeps events for a few minutes only.
            raise ClusterError(
                f"the events of {self.app}'s pods since the watch began are no longer kept "
                f"({api_message(err)}): call pods.watch() again just before deleting the pod"
            ) from None
        finally:
            close = getattr(events, "close", None)  # ends the HTTP stream of the watch
            if close is not None:
                close()
        if not deleted:
            raise ClusterError(
                f"no pod of {self.app} was deleted within {timeout:.0f} s: delete one first "
                f"(`kubectl -n {self.namespace} delete pod {self.names[0]}`)"
            )
        raise ClusterError(
            f"no new pod of {self.app} became ready within {timeout:.0f} s: look at "
            f"`kubectl -n {self.namespace} get pods` and `kubectl describe pod`"
        )

    def _timeline(self, deleted: dict[str, datetime], new: V1Pod) -> pd.DataFrame:
        uid, start = min(deleted.items(), key=lambda item: item[1])
        rows: list[tuple[datetime, str | None, str]] = [
            (start, self.before[uid], "delete requested")
        ]
        meta, status = new.metadata, new.status
        assert meta is not None
        created = _time(meta.creation_timestamp)
        if created is not None:
            rows.append((created, meta.name, "created"))
        order = {"PodScheduled": "scheduled", "ContainersReady": "containers started"}
        for cond in (status.conditions if status else None) or []:
            stamp = _time(cond.last_transition_time)
            if cond.type in order and cond.status == "True" and stamp is not None:
                rows.append((stamp, meta.name, order[cond.type]))
        ready = next(
            stamp
            for c in (status.conditions if status else None) or []
            if c.type == "Ready"
            and c.status == "True"
            and (stamp := _time(c.last_transition_time)) is not None
        )
        rows.append((ready, meta.name, "ready"))
        timeline = pd.DataFrame(
            [((at - start).total_seconds(), pod, what) for at, pod, what in rows],
            columns=["seconds", "pod", "event"],
        ).sort_values("seconds", kind="stable", ignore_index=True)
        timeline.attrs["recovered_after"] = (ready - start).total_seconds()
        return timeline


def watch(app: str, namespace: str | None = None) -> PodWatch:
    """Remember the pods of `app` now, to follow what happens to them (see `PodWatch`)."""
    conn = current()
    return PodWatch(conn, namespace or conn.namespace, app)


def external_address(namespace: str | None = None, service: str = "api", wait: float = 0.0) -> str:
    """The public IP (or host name) of a LoadBalancer Service, e.g. the api on AKS.

    Azure needs a minute or three to create the public IP after the Service appears; this
    waits up to `wait` seconds, then says it is still pending (run it again). Then the
    dashboard is at `http://<address>/`.
    """
    from kubernetes.client import ApiException

    conn = current()
    namespace = namespace or conn.namespace

    def address() -> str | None:
        try:
            svc = conn.core.read_namespaced_service(service, namespace)
        except ApiException as err:
            raise ClusterError(
                f"Service {service!r}: the API server said {api_message(err)}"
            ) from None
        kind = svc.spec.type if svc.spec else None
        if kind != "LoadBalancer":
            raise ClusterError(
                f"Service {service!r} is of type {kind}, so it has no external address: use "
                f"`kubectl -n {namespace} port-forward svc/{service} 8000:8000` instead"
            )
        balancer = svc.status.load_balancer if svc.status else None
        for ingress in (balancer.ingress if balancer else None) or []:
            if ingress.ip or ingress.hostname:
                return str(ingress.ip or ingress.hostname)
        return None

    found = wait_for(address, wait, every=5.0, error=None)
    if not found:
        raise ClusterError(
            f"the external address of {service!r} is still pending: Azure is creating the "
            "public IP, usually 1-3 minutes; run this again"
        )
    return found
