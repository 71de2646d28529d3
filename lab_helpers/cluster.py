"""Drive the lab on a Kubernetes cluster from Python: kind on your machine, or AKS on Azure.

Everything here talks to the Kubernetes API server with the official ``kubernetes`` Python
client (the same API that ``kubectl`` uses); only rendering the kustomize overlays runs a
program (``kubectl kustomize``), which works offline. In a notebook::

    from lab_helpers import cluster

    cluster.connect()                          # the current kube context (kind or AKS)
    cluster.create_secrets("crypto-lab")       # generated InfluxDB passwords, never printed
    cluster.apply("kind")                      # server-side apply of manifests/overlays/kind
    cluster.wait_for_rollout("crypto-lab")     # progress bar until every workload is ready
    cluster.pods("crypto-lab")                 # a DataFrame: phase, ready, restarts, age, node
    with cluster.port_forward("crypto-lab", "api", 8000) as fwd:
        requests.get(fwd.url + "/api/assets").json()

Command line (the manifests' README uses the first one)::

    python -m lab_helpers.cluster secrets [--namespace NS]
    python -m lab_helpers.cluster apply kind [--namespace NS] [--wait]
    python -m lab_helpers.cluster status [--namespace NS]
    python -m lab_helpers.cluster teardown [--namespace NS]

The object names (namespace ``crypto-lab``, Deployments ``source``/``ingest``/``api``,
StatefulSets ``influxdb``/``nats``, Secret ``influxdb-credentials``...) are the contract of
``docs/architecture.md``. The namespace of every function defaults to the one given to
:func:`connect`, else ``crypto-lab``.

The end of this module also holds :class:`Command`, the "show the command, run it only when
asked" machinery that :mod:`lab_helpers.azure`, :mod:`lab_helpers.images` and
:mod:`lab_helpers.helm` share for the tools around the cluster (``az``, ``docker``, ``kind``,
``helm``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import secrets
import select
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .config import ROLES, Credentials, Settings, load_settings, project_root
from .errors import LabError, command_line
from .stack import USERS

DEFAULT_NAMESPACE = "crypto-lab"
# Every object of the lab carries this label; teardown() deletes only namespaces that have it.
PART_OF = {"app.kubernetes.io/part-of": "crypto-lab"}
NAME_LABEL = "app.kubernetes.io/name"
# The name under which server-side apply records which fields the lab's manifests own.
FIELD_MANAGER = "crypto-lab"
SECRET_NAME = "influxdb-credentials"
SECRET_KEYS = tuple(f"{role}-{part}" for role in ROLES for part in ("user", "password"))
WORKLOADS = {
    "influxdb": "StatefulSet",
    "nats": "StatefulSet",
    "source": "Deployment",
    "ingest": "Deployment",
    "api": "Deployment",
}
MANIFESTS = project_root() / "manifests"
# Cluster-wide objects first, then what the workloads need, then the workloads.
APPLY_ORDER = (
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "StatefulSet",
    "Deployment",
)
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"

NO_CONTEXT = (
    "no Kubernetes context: create a local cluster with `kind create cluster`, or fetch the "
    "credentials of an AKS cluster with `az aks get-credentials --resource-group <group> "
    "--name <cluster>` (see docs/azure.md)"
)


class ClusterError(LabError):
    """The cluster, or a tool around it, cannot do what was asked; the message says why."""


class PendingAddressError(ClusterError):
    """A LoadBalancer Service has no external address yet."""


class MissingError(ClusterError):
    """An object the lab looked for does not exist (yet)."""


class ModeError(ClusterError):
    """A command that changes Azure or a cluster was asked to run outside cluster mode."""


class ToolMissingError(ClusterError):
    """A program the step needs (kubectl, az, docker, kind, helm) is not installed."""


class CommandError(ClusterError):
    """A command of an outside tool exited with an error."""


# -- connecting ------------------------------------------------------------------------------


def kubeconfig_paths(env: dict[str, str] | None = None) -> list[Path]:
    """The kubeconfig files, as kubectl finds them: ``$KUBECONFIG`` or ``~/.kube/config``."""
    env = os.environ if env is None else env
    if env.get("KUBECONFIG"):
        return [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def kube_context(env: dict[str, str] | None = None) -> str | None:
    """The kube context the lab uses: ``$LAB_KUBE_CONTEXT``, else the current context of the
    kubeconfig; ``None`` when there is none.

    It only reads files (no network, and without importing the Kubernetes client, which takes
    seconds), so it is a cheap "is there a cluster at all?" check.
    """
    env = os.environ if env is None else env
    if env.get("LAB_KUBE_CONTEXT"):
        return env["LAB_KUBE_CONTEXT"]
    for path in kubeconfig_paths(env):  # the first file that names one wins, as in kubectl
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("current-context"):
            return str(data["current-context"])
    return None


def _kubernetes():
    """The official client, imported on first use (it takes a few seconds to import)."""
    try:
        import kubernetes
    except ImportError:
        raise ClusterError(
            "the Kubernetes Python client is not installed: run `pip install kubernetes` "
            "(`pip install -e '.[notebooks]'` installs it with the rest of the lab)"
        ) from None
    return kubernetes


@dataclass
class Connection:
    """An open connection to a cluster: made by :func:`connect`, used by every function here.

    ``core`` and ``apps`` are the typed APIs (``CoreV1Api``, ``AppsV1Api``); ``dynamic`` is
    the dynamic client that applies any kind of object.
    """

    context: str
    namespace: str
    server: str
    version: str
    configuration: Any = field(repr=False)
    api_client: Any = field(repr=False)
    _dynamic: Any = field(default=None, repr=False)

    @property
    def core(self):
        return _kubernetes().client.CoreV1Api(self.api_client)

    @property
    def apps(self):
        return _kubernetes().client.AppsV1Api(self.api_client)

    @property
    def dynamic(self):
        if self._dynamic is None:  # discovery costs a few requests: only when first needed
            from kubernetes.dynamic import DynamicClient

            self._dynamic = DynamicClient(self.api_client)
        return self._dynamic


_current: Connection | None = None


def connect(
    context: str | None = None, namespace: str | None = None, *, timeout: float = 5.0
) -> Connection:
    """Connect to a cluster and make it the one every function of this module uses.

    ``context`` is a kube context name (``kubectl config get-contexts`` lists them); default:
    ``$LAB_KUBE_CONTEXT``, else the current context. Inside a pod (a JupyterHub on the
    cluster) it uses the pod's service account. ``namespace`` becomes the default namespace
    (else the context's namespace when it is a ``crypto-lab...`` one, else ``crypto-lab``).
    The API server must answer within ``timeout`` seconds.
    """
    global _current
    _kubernetes()
    from kubernetes import client, config

    context = context or os.environ.get("LAB_KUBE_CONTEXT") or None
    configuration, own_namespace = client.Configuration(), None
    # Read $KUBECONFIG now: the client reads it once, at import, which misses a change made
    # in a running notebook (os.environ["KUBECONFIG"] = ...).
    files = os.pathsep.join(str(path) for path in kubeconfig_paths())
    try:
        contexts, active = config.list_kube_config_contexts(config_file=files)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if chosen is None and not context:
            raise ClusterError(NO_CONTEXT)
        if chosen is None:
            names = ", ".join(sorted(c["name"] for c in contexts))
            raise ClusterError(f"there is no kube context {context!r}: use one of {names}")
        config.load_kube_config(
            config_file=files, context=chosen["name"], client_configuration=configuration
        )
        name, own_namespace = chosen["name"], chosen.get("context", {}).get("namespace")
    except config.ConfigException:
        if context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise ClusterError(NO_CONTEXT) from None
        config.load_incluster_config(client_configuration=configuration)
        name = "in-cluster"
        with contextlib.suppress(OSError):
            own_namespace = Path(
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
            ).read_text()
    api_client = client.ApiClient(configuration=configuration)
    try:
        version = _json(client.VersionApi(api_client).get_code, _request_timeout=timeout)
        version = version.get("gitVersion", "?")
    except _api_exception() as err:
        if err.status in (401, 403):
            raise ClusterError(
                f"the cluster of context {name!r} refused the credentials: fetch them again "
                "(AKS: `az aks get-credentials ... --overwrite-existing`)"
            ) from None
        raise ClusterError(f"the cluster of context {name!r} answered {err.status}") from None
    except Exception as err:  # urllib3 wraps refused, unreachable and TLS errors differently
        raise ClusterError(
            f"the cluster of context {name!r} ({configuration.host}) does not answer "
            f"({type(err).__name__}): check that it runs (kind: `kind get clusters`; "
            "AKS: `az aks show --resource-group <group> --name <cluster>`)"
        ) from None
    if namespace is None:
        namespace = (own_namespace or "").strip()
        if not namespace.startswith(DEFAULT_NAMESPACE):
            namespace = DEFAULT_NAMESPACE
    _current = Connection(name, namespace, configuration.host, version, configuration, api_client)
    return _current


def _conn() -> Connection:
    return _current if _current is not None else connect()


def _ns(namespace: str | None) -> str:
    return namespace or _conn().namespace


def _api_exception() -> type[Exception]:
    """The client's ApiException class (errors the API server answered with)."""
    _kubernetes()
    from kubernetes.client.rest import ApiException

    return ApiException


def _json(method: Callable, *args, **kwargs) -> dict:
    """Call a typed API method and return the raw JSON object the API server sent.

    Raw JSON has the field names of the Kubernetes reference and of ``kubectl get -o yaml``
    (``readyReplicas``, not ``ready_replicas``), and it does not depend on the client version.
    """
    resp = method(*args, _preload_content=False, **kwargs)
    return json.loads(resp.data or b"{}")


def _status(err: Exception) -> int | None:
    return getattr(err, "status", None)


def _message(err: Exception) -> str:
    """The API server's own explanation inside an ApiException."""
    body = getattr(err, "body", None)
    with contextlib.suppress(TypeError, ValueError):
        return json.loads(body).get("message") or str(err)
    return getattr(err, "reason", None) or str(err)


def _api_call(what: str, method: Callable, *args, raw: bool = False, **kwargs):
    """Call a typed API method: the raw JSON object (or with ``raw=True`` the bytes, for
    plain-text answers such as logs), with a refusal turned into one sentence."""
    try:
        resp = method(*args, _preload_content=False, **kwargs)
    except _api_exception() as err:
        raise ClusterError(f"{what}: the API server said {_message(err)}") from None
    return resp.data if raw else json.loads(resp.data or b"{}")


# -- rendering and applying ------------------------------------------------------------------


def find_tool(name: str) -> str:
    """The path of a command-line tool, or :class:`ToolMissingError` saying how to get it."""
    found = shutil.which(name)
    if not found:
        raise ToolMissingError(TOOL_HINTS.get(name, f"{name} is not installed: install it"))
    return found


def overlay_dir(overlay: str | Path) -> Path:
    """The folder of a kustomize overlay: a name (``kind``, ``aks``...) or a path."""
    path = Path(overlay)
    candidates = [path] if path.is_absolute() or path.exists() else []
    candidates += [MANIFESTS / "overlays" / str(overlay), MANIFESTS / str(overlay)]
    for folder in candidates:
        if any((folder / name).exists() for name in ("kustomization.yaml", "kustomization.yml")):
            return folder
    overlays = MANIFESTS / "overlays"
    names = sorted(p.name for p in overlays.iterdir() if p.is_dir()) if overlays.is_dir() else []
    raise ClusterError(
        f"there is no kustomize overlay {str(overlay)!r}: use one of "
        f"{', '.join(names) or '(none yet under manifests/overlays/)'}, or the path of a folder "
        "that holds a kustomization.yaml"
    )


def render(overlay: str | Path) -> list[dict]:
    """The objects of a kustomize overlay, as dicts: what ``kubectl kustomize`` prints.

    ``overlay`` is a name under ``manifests/overlays/`` (``kind``, ``aks``...) or a folder.
    Rendering needs no cluster.
    """
    folder = overlay_dir(overlay)
    try:
        command = [find_tool("kubectl"), "kustomize", str(folder)]
    except ToolMissingError:
        if not shutil.which("kustomize"):
            raise
        command = [shutil.which("kustomize"), "build", str(folder)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise ClusterError(
            f"kustomize cannot render {folder}: {lines[-1] if lines else 'no error text'}"
        )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def _apply_rank(obj: dict) -> int:
    kind = obj.get("kind", "")
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


def without(objects: Iterable[dict], apps: Iterable[str]) -> list[dict]:
    """The objects minus those of the given apps (by name or ``app.kubernetes.io/name``).

    ``without(render("kind"), ["nats"])`` drops the NATS StatefulSet and its Services, for
    when NATS comes from its Helm chart instead.
    """
    apps = set(apps)

    def belongs(obj: dict) -> bool:
        meta = obj.get("metadata", {})
        return meta.get("name") in apps or (meta.get("labels") or {}).get(NAME_LABEL) in apps

    return [obj for obj in objects if not belongs(obj)]


def apply(
    objects: str | Path | Iterable[dict],
    namespace: str | None = None,
    *,
    force: bool = False,
    exclude: Iterable[str] = (),
    registry: str | None = None,
    dry_run: bool = False,
) -> list[dict]:
    """Create or update objects with **server-side apply**, like ``kubectl apply --server-side``.

    ``objects`` is an overlay name (``"kind"``), a folder, or a list of object dicts (see
    :func:`render`). The API server merges each object into what runs and records that the
    field manager ``crypto-lab`` owns the fields it sets; applying again is harmless. When
    another manager changed such a field (``scale``, ``set_image``, a ``kubectl edit``), the
    server refuses with a conflict: ``force=True`` takes the fields over.

    ``namespace`` moves everything into that namespace (the Namespace object is renamed);
    default: the objects' own namespace. ``exclude`` leaves out the objects of those apps
    (name or ``app.kubernetes.io/name``), e.g. ``exclude=["nats"]`` when NATS comes from Helm.
    ``registry`` (an ACR name such as ``"cryptolab1a2b3c"``, or a registry host) replaces the
    registry of the lab's images (``lab-source``, ``lab-ingest``, ``lab-api``), so the aks
    overlay needs no editing. ``dry_run=True`` asks the server to check everything and store
    nothing.
    Returns the objects as the server stored them.
    """
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    if isinstance(objects, (str, Path)):
        objects = render(objects)
    items = [copy.deepcopy(o) for o in without(objects, exclude)]
    if registry:
        for obj in items:
            use_registry(obj, registry)
    conn = _conn()
    if namespace is not None and sum(o.get("kind") == "Namespace" for o in items) > 1:
        raise ClusterError(
            "these objects create several namespaces: apply them without namespace=..."
        )
    target = namespace or conn.namespace
    applied = []
    for obj in sorted(items, key=_apply_rank):
        kind, meta = obj.get("kind", "?"), obj.setdefault("metadata", {})
        if kind == "Namespace":
            if namespace is not None:
                meta["name"] = namespace
            meta["labels"] = {**(meta.get("labels") or {}), **PART_OF}  # so teardown knows it
        try:
            resource = conn.dynamic.resources.get(api_version=obj["apiVersion"], kind=kind)
        except (ResourceNotFoundError, KeyError):
            raise ClusterError(
                f"the cluster does not know the kind {kind} ({obj.get('apiVersion')}): is the "
                "extension that defines it installed?"
            ) from None
        where = {}
        if resource.namespaced:
            if namespace is not None or not meta.get("namespace"):
                meta["namespace"] = target
            where["namespace"] = meta["namespace"]
        options = {"force_conflicts": True} if force else {}
        if dry_run:
            options["dry_run"] = "All"
        label = f"{kind.lower()}{_group(obj['apiVersion'])}/{meta.get('name')}"
        try:
            result = conn.dynamic.patch(
                resource,
                body=obj,
                name=meta["name"],
                content_type="application/apply-patch+yaml",  # this is what makes it an apply
                field_manager=FIELD_MANAGER,
                **where,
                **options,
            )
        except _api_exception() as err:
            if kind == "Namespace" and namespace is not None and err.status == 403:
                # A class-lab student may not touch namespaces: the teacher created theirs.
                print(f"{label} skipped (created by your teacher; you may not change it)")
                continue
            raise _apply_error(label, err) from None
        print(f"{label} serverside-applied{' (dry run)' if dry_run else ''}")
        applied.append(result.to_dict())
    return applied


LAB_IMAGES = ("lab-source", "lab-ingest", "lab-api")


def registry_host(registry: str) -> str:
    """``cryptolab1a2b3c`` (an Azure Container Registry name) -> ``cryptolab1a2b3c.azurecr.io``;
    a host (``localhost:5001``, ``ghcr.io/me``) stays as it is."""
    return registry if "." in registry or ":" in registry else f"{registry}.azurecr.io"


def use_registry(obj: dict, registry: str) -> dict:
    """Point the lab's images in ``obj`` (a workload) at ``registry``, keeping name and tag.

    ``registry`` is an Azure Container Registry name (``cryptolab1a2b3c`` becomes
    ``cryptolab1a2b3c.azurecr.io``) or a registry host (``localhost:5001``). Other images
    (InfluxDB, NATS) are left alone. Changes ``obj`` in place and returns it.
    """
    host = registry_host(registry)
    pod_spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        repository = container.get("image", "").rsplit("/", 1)[-1]
        if repository.split(":")[0].split("@")[0] in LAB_IMAGES:
            container["image"] = f"{host}/{repository}"
    return obj


def _group(api_version: str) -> str:
    return "." + api_version.split("/")[0] if "/" in api_version else ""


def _apply_error(label: str, err: Exception) -> ClusterError:
    message, status = _message(err), _status(err)
    if status == 409:
        return ClusterError(
            f"{label}: another field manager changed fields this apply sets ({message}); "
            "run apply(..., force=True) to take them over (kubectl: --force-conflicts)"
        )
    if "being terminated" in message:
        return ClusterError(
            f"{label}: its namespace is still being deleted: wait until teardown() finishes, "
            "then apply again"
        )
    if status == 422:
        return ClusterError(f"{label} is not valid: {message}")
    return ClusterError(f"{label}: the API server refused it ({status}): {message}")


def get(kind: str, name: str, namespace: str | None = None, api_version: str | None = None) -> dict:
    """One object as the API server holds it (what ``kubectl get KIND NAME -o yaml`` shows).

    ``api_version`` (``"apps/v1"``) is needed only for a kind that several APIs define.
    """
    from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError

    conn = _conn()
    try:
        resource = conn.dynamic.resources.get(kind=kind, api_version=api_version)
    except ResourceNotFoundError:
        raise ClusterError(f"the cluster knows no kind {kind!r} (it is case-sensitive)") from None
    except ResourceNotUniqueError:
        raise ClusterError(f"several APIs define {kind!r}: pass api_version=...") from None
    where = {"namespace": _ns(namespace)} if resource.namespaced else {}
    try:
        return conn.dynamic.get(resource, name=name, **where).to_dict()
    except _api_exception() as err:
        if _status(err) == 404:
            raise MissingError(f"there is no {kind} {name!r} {_in(where)}") from None
        raise ClusterError(f"{kind} {name!r}: the API server said {_message(err)}") from None


def _in(where: dict) -> str:
    return f"in namespace {where['namespace']!r}" if where.get("namespace") else "in the cluster"


# -- secrets ---------------------------------------------------------------------------------


def _ensure_namespace(conn: Connection, namespace: str) -> None:
    """Create the namespace (labelled as the lab's) unless it exists; refuse one being deleted."""
    try:
        found = _json(conn.core.read_namespace, namespace)
    except _api_exception() as err:
        if _status(err) != 404:
            raise ClusterError(f"namespace {namespace!r}: {_message(err)}") from None
        body = {"metadata": {"name": namespace, "labels": PART_OF}}
        try:
            _json(conn.core.create_namespace, body, field_manager=FIELD_MANAGER)
        except _api_exception() as err:
            if _status(err) != 409:  # 409: someone made it meanwhile, which is fine
                raise ClusterError(
                    f"cannot create namespace {namespace!r}: {_message(err)} (in the class "
                    "lab, your teacher made yours: pass its name as namespace=...)"
                ) from None
        return
    if found.get("status", {}).get("phase") == "Terminating":
        raise ClusterError(
            f"namespace {namespace!r} is still being deleted: wait a minute (teardown), "
            "then run this again"
        )


def create_secrets(namespace: str | None = None) -> list[str]:
    """Create the Secret ``influxdb-credentials`` with generated passwords; keep existing ones.

    The Secret holds ``admin-user``, ``admin-password``, ``ingest-user``, ``ingest-password``,
    ``reader-user`` and ``reader-password`` (the same three InfluxDB users as the local stack).
    Passwords come from :mod:`secrets` and are never printed; run it again and nothing
    changes (a missing key is added). Creates the namespace when needed. Returns the keys.
    """
    conn, namespace = _conn(), _ns(namespace)
    _ensure_namespace(conn, namespace)
    try:
        existing = _json(conn.core.read_namespaced_secret, SECRET_NAME, namespace)
    except _api_exception() as err:
        if _status(err) != 404:
            raise ClusterError(f"secret {SECRET_NAME}: {_message(err)}") from None
        existing = None
    have = set((existing or {}).get("data") or {})
    missing = [key for key in SECRET_KEYS if key not in have]
    if not missing:
        print(f"secret/{SECRET_NAME} in {namespace} already has every key: kept as it is")
        return list(SECRET_KEYS)
    values = {key: _secret_value(key) for key in missing}
    if existing is None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": SECRET_NAME, "labels": PART_OF},
            "stringData": values,
        }
        _api_call(f"secret {SECRET_NAME}", conn.core.create_namespaced_secret, namespace, body)
        print(f"secret/{SECRET_NAME} created in {namespace} with keys {', '.join(missing)}")
    else:
        _api_call(
            f"secret {SECRET_NAME}",
            conn.core.patch_namespaced_secret,
            SECRET_NAME,
            namespace,
            {"stringData": values},
        )
        print(f"secret/{SECRET_NAME} in {namespace}: added keys {', '.join(missing)}")
    return list(SECRET_KEYS)


def _secret_value(key: str) -> str:
    role, part = key.rsplit("-", 1)
    # URL-safe characters only: the password travels in URLs and InfluxQL statements.
    return USERS[role] if part == "user" else secrets.token_urlsafe(24)


def credentials(role: str = "admin", namespace: str | None = None) -> Credentials:
    """The InfluxDB user ``role`` (admin, ingest, reader) stored in the cluster's Secret."""
    import base64

    if role not in ROLES:
        raise ClusterError(f"unknown InfluxDB role {role!r}: use one of {', '.join(ROLES)}")
    conn, namespace = _conn(), _ns(namespace)
    data = _api_call(
        f"secret {SECRET_NAME} in {namespace} (create it with create_secrets)",
        conn.core.read_namespaced_secret,
        SECRET_NAME,
        namespace,
    ).get("data", {})
    try:
        user, password = (
            base64.b64decode(data[f"{role}-{p}"]).decode() for p in ("user", "password")
        )
    except KeyError:
        raise ClusterError(
            f"secret {SECRET_NAME} has no {role} user: run create_secrets({namespace!r})"
        ) from None
    return Credentials(user, password)


# -- workloads and rollouts ------------------------------------------------------------------

_SNAKE = {"Deployment": "deployment", "StatefulSet": "stateful_set"}


def _method(conn: Connection, verb: str, kind: str, suffix: str = "") -> Callable:
    """``conn.apps.<verb>_namespaced_<kind><suffix>``, e.g. patch_namespaced_deployment_scale."""
    return getattr(conn.apps, f"{verb}_namespaced_{_SNAKE[kind]}{suffix}")


def _workload(conn: Connection, namespace: str, name: str) -> tuple[str, dict]:
    """(kind, object) of the Deployment or StatefulSet ``name``."""
    for kind in [WORKLOADS[name]] if name in WORKLOADS else ["Deployment", "StatefulSet"]:
        try:
            return kind, _json(_method(conn, "read", kind), name, namespace)
        except _api_exception() as err:
            if _status(err) != 404:
                raise ClusterError(f"{kind} {name!r}: {_message(err)}") from None
    raise MissingError(
        f"there is no Deployment or StatefulSet {name!r} in namespace {namespace!r}: "
        f"see cluster.status({namespace!r})"
    )


def rollout_state(kind: str, obj: dict) -> tuple[bool, str]:
    """(done, message) of a Deployment or StatefulSet, by the rules of ``kubectl rollout status``.

    Raises :class:`ClusterError` when a Deployment exceeded its progress deadline.
    """
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    name = meta.get("name", "?")
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return False, "waiting for the controller to see the new spec"
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if kind == "Deployment":
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                raise ClusterError(
                    f"deployment {name!r} exceeded its progress deadline: look at "
                    f"cluster.pods() and cluster.logs(..., {name!r}) to see why"
                )
        if updated < wanted:
            return False, f"{updated} of {wanted} new replicas updated"
        if status.get("replicas", 0) > updated:
            return False, f"{status['replicas'] - updated} old replicas pending termination"
        available = status.get("availableReplicas", 0)
        if available < updated:
            return False, f"{available} of {updated} updated replicas available"
        return True, "successfully rolled out"
    ready = status.get("readyReplicas", 0)
    if ready < wanted:
        return False, f"{ready} of {wanted} pods ready"
    partition = (spec.get("updateStrategy", {}).get("rollingUpdate") or {}).get("partition", 0)
    if partition:
        if updated < wanted - partition:
            return False, f"{updated} of {wanted - partition} pods updated (partitioned)"
        return True, "partitioned roll out complete"
    if status.get("updateRevision") != status.get("currentRevision"):
        return False, f"{updated} of {wanted} pods at the new revision"
    return True, f"rolling update complete: {ready} pods ready"


def _pod_problem(pod: dict) -> str:
    """Why a pod does not run, in the lab's words ("" when nothing is wrong)."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    statuses += pod.get("status", {}).get("initContainerStatuses") or []
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason, message = waiting.get("reason", ""), waiting.get("message", "")
        if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"):
            return (
                f"{reason}: the node has no image {cs.get('image')} and cannot pull it (kind: "
                "`python -m lab_helpers.images kind --run`; AKS: push it to your registry)"
            )
        if reason == "CreateContainerConfigError":
            hint = " (run `python -m lab_helpers.cluster secrets`)" if "secret" in message else ""
            return f"{reason}: {message}{hint}"
        if reason == "CrashLoopBackOff":
            return f"{reason}: {cs.get('name')} keeps crashing; read cluster.logs()"
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}"
    return ""


def _pods_of(conn: Connection, namespace: str, app: str) -> list[dict]:
    return _api_call(
        f"pods of {app}",
        conn.core.list_namespaced_pod,
        namespace,
        label_selector=f"{NAME_LABEL}={app}",
    )["items"]


def wait_for_rollout(
    namespace: str | None = None,
    names: Iterable[str] | str | None = None,
    timeout: float = 300.0,
    *,
    poll: float = 1.0,
    show: bool = True,
) -> pd.Series:
    """Wait until the workloads ``names`` (default: all five) are rolled out and ready.

    Shows a progress bar; reads each Deployment's and StatefulSet's status as
    ``kubectl rollout status`` does. Returns the seconds each one took. After ``timeout``
    seconds, :class:`ClusterError` says what is still missing and why (image not pulled,
    secret missing, crash loop...).
    """
    from tqdm.auto import tqdm

    conn, namespace = _conn(), _ns(namespace)
    names = [names] if isinstance(names, str) else list(names or WORKLOADS)
    start, took, pending = time.monotonic(), {}, dict.fromkeys(names, "not created yet")
    with tqdm(
        total=len(names), desc=f"rollout in {namespace}", unit="workload", disable=not show
    ) as bar:
        while True:
            for name in list(pending):
                try:
                    kind, obj = _workload(conn, namespace, name)
                except MissingError:
                    continue  # not created yet: apply may still be on its way
                done, message = rollout_state(kind, obj)
                if done:
                    took[name] = round(time.monotonic() - start, 1)
                    del pending[name]
                    bar.update(1)
                else:
                    problems = {_pod_problem(p) for p in _pods_of(conn, namespace, name)} - {""}
                    pending[name] = "; ".join([message, *sorted(problems)])
            if not pending:
                return pd.Series(took, name="seconds", dtype=float)
            if time.monotonic() - start > timeout:
                waiting = "; ".join(f"{n}: {m}" for n, m in pending.items())
                raise ClusterError(f"not rolled out after {timeout:.0f} s: {waiting}")
            bar.set_postfix_str(", ".join(f"{n}: {m}" for n, m in pending.items())[:150])
            time.sleep(poll)


def scale(name: str, replicas: int, namespace: str | None = None) -> int:
    """Set the number of replicas of a Deployment or StatefulSet; returns the previous one.

    Like ``kubectl scale``: it changes the ``scale`` subresource, so the field belongs to the
    manager ``crypto-lab-scale`` until the next ``apply(..., force=True)``.
    """
    if replicas < 0:
        raise ClusterError(f"replicas must be 0 or more, not {replicas}")
    conn, namespace = _conn(), _ns(namespace)
    kind, obj = _workload(conn, namespace, name)
    _api_call(
        f"scale {name}",
        _method(conn, "patch", kind, "_scale"),
        name,
        namespace,
        {"spec": {"replicas": int(replicas)}},
        field_manager=f"{FIELD_MANAGER}-scale",
    )
    before = obj.get("spec", {}).get("replicas", 1)
    print(f"{kind.lower()}/{name} scaled from {before} to {replicas}")
    bounds = _autoscaler_bounds(conn, namespace, kind, name)
    if bounds and not bounds[0] <= replicas <= bounds[1]:
        print(
            f"note: a HorizontalPodAutoscaler keeps {name} between {bounds[0]} and {bounds[1]} "
            "replicas, so it will move it back into that range"
        )
    return before


def _autoscaler_bounds(conn: Connection, namespace: str, kind: str, name: str):
    """(min, max) replicas of the HorizontalPodAutoscaler of a workload, or None."""
    api = _kubernetes().client.AutoscalingV2Api(conn.api_client)
    try:
        found = _json(api.list_namespaced_horizontal_pod_autoscaler, namespace)["items"]
    except _api_exception():
        return None  # not allowed to look (a class lab student): just no note
    for hpa in found:
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("kind") == kind and target.get("name") == name:
            return hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    return None


def _patch_template(
    name: str,
    namespace: str | None,
    *,
    cause: str,
    containers: list[dict] | None = None,
    annotations: dict[str, str] | None = None,
) -> int:
    """Patch the pod template of a workload (this starts a rollout); returns its generation."""
    conn, namespace = _conn(), _ns(namespace)
    kind, obj = _workload(conn, namespace, name)
    template: dict = {}
    if containers:
        known = {c["name"] for c in obj["spec"]["template"]["spec"]["containers"]}
        unknown = [c["name"] for c in containers if c["name"] not in known]
        if unknown:
            raise ClusterError(
                f"{name} has no container {unknown[0]!r}: its containers are "
                f"{', '.join(sorted(known))}"
            )
        template["spec"] = {"containers": containers}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    body = {"metadata": {"annotations": {CHANGE_CAUSE: cause}}, "spec": {"template": template}}
    # A strategic merge patch: containers are merged by name, the rest of the template stays.
    result = _api_call(
        f"update {name}",
        _method(conn, "patch", kind),
        name,
        namespace,
        body,
        field_manager=f"{FIELD_MANAGER}-rollout",
    )
    print(f"{kind.lower()}/{name}: {cause}")
    return result["metadata"]["generation"]


def set_image(
    name: str,
    container: str,
    image: str,
    namespace: str | None = None,
    *,
    annotations: dict[str, str] | None = None,
) -> int:
    """Change the image of one container of a workload, like ``kubectl set image``.

    This starts a rolling update (follow it with :func:`wait_for_rollout`; undo it with
    :func:`rollback`). ``annotations`` also sets pod-template annotations (any change of the
    template starts a rollout, even with the same image). Images need a tag that is not
    ``latest``. Returns the workload's new generation.
    """
    last = image.rsplit("/", 1)[-1]
    if "@" not in last and (":" not in last or last.endswith(":latest")):
        raise ClusterError(
            f"image {image!r} has no fixed tag: use a version tag such as "
            f"{image.split('@')[0].rsplit(':', 1)[0] if ':' in last else image}:0.1.0"
        )
    return _patch_template(
        name,
        namespace,
        containers=[{"name": container, "image": image}],
        annotations=annotations,
        cause=f"set image {container}={image}",
    )


def restart(name: str, namespace: str | None = None) -> int:
    """Replace every pod of a workload, one by one, like ``kubectl rollout restart``."""
    now = pd.Timestamp.now(tz="UTC").isoformat()
    return _patch_template(
        name,
        namespace,
        annotations={"kubectl.kubernetes.io/restartedAt": now},
        cause=f"restart at {now}",
    )


def _replica_sets(conn: Connection, namespace: str, deployment: dict) -> dict[int, dict]:
    """The ReplicaSets a Deployment owns, by revision number (its rollout history)."""
    labels = deployment["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    items = _api_call(
        "replica sets", conn.apps.list_namespaced_replica_set, namespace, label_selector=selector
    )["items"]
    uid = deployment["metadata"]["uid"]
    owned = {}
    for rs in items:
        if any(ref.get("uid") == uid for ref in rs["metadata"].get("ownerReferences") or []):
            revision = (rs["metadata"].get("annotations") or {}).get(REVISION)
            if revision:
                owned[int(revision)] = rs
    return owned


def history(name: str, namespace: str | None = None) -> pd.DataFrame:
    """The revisions of a Deployment, like ``kubectl rollout history``: revision, images,
    change cause, replicas, created."""
    conn, namespace = _conn(), _ns(namespace)
    deployment = _api_call(name, conn.apps.read_namespaced_deployment, name, namespace)
    rows = []
    for revision, rs in sorted(_replica_sets(conn, namespace, deployment).items()):
        containers = rs["spec"]["template"]["spec"]["containers"]
        rows.append(
            {
                "revision": revision,
                "replica_set": rs["metadata"]["name"],
                "images": ", ".join(c["image"] for c in containers),
                "change_cause": (rs["metadata"].get("annotations") or {}).get(CHANGE_CAUSE, ""),
                "replicas": rs.get("status", {}).get("replicas", 0),
                "created": pd.Timestamp(rs["metadata"]["creationTimestamp"]),
            }
        )
    columns = ["revision", "replica_set", "images", "change_cause", "replicas", "created"]
    return pd.DataFrame(rows, columns=columns)


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def rollback(name: str, namespace: str | None = None, revision: int | None = None) -> int:
    """Go back to an earlier pod template of a Deployment, like ``kubectl rollout undo``.

    Each revision of a Deployment is kept in a ReplicaSet (see :func:`history`). This finds
    the previous one (or ``revision``) and writes its pod template back into the Deployment,
    which starts a rolling update to it. Returns the revision it went back to.
    """
    conn, namespace = _conn(), _ns(namespace)
    dep = _api_call(name, conn.apps.read_namespaced_deployment, name, namespace)
    if dep["spec"].get("paused"):
        raise ClusterError(f"deployment {name!r} is paused: resume it before a rollback")
    kept = _replica_sets(conn, namespace, dep)
    current = int((dep["metadata"].get("annotations") or {}).get(REVISION, 0))
    if revision is None:
        earlier = [r for r in kept if r < current]
        if not earlier:
            raise ClusterError(
                f"deployment {name!r} has no earlier revision to go back to (it is at "
                f"revision {current})"
            )
        revision = max(earlier)
    elif revision not in kept:
        raise ClusterError(
            f"revision {revision} of {name!r} is not kept: choose one of "
            f"{', '.join(map(str, sorted(kept)))}"
        )
    template = copy.deepcopy(kept[revision]["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {}).pop("pod-template-hash", None)
    if _without_nulls(template) == _without_nulls(dep["spec"]["template"]):
        print(f"deployment.apps/{name}: already at the template of revision {revision}")
        return revision
    cause = f"rollback to revision {revision}"
    cause_path = "/metadata/annotations/" + CHANGE_CAUSE.replace("/", "~1")  # JSON-pointer escape
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "add", "path": cause_path, "value": cause},
    ]
    # A JSON patch (a list of operations) replaces the whole template at once.
    _api_call(
        f"rollback {name}",
        conn.apps.patch_namespaced_deployment,
        name,
        namespace,
        patch,
        field_manager=f"{FIELD_MANAGER}-rollout",
    )
    print(f"deployment.apps/{name} rolled back to revision {revision}")
    return revision


# -- looking at what runs --------------------------------------------------------------------


def _age(timestamp: str | None) -> pd.Timedelta:
    if not timestamp:
        return pd.NaT
    return (pd.Timestamp.now(tz="UTC") - pd.Timestamp(timestamp)).floor("s")


def _pod_ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pods(namespace: str | None = None) -> pd.DataFrame:
    """The pods of a namespace: name, app, phase, ready, restarts, age, node and, when
    something is wrong, the reason (image not pulled, crash loop, unschedulable...)."""
    conn, namespace = _conn(), _ns(namespace)
    rows = []
    for pod in _api_call("pods", conn.core.list_namespaced_pod, namespace)["items"]:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        meta, ready = pod["metadata"], sum(bool(s.get("ready")) for s in statuses)
        rows.append(
            {
                "name": meta["name"],
                "app": (meta.get("labels") or {}).get(NAME_LABEL, ""),
                "phase": "Terminating"
                if meta.get("deletionTimestamp")
                else pod["status"].get("phase"),
                "ready": f"{ready}/{len(pod['spec']['containers'])}",
                "restarts": sum(s.get("restartCount", 0) for s in statuses),
                "age": _age(meta.get("creationTimestamp")),
                "node": pod["spec"].get("nodeName", ""),
                "reason": _pod_problem(pod),
            }
        )
    columns = ["name", "app", "phase", "ready", "restarts", "age", "node", "reason"]
    return pd.DataFrame(rows, columns=columns)


def services(namespace: str | None = None) -> pd.DataFrame:
    """The Services of a namespace: name, type, cluster IP, external address, ports
    (``port→targetPort/protocol``)."""
    conn, namespace = _conn(), _ns(namespace)
    rows = []
    for svc in _api_call("services", conn.core.list_namespaced_service, namespace)["items"]:
        spec = svc["spec"]
        ingress = (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        external = ", ".join(i.get("ip") or i.get("hostname", "") for i in ingress)
        if spec.get("type") == "LoadBalancer" and not external:
            external = "<pending>"
        ports = ", ".join(
            f"{p['port']}→{p.get('targetPort', p['port'])}/{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        rows.append(
            {
                "name": svc["metadata"]["name"],
                "type": spec.get("type"),
                "cluster_ip": spec.get("clusterIP"),
                "external": external,
                "ports": ports,
            }
        )
    return pd.DataFrame(rows, columns=["name", "type", "cluster_ip", "external", "ports"])


def status(namespace: str | None = None) -> pd.DataFrame:
    """One line per workload of the lab: kind, ready, up to date, images and rollout state.

    Prints the cluster and namespace first; the pods' problems appear in ``state``.
    """
    conn, namespace = _conn(), _ns(namespace)
    print(
        f"cluster {conn.context} ({conn.server}, Kubernetes {conn.version}), namespace {namespace}"
    )
    rows = []
    for name in WORKLOADS:
        try:
            kind, obj = _workload(conn, namespace, name)
        except MissingError:
            rows.append({"name": name, "kind": WORKLOADS[name], "state": "not deployed"})
            continue
        st, containers = obj.get("status") or {}, obj["spec"]["template"]["spec"]["containers"]
        try:
            done, message = rollout_state(kind, obj)
        except ClusterError as err:
            done, message = False, str(err)
        problems = {_pod_problem(p) for p in _pods_of(conn, namespace, name)} - {""}
        rows.append(
            {
                "name": name,
                "kind": kind,
                "ready": f"{st.get('readyReplicas', 0)}/{obj['spec'].get('replicas', 1)}",
                "up_to_date": st.get("updatedReplicas", 0),
                "images": ", ".join(c["image"] for c in containers),
                "state": "; ".join([message, *sorted(problems)]) if not done else message,
            }
        )
    return pd.DataFrame(rows, columns=["name", "kind", "ready", "up_to_date", "images", "state"])


# -- logs ------------------------------------------------------------------------------------


def _pods_for(conn: Connection, namespace: str, name: str) -> list[str]:
    """Pod names for ``name``: that pod if it exists, else the pods of that app."""
    with contextlib.suppress(_api_exception()):
        return [_json(conn.core.read_namespaced_pod, name, namespace)["metadata"]["name"]]
    found = sorted(p["metadata"]["name"] for p in _pods_of(conn, namespace, name))
    if not found:
        raise ClusterError(
            f"there is no pod {name!r} and no pod of an app {name!r} in namespace "
            f"{namespace!r}: see cluster.pods({namespace!r})"
        )
    return found


def _lines(resp) -> Iterable[str]:
    """The lines of a streamed HTTP response, as they arrive."""
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


class LogStream:
    """Log lines of pods, read in background threads (``logs(..., follow=True)``).

    Each new line goes to ``on_line(pod, line)`` (default: print it) and into ``lines``
    (the last 10,000, as ``(pod, line)``). :meth:`stop` ends it; it is a context manager too.
    """

    def __init__(
        self,
        conn: Connection,
        namespace: str,
        pod_names: list[str],
        on_line: Callable[[str, str], None] | None,
        **options,
    ) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=10_000)
        self.errors: list[str] = []
        self._responses: list = []
        self._stopped = threading.Event()
        prefix = len(pod_names) > 1
        self._on_line = on_line or (lambda pod, line: print(f"[{pod}] {line}" if prefix else line))
        self._threads = [
            threading.Thread(
                target=self._follow,
                args=(conn, namespace, pod, options),
                daemon=True,
                name=f"logs {pod}",
            )
            for pod in pod_names
        ]
        for thread in self._threads:
            thread.start()

    def _follow(self, conn: Connection, namespace: str, pod: str, options: dict) -> None:
        try:
            resp = conn.core.read_namespaced_pod_log(
                pod, namespace, follow=True, _preload_content=False, **options
            )
            self._responses.append(resp)
            for line in _lines(resp):
                if self._stopped.is_set():
                    return
                self.lines.append((pod, line))
                self._on_line(pod, line)
        except Exception as err:  # the stream ends with an error when stop() closes it
            if not self._stopped.is_set():
                self.errors.append(f"{pod}: {type(err).__name__}: {_message(err)}")

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Stop following: close the streams and wait for the threads."""
        self._stopped.set()
        for resp in self._responses:
            with contextlib.suppress(Exception):
                getattr(resp, "shutdown", resp.close)()  # urllib3 >= 2.3 unblocks the reader
                resp.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> LogStream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LogStream {state}, {len(self.lines)} lines>"


def logs(
    namespace: str | None,
    name: str,
    follow: bool = False,
    tail: int | None = 100,
    *,
    container: str | None = None,
    on_line: Callable[[str, str], None] | None = None,
) -> str | LogStream:
    """The logs of a pod, or of every pod of an app (``"api"``), like ``kubectl logs``.

    Without ``follow``: the last ``tail`` lines of each pod as one string (each line
    prefixed with ``[pod]`` when there are several pods): ``print(cluster.logs(ns, "api"))``.
    With ``follow=True``: a :class:`LogStream` that prints new lines as they come, in a
    background thread, so the notebook stays usable; call ``.stop()`` to end it.
    """
    conn, namespace = _conn(), _ns(namespace)
    pod_names = _pods_for(conn, namespace, name)
    options = {
        k: v for k, v in {"tail_lines": tail, "container": container}.items() if v is not None
    }
    if follow:
        return LogStream(conn, namespace, pod_names, on_line, **options)
    parts = []
    for pod in pod_names:
        # Read raw: log lines are text, even when they look like JSON (ours do).
        data = _api_call(
            f"logs of {pod}", conn.core.read_namespaced_pod_log, pod, namespace, raw=True, **options
        )
        text = data.decode("utf-8", errors="replace").rstrip("\n")
        parts += [f"[{pod}] {line}" if len(pod_names) > 1 else line for line in text.splitlines()]
    return "\n".join(parts)


# -- self-healing ----------------------------------------------------------------------------


def _pod_state(pod: dict) -> str:
    """A short state for the timeline: terminating, ready, a waiting reason, or the phase."""
    if pod["metadata"].get("deletionTimestamp"):
        return "terminating"
    if _pod_ready(pod):
        return "ready"
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
    return (pod.get("status", {}).get("phase") or "pending").lower()


def delete_pod_and_watch(namespace: str | None, name: str, timeout: float = 180.0) -> pd.DataFrame:
    """Delete one pod and watch Kubernetes replace it: the timeline, until the new pod is ready.

    ``name`` is a pod or an app (then one of its ready pods is chosen). The Deployment or
    StatefulSet notices the missing pod and creates a new one: this is self-healing. Returns
    a DataFrame ``seconds, pod, state`` (seconds since the delete request); its
    ``attrs["recovered_after"]`` is when the new pod became ready.
    """
    conn, namespace = _conn(), _ns(namespace)
    pod_names = _pods_for(conn, namespace, name)
    chosen = [_json(conn.core.read_namespaced_pod, p, namespace) for p in pod_names]
    victim = next((p for p in chosen if _pod_ready(p)), chosen[0])
    app = (victim["metadata"].get("labels") or {}).get(NAME_LABEL)
    if not app:
        raise ClusterError(
            f"pod {victim['metadata']['name']!r} has no {NAME_LABEL} label to follow"
        )
    selector = f"{NAME_LABEL}={app}"
    listing = _api_call("pods", conn.core.list_namespaced_pod, namespace, label_selector=selector)
    before = {p["metadata"]["uid"] for p in listing["items"]}
    victim_uid, victim_name = victim["metadata"]["uid"], victim["metadata"]["name"]

    start = time.monotonic()
    _api_call(f"delete {victim_name}", conn.core.delete_namespaced_pod, victim_name, namespace)
    rows, last, recovered = [(0.0, victim_name, "delete requested")], {}, None
    # A watch: the API server sends every change of these pods from the listing's version on,
    # as one JSON event per line, until timeout_seconds.
    resp = conn.core.list_namespaced_pod(
        namespace,
        label_selector=selector,
        watch=True,
        resource_version=listing["metadata"]["resourceVersion"],
        timeout_seconds=max(1, int(timeout)),
        _preload_content=False,
    )
    try:
        for line in _lines(resp):
            event = json.loads(line)
            pod = event["object"]
            if event["type"] == "ERROR":  # e.g. the watch expired: the object is a Status
                raise ClusterError(f"watching the pods of {app} failed: {pod.get('message')}")
            uid = pod["metadata"]["uid"]
            if uid != victim_uid and uid in before:
                continue  # the other replicas are not part of this story
            state = "deleted" if event["type"] == "DELETED" else _pod_state(pod)
            if last.get(uid) != state:
                last[uid] = state
                rows.append((round(time.monotonic() - start, 2), pod["metadata"]["name"], state))
            if uid not in before and state == "ready":
                recovered = rows[-1][0]
                break
    finally:
        resp.close()
    timeline = pd.DataFrame(rows, columns=["seconds", "pod", "state"])
    if recovered is None:
        raise ClusterError(
            f"no new pod of {app} became ready within {timeout:.0f} s after deleting "
            f"{victim_name}: look at cluster.pods({namespace!r})"
        )
    timeline.attrs["recovered_after"] = recovered
    print(f"{victim_name} deleted; its replacement was ready after {recovered:.1f} s")
    return timeline


# -- port forwarding -------------------------------------------------------------------------


def _pump(local: socket.socket, remote, stop: threading.Event) -> None:
    """Copy bytes both ways until one side closes (or ``stop`` is set)."""
    ends = [local, remote]
    while not stop.is_set():
        readable, _, _ = select.select(ends, [], [], 0.25)
        for end in readable:
            data = end.recv(65536)
            if not data:
                return
            (remote if end is local else local).sendall(data)


class PortForward:
    """A local port on 127.0.0.1 whose connections are forwarded by ``connector``.

    For each TCP connection accepted locally, ``connector()`` opens the other end (a socket;
    in the lab, a stream through the Kubernetes API server into a pod, see
    :func:`port_forward`) and background threads copy the bytes both ways, so the notebook
    is never blocked. ``url`` is ``http://127.0.0.1:<port>``; :meth:`close` stops it; it is a
    context manager. Problems of single connections are kept in ``errors``. When the
    connector has a ``closed(remote)`` method, it is called after each connection and may
    return an error text.
    """

    def __init__(
        self, connector: Callable[[], Any], local_port: int = 0, *, description: str = ""
    ) -> None:
        self._connector = connector
        self.description = description
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._open: set = set()
        self._lock = threading.Lock()
        try:
            self._listener = socket.create_server(("127.0.0.1", local_port))
        except OSError as err:
            raise ClusterError(
                f"cannot listen on 127.0.0.1:{local_port} ({err.strerror}): choose another "
                "local_port, or 0 for any free one"
            ) from None
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._accept, daemon=True, name=f"port-forward {description}"
        )
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.25)
                if not ready:
                    continue
                local, _ = self._listener.accept()
            except (OSError, ValueError):  # the listener was closed by close()
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        try:
            remote = self._connector()
        except Exception as err:
            self.errors.append(f"cannot open the forwarded connection: {err}")
            local.close()
            return
        with self._lock:
            self._open.update((local, remote))
        try:
            _pump(local, remote, self._stop)
        except OSError as err:
            if not self._stop.is_set():
                self.errors.append(f"connection ended with {err}")
        finally:
            with self._lock:
                self._open.difference_update((local, remote))
            for end in (local, remote):
                with contextlib.suppress(OSError):
                    end.close()
            closed = getattr(self._connector, "closed", None)
            problem = closed(remote) if closed else None
            if problem:
                self.errors.append(problem)

    @property
    def active(self) -> bool:
        """True until :meth:`close`."""
        return not self._stop.is_set()

    def close(self) -> None:
        """Stop listening and close every forwarded connection."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            ends, self._open = list(self._open), set()
        for end in ends:
            with contextlib.suppress(OSError):
                end.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.active else "closed"
        return f"<PortForward {self.url} -> {self.description} ({state})>"


class _PodConnector:
    """Opens one port-forward stream per connection, to a ready pod behind ``target``.

    The pod is looked up again for every connection, so a forward to a Service keeps working
    after its pod was replaced (self-healing, a rolling update).
    """

    def __init__(self, conn: Connection, namespace: str, target: str, remote_port: int):
        k8s = _kubernetes()
        # A client of its own: kubernetes.stream swaps methods on the client it is given while
        # it opens the WebSocket, which must not disturb calls made by other threads.
        self._core = k8s.client.CoreV1Api(k8s.client.ApiClient(configuration=conn.configuration))
        self.namespace, self.remote_port = namespace, remote_port
        kind, _, name = target.rpartition("/")
        self.kind = {"": "", "svc": "service", "service": "service", "pod": "pod"}.get(kind)
        if self.kind is None:
            raise ClusterError(
                f"cannot forward to {target!r}: use 'NAME', 'svc/NAME' or 'pod/NAME'"
            )
        self.name = name
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[Any, int, str]] = {}

    def resolve(self) -> tuple[str, int]:
        """(pod, port): the pod to reach now, and the container port."""
        if self.kind in ("", "service"):
            try:
                svc = _json(self._core.read_namespaced_service, self.name, self.namespace)
            except _api_exception() as err:
                if _status(err) != 404 or self.kind == "service":
                    raise ClusterError(
                        f"there is no Service {self.name!r} in namespace {self.namespace!r}"
                    ) from None
            else:
                return self._behind(svc)
        pod = _api_call(
            f"pod {self.name!r} in namespace {self.namespace!r}",
            self._core.read_namespaced_pod,
            self.name,
            self.namespace,
        )
        return pod["metadata"]["name"], self.remote_port

    def _behind(self, svc: dict) -> tuple[str, int]:
        ports = svc["spec"].get("ports") or []
        port = next(
            (p for p in ports if self.remote_port in (p["port"], p.get("targetPort"))), None
        )
        if port is None:
            listed = ", ".join(str(p["port"]) for p in ports)
            raise ClusterError(
                f"Service {self.name!r} has no port {self.remote_port}: it has {listed}"
            )
        selector = ",".join(f"{k}={v}" for k, v in (svc["spec"].get("selector") or {}).items())
        listing = _json(self._core.list_namespaced_pod, self.namespace, label_selector=selector)
        candidates = listing["items"]
        ready = sorted(
            (p for p in candidates if _pod_ready(p)), key=lambda p: p["metadata"]["name"]
        )
        if not ready:
            raise ClusterError(
                f"no ready pod behind Service {self.name!r} yet: wait_for_rollout(), then retry"
            )
        pod, target = ready[0], port.get("targetPort", port["port"])
        if isinstance(target, str):  # a named port: look it up in the pod's containers
            named = {
                cp.get("name"): cp["containerPort"]
                for c in pod["spec"]["containers"]
                for cp in c.get("ports") or []
            }
            target = named.get(target)
            if target is None:
                raise ClusterError(
                    f"pod {pod['metadata']['name']} has no port named {port['targetPort']!r}"
                )
        return pod["metadata"]["name"], int(target)

    def __call__(self):
        from kubernetes.stream import portforward

        with self._lock:
            pod, port = self.resolve()
            try:
                forward = portforward(
                    self._core.connect_get_namespaced_pod_portforward,
                    pod,
                    self.namespace,
                    ports=str(port),
                )
            except _api_exception() as err:
                reason = str(getattr(err, "reason", err)).split(" -+-+- ")[0].strip()
                raise ClusterError(
                    f"the API server would not open {pod}:{port}: {reason}"
                ) from None
        remote = forward.socket(port)
        remote.setblocking(True)
        self._streams[id(remote)] = (forward, port, pod)
        return remote

    def closed(self, remote) -> str | None:
        """After a connection: the error the pod's side reported, if any."""
        forward, port, pod = self._streams.pop(id(remote), (None, 0, ""))
        if forward is None:
            return None
        error = forward.error(port)
        with contextlib.suppress(Exception):
            forward.close()
        return f"{pod}:{port}: {error}" if error else None


def port_forward(
    namespace: str | None, service_or_pod: str, remote_port: int, local_port: int = 0
) -> PortForward:
    """Reach a Service or pod of the cluster from this machine, like ``kubectl port-forward``.

    ``service_or_pod`` is ``"api"`` (a Service, else a pod of that name), ``"svc/api"`` or
    ``"pod/api-7c9..."``; ``remote_port`` a port of the Service (``80``) or of the container
    (``8000``). It listens on ``127.0.0.1:local_port`` (0: any free port) in a background
    thread, so the notebook is not blocked, and returns a :class:`PortForward` with ``.url``
    and ``.close()``::

        with cluster.port_forward("crypto-lab", "api", 8000) as fwd:
            requests.get(fwd.url + "/api/assets").json()
    """
    conn, namespace = _conn(), _ns(namespace)
    connector = _PodConnector(conn, namespace, service_or_pod, int(remote_port))
    pod, port = connector.resolve()  # fail now, with a clear message, if nothing is there
    forward = PortForward(
        connector, local_port, description=f"{service_or_pod}:{remote_port} in {namespace}"
    )
    print(f"forwarding {forward.url} -> {service_or_pod}:{remote_port} (pod {pod}, port {port})")
    return forward


def external_address(namespace: str | None = None, service: str = "api", wait: float = 0.0) -> str:
    """The public IP (or host name) of a LoadBalancer Service, e.g. the api on AKS.

    Azure needs a minute or three to create the public IP after the Service appears. While
    it is pending this raises :class:`PendingAddressError` (run the cell again), or waits up
    to ``wait`` seconds first. Then the dashboard is at ``http://<address>/``.
    """
    conn, namespace = _conn(), _ns(namespace)
    deadline = time.monotonic() + wait
    while True:
        svc = _api_call(
            f"Service {service!r} in namespace {namespace!r}",
            conn.core.read_namespaced_service,
            service,
            namespace,
        )
        if svc["spec"].get("type") != "LoadBalancer":
            raise ClusterError(
                f"Service {service!r} is of type {svc['spec'].get('type')}, so it has no external "
                f"address: use port_forward({namespace!r}, {service!r}, ...) instead"
            )
        for ingress in (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []:
            if ingress.get("ip") or ingress.get("hostname"):
                return ingress.get("ip") or ingress["hostname"]
        if time.monotonic() >= deadline:
            raise PendingAddressError(
                f"the external address of {service!r} is still pending: Azure is creating the "
                "public IP, usually 1-3 minutes; run this cell again (kind has no load "
                "balancer: use port_forward there)"
            )
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


# -- teardown --------------------------------------------------------------------------------


def teardown(namespace: str | None = None, timeout: float = 300.0) -> None:
    """Delete the lab's namespace and everything in it, and wait until it is gone.

    Deletes only namespaces labelled ``app.kubernetes.io/part-of=crypto-lab`` (those that
    :func:`apply` or :func:`create_secrets` made): never ``default`` or a system namespace.
    The volumes of the StatefulSets (the stored prices) go with it.
    """
    conn, namespace = _conn(), _ns(namespace)
    try:
        found = _json(conn.core.read_namespace, namespace)
    except _api_exception() as err:
        if _status(err) == 404:
            print(f"namespace {namespace} does not exist: nothing to delete")
            return
        raise ClusterError(f"namespace {namespace!r}: {_message(err)}") from None
    labels = found["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in PART_OF.items()):
        raise ClusterError(
            f"namespace {namespace!r} was not made by the lab (it lacks the label "
            "app.kubernetes.io/part-of=crypto-lab), so teardown leaves it alone"
        )
    _api_call(f"delete namespace {namespace}", conn.core.delete_namespace, namespace)
    print(f"namespace {namespace} is being deleted (with everything in it)...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _json(conn.core.read_namespace, namespace)
        except _api_exception() as err:
            if _status(err) == 404:
                print(f"namespace {namespace} is gone")
                return
            raise ClusterError(f"namespace {namespace!r}: {_message(err)}") from None
        time.sleep(1.0)
    raise ClusterError(
        f"namespace {namespace!r} is still terminating after {timeout:.0f} s: an object with a "
        f"finalizer holds it (`kubectl get all,pvc -n {namespace}` shows what is left)"
    )


# -- commands of the tools around the cluster (az, docker, kind, helm) -----------------------

TOOL_HINTS = {
    "kubectl": "kubectl is not installed: install it from https://kubernetes.io/docs/tasks/tools/ "
    "(or with `az aks install-cli`; Azure Cloud Shell has it)",
    "az": "the Azure CLI (az) is not installed: install it as "
    "https://learn.microsoft.com/cli/azure/install-azure-cli explains (Debian/Ubuntu: "
    "`curl -sL https://aka.ms/InstallAzureCLIDeb | sudo bash`), or use Azure Cloud Shell, "
    "where it is ready",
    "docker": "docker is not installed: install Docker Engine or Docker Desktop "
    "(https://docs.docker.com/get-docker/), or let Azure build the images with "
    "`python -m lab_helpers.images acr <registry>`",
    "kind": "kind is not installed: install it as "
    "https://kind.sigs.k8s.io/docs/user/quick-start/#installation explains "
    "(e.g. `brew install kind`, or its release binary)",
    "helm": "helm is not installed: install it with the official script (`curl -fsSL "
    "https://raw.githubusercontent.com/helm/helm/main/scripts/get-helm-3 | bash`) or a "
    "package manager (`brew install helm`, `snap install helm --classic`); Azure Cloud Shell "
    "already has it",
}


@dataclass
class Command:
    """One command line of an outside tool, built first and shown, run only when asked.

    ``args`` is the exact argument list (``args[0]`` is the tool); ``why`` says what it does;
    ``hints`` pairs a text that may appear in the output with what to do about it (used in
    the error when the command fails). After :meth:`execute`: ``returncode`` and ``output``
    (the last 200 lines).
    """

    args: tuple[str, ...]
    why: str = ""
    cwd: Path | None = None
    hints: tuple[tuple[str, str], ...] = ()
    returncode: int | None = None
    output: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.args = tuple(str(a) for a in self.args)

    @property
    def tool(self) -> str:
        return self.args[0]

    def __str__(self) -> str:
        return shlex.join(self.args)

    def show(self) -> None:
        """Print the command as you would type it."""
        print(f"$ {self}" + (f"    # {self.why}" if self.why else ""))

    def execute(self) -> Command:
        """Run it now, printing its output as it comes; :class:`CommandError` on failure.

        Prefer :func:`run_commands`, which checks the lab mode first.
        """
        argv = [find_tool(self.tool), *self.args[1:]]
        tail: deque[str] = deque(maxlen=200)
        proc = subprocess.Popen(
            argv,
            cwd=self.cwd or project_root(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail.append(line)
            self.returncode = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        self.output = "".join(tail)
        if self.returncode != 0:
            hint = next((h for text, h in self.hints if text.lower() in self.output.lower()), None)
            last = next((ln.strip() for ln in reversed(tail) if ln.strip()), "no output")
            raise CommandError(
                f"`{self}` failed with exit status {self.returncode}: {hint or last}"
            )
        return self


def run_commands(
    commands: Iterable[Command], run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Show each command; run them, in order, only when ``run=True`` **and** ``LAB_MODE=cluster``.

    Every command here changes something outside this machine's lab (Azure resources, a
    registry, a cluster), so showing is the default and running is a deliberate choice:
    ``LAB_MODE=local`` refuses with :class:`ModeError`, and a missing tool is reported
    (with how to install it) before anything runs.
    """
    commands = list(commands)
    for command in commands:
        command.show()
    if not run:
        print("(shown only: pass run=True, with LAB_MODE=cluster, to run it)")
        return commands
    settings = settings or load_settings()
    if settings.mode != "cluster":
        raise ModeError(
            f"these commands change Azure or a cluster, so they run only in cluster mode: set "
            f"LAB_MODE=cluster (it is {settings.mode!r} now) and run this again"
        )
    for tool in dict.fromkeys(c.tool for c in commands):
        find_tool(tool)
    for command in commands:
        command.execute()
    return commands


# -- command line ----------------------------------------------------------------------------


@command_line
def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--context", help="kube context (default: the current one)")
    common.add_argument("--namespace", "-n", help=f"namespace (default: {DEFAULT_NAMESPACE})")
    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.cluster", description="The lab on a Kubernetes cluster."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "secrets", parents=[common], help="create the InfluxDB credentials Secret (keeps it)"
    )
    applying = sub.add_parser("apply", parents=[common], help="server-side apply of an overlay")
    applying.add_argument("overlay", help="kind, aks... (manifests/overlays/) or a folder")
    applying.add_argument("--force", action="store_true", help="take over conflicting fields")
    applying.add_argument("--exclude", action="append", default=[], help="leave out an app")
    applying.add_argument("--registry", help="registry of the lab's images (an ACR name)")
    applying.add_argument("--dry-run", action="store_true", help="check, store nothing")
    applying.add_argument("--wait", action="store_true", help="wait for the rollout")
    sub.add_parser("status", parents=[common], help="workloads, pods and services")
    sub.add_parser("teardown", parents=[common], help="delete the namespace, wait until gone")
    args = parser.parse_args(argv)
    connect(args.context, args.namespace)
    if args.command == "secrets":
        create_secrets(args.namespace)
    elif args.command == "apply":
        options = {
            "force": args.force,
            "exclude": args.exclude,
            "dry_run": args.dry_run,
            "registry": args.registry,
        }
        apply(args.overlay, args.namespace, **options)
        if args.wait and not args.dry_run:
            wait_for_rollout(args.namespace)
    elif args.command == "status":
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            print(status(args.namespace).to_string(index=False))
            print()
            print(pods(args.namespace).to_string(index=False))
            print()
            print(services(args.namespace).to_string(index=False))
    elif args.command == "teardown":
        teardown(args.namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
