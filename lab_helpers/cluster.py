"""The lab on a Kubernetes cluster (kind, AKS, a class lab's namespace): what a *program* checks.

What a person does to a cluster, a person types: `kubectl apply -k`, `kubectl scale`,
`kubectl logs`, `kubectl rollout undo` (the notebooks' `%%cluster` cells,
`lab_helpers.shell`). What a program must know, it asks the API server with the official
`kubernetes` client, here and in the modules beside this one:

- this module: the connection (`connect`, the current kube context) and the InfluxDB
  Secret with generated passwords (`create_secrets`), which no file may hold;
- `lab_helpers.pods`: are the pods ready, why not, and how fast a deleted pod comes back;
- `lab_helpers.forward`: a `kubectl port-forward` in the background, for a program that
  needs to reach a Service;
- `lab_helpers.manifests`: the manifests rendered offline (`kubectl kustomize`).

In a notebook:

    from lab_helpers import cluster, pods

    cluster.connect()                        # the current kube context (kind or AKS)
    cluster.create_secrets("crypto-lab")     # generated InfluxDB passwords, never printed
    pods.wait_until_ready("crypto-lab")      # every pod of the lab ready, or why not

Command line (the class lab's students run the first one with their own kubeconfig):

    python -m lab_helpers.cluster secrets [--namespace NS] [--context CTX]
    python -m lab_helpers.cluster pods [--namespace NS] [--context CTX]

The object names (namespace `crypto-lab`, Secret `influxdb-credentials`...) are the contract
of `docs/architecture.md`. The namespace of every function defaults to the one given to
`connect`, else `crypto-lab`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import ROLES, Credentials
from .errors import LabError, command_line
from .stack import USERS

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

DEFAULT_NAMESPACE = "crypto-lab"
# Every object of the lab carries this label (manifests/base/kustomization.yaml).
PART_OF = {"app.kubernetes.io/part-of": "crypto-lab"}
NAME_LABEL = "app.kubernetes.io/name"
SECRET_NAME = "influxdb-credentials"
SECRET_KEYS = tuple(f"{role}-{part}" for role in ROLES for part in ("user", "password"))

NO_CONTEXT = (
    "no Kubernetes context: create a local cluster with `make cluster` (kind), or fetch the "
    "credentials of an AKS cluster with `az aks get-credentials --resource-group <group> "
    "--name <cluster>` (see docs/azure.md)"
)


class ClusterError(LabError):
    """The cluster cannot do what was asked; the message says why and what to do."""


# -- connecting ------------------------------------------------------------------------------


def kubeconfig_paths(env: dict[str, str] | None = None) -> list[Path]:
    """The kubeconfig files, as kubectl finds them: `$KUBECONFIG` or `~/.kube/config`."""
    env = dict(os.environ) if env is None else env
    if env.get("KUBECONFIG"):
        return [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def kube_context(env: dict[str, str] | None = None) -> str | None:
    """The kube context the lab uses: `$LAB_KUBE_CONTEXT`, else the current context of the
    kubeconfig; `None` when there is none.

    It only reads files (no network, and without importing the Kubernetes client, which takes
    seconds), so it is a cheap "is there a cluster at all?" check.
    """
    env = dict(os.environ) if env is None else env
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


def kubernetes_client() -> Any:
    """The official client package, imported on first use (it takes a second or two)."""
    try:
        import kubernetes
    except ImportError:
        raise ClusterError(
            "the Kubernetes Python client is not installed: run `make setup` (or "
            "`pip install -e '.[notebooks]'`)"
        ) from None
    return kubernetes


@dataclass
class Connection:
    """An open connection to a cluster, made by `connect`.

    `core` and `apps` are the typed APIs of the official client (`CoreV1Api`,
    `AppsV1Api`); `namespace` is the default namespace of the lab's functions.
    """

    context: str
    namespace: str
    server: str
    version: str
    api_client: ApiClient = field(repr=False)

    @property
    def core(self) -> CoreV1Api:
        from kubernetes.client import CoreV1Api

        return CoreV1Api(self.api_client)

    @property
    def apps(self) -> AppsV1Api:
        from kubernetes.client import AppsV1Api

        return AppsV1Api(self.api_client)


_current: Connection | None = None


def connect(
    context: str | None = None, namespace: str | None = None, *, timeout: float = 5.0
) -> Connection:
    """Connect to a cluster and make it the one every function of the lab uses.

    `context` is a kube context name (`kubectl config get-contexts` lists them); default:
    `$LAB_KUBE_CONTEXT`, else the current context. `namespace` becomes the default
    namespace (else the context's own when it is a `crypto-lab...` one, as in a student's
    kubeconfig, else `crypto-lab`). The API server must answer within `timeout` seconds.
    """
    global _current
    kubernetes_client()
    from kubernetes import client, config
    from kubernetes.client import ApiException

    context = context or os.environ.get("LAB_KUBE_CONTEXT") or None
    configuration = client.Configuration()
    # Read $KUBECONFIG now: the client reads it once, at import, which misses a change made
    # in a running notebook (os.environ["KUBECONFIG"] = ...).
    files = os.pathsep.join(str(path) for path in kubeconfig_paths())
    try:
        contexts, active = config.list_kube_config_contexts(config_file=files)
    except (config.ConfigException, OSError):
        raise ClusterError(NO_CONTEXT) from None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    if chosen is None and not context:
        raise ClusterError(NO_CONTEXT)
    if chosen is None:
        names = ", ".join(sorted(c["name"] for c in contexts))
        raise ClusterError(f"there is no kube context {context!r}: use one of {names}")
    try:
        config.load_kube_config(
            config_file=files, context=chosen["name"], client_configuration=configuration
        )
    except config.ConfigException as err:
        raise ClusterError(f"the kube context {chosen['name']!r} cannot be used: {err}") from None
    name = chosen["name"]
    own_namespace = (chosen.get("context") or {}).get("namespace") or ""
    api_client = client.ApiClient(configuration=configuration)
    try:
        info = client.VersionApi(api_client).get_code(_request_timeout=(timeout, timeout))
        version = str(info.git_version)
    except ApiException as err:
        if err.status in (401, 403):
            raise ClusterError(
                f"the cluster of context {name!r} refused the credentials: fetch them again "
                "(AKS: `az aks get-credentials ... --overwrite-existing`; class lab: ask your "
                "teacher for a fresh kubeconfig)"
            ) from None
        raise ClusterError(f"the cluster of context {name!r} answered {err.status}") from None
    except Exception as err:  # urllib3 wraps refused, unreachable and TLS errors differently
        raise ClusterError(
            f"the cluster of context {name!r} ({configuration.host}) does not answer "
            f"({type(err).__name__}): check that it runs (kind: `kind get clusters`; "
            "AKS: `az aks show --resource-group <group> --name <cluster>`)"
        ) from None
    if namespace is None:
        namespace = own_namespace if own_namespace.startswith(DEFAULT_NAMESPACE) else None
    _current = Connection(
        name, namespace or DEFAULT_NAMESPACE, configuration.host, version, api_client
    )
    return _current


def current() -> Connection:
    """The connection made by `connect` (made now, to the current context, if none)."""
    return _current if _current is not None else connect()


def api_message(err: Exception) -> str:
    """The API server's own explanation inside an `ApiException`."""
    body = getattr(err, "body", None)
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        return str(json.loads(body or "").get("message") or err)
    return str(getattr(err, "reason", None) or err)


# -- the InfluxDB Secret ---------------------------------------------------------------------


def create_secrets(namespace: str | None = None) -> list[str]:
    """Create the Secret `influxdb-credentials` with generated passwords; keep existing ones.

    The Secret holds `admin-user`, `admin-password`, `ingest-user`, `ingest-password`,
    `reader-user` and `reader-password` (the same three InfluxDB users as the local stack).
    Passwords come from `secrets` and are never printed; run it again and nothing
    changes (a missing key is added). Returns the keys.

    It reads, creates and patches that one Secret and nothing else (a class-lab student may do
    exactly that in their namespace). The namespace must exist: `kubectl apply -f
    manifests/base/namespace.yaml` makes the lab's; a class lab's comes from the teacher.
    """
    from kubernetes import client
    from kubernetes.client import ApiException

    conn = current()
    namespace = namespace or conn.namespace
    core = conn.core
    try:
        existing = core.read_namespaced_secret(SECRET_NAME, namespace)
    except ApiException as err:
        if err.status != 404:
            raise _secret_error(namespace, err) from None
        existing = None
    have = set((existing.data or {}) if existing is not None else {})
    missing = [key for key in SECRET_KEYS if key not in have]
    if not missing:
        print(f"secret/{SECRET_NAME} in {namespace} already has every key: kept as it is")
        return list(SECRET_KEYS)
    values = {key: _secret_value(key) for key in missing}
    try:
        if existing is None:
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=SECRET_NAME, labels=dict(PART_OF)),
                type="Opaque",
                string_data=values,
            )
            core.create_namespaced_secret(namespace, body)
            print(f"secret/{SECRET_NAME} created in {namespace} with keys {', '.join(missing)}")
        else:
            core.patch_namespaced_secret(SECRET_NAME, namespace, {"stringData": values})
            print(f"secret/{SECRET_NAME} in {namespace}: added keys {', '.join(missing)}")
    except ApiException as err:
        raise _secret_error(namespace, err) from None
    return list(SECRET_KEYS)


def _secret_error(namespace: str, err: Exception) -> ClusterError:
    message, status = api_message(err), getattr(err, "status", None)
    if "being terminated" in message:
        return ClusterError(
            f"namespace {namespace!r} is still being deleted: wait until `kubectl get namespace "
            f"{namespace}` says it is gone, create it again, then run this again"
        )
    if status == 404:
        return ClusterError(
            f"namespace {namespace!r} does not exist: create it first with `kubectl apply -f "
            "manifests/base/namespace.yaml` (in the class lab, pass the namespace your teacher "
            "gave you: --namespace crypto-lab-studentNN)"
        )
    if status == 403:
        return ClusterError(
            f"your kube context may not manage Secrets in namespace {namespace!r} ({message}): "
            "in the class lab, use the namespace of your own kubeconfig"
        )
    return ClusterError(f"secret {SECRET_NAME} in {namespace!r}: the API server said {message}")


def _secret_value(key: str) -> str:
    role, part = key.rsplit("-", 1)
    # URL-safe characters only: the password travels in URLs and InfluxQL statements.
    return USERS[role] if part == "user" else secrets.token_urlsafe(24)


def credentials(role: str = "admin", namespace: str | None = None) -> Credentials:
    """The InfluxDB user `role` (admin, ingest, reader) stored in the cluster's Secret."""
    from kubernetes.client import ApiException

    if role not in ROLES:
        raise ClusterError(f"unknown InfluxDB role {role!r}: use one of {', '.join(ROLES)}")
    conn = current()
    namespace = namespace or conn.namespace
    try:
        data = conn.core.read_namespaced_secret(SECRET_NAME, namespace).data or {}
    except ApiException as err:
        raise ClusterError(
            f"secret {SECRET_NAME} in {namespace} (create it with `python -m lab_helpers.cluster "
            f"secrets`): the API server said {api_message(err)}"
        ) from None
    try:
        user, password = (
            base64.b64decode(data[f"{role}-{p}"]).decode() for p in ("user", "password")
        )
    except KeyError:
        raise ClusterError(
            f"secret {SECRET_NAME} has no {role} user: run `python -m lab_helpers.cluster secrets`"
        ) from None
    return Credentials(user, password)


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
    sub.add_parser("pods", parents=[common], help="the lab's pods: ready or why not")
    args = parser.parse_args(argv)
    connect(args.context, args.namespace)
    if args.command == "secrets":
        create_secrets(args.namespace)
    else:
        from . import pods

        print(pods.pods(args.namespace).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
