"""The class lab: one shared Kubernetes cluster, one namespace per student.

A teacher prepares a whole class with two commands:

    python -m lab_helpers.classlab generate --students 30 --out build/classlab
    python -m lab_helpers.classlab kubeconfigs --students 30 --out build/classlab

`generate` works offline. For each student (namespaces `crypto-lab-student01` ...) it
writes `<out>/<namespace>/access.yaml`: the Namespace, a ResourceQuota, a LimitRange, a
ServiceAccount and a Role with its RoleBinding that let the student manage the lab's objects
in that namespace and nowhere else (the template is `manifests/classlab/student.yaml`). It
also writes `<out>/<namespace>/lab/kustomization.yaml`, the lab deployed into that
namespace (on AKS with the prebuilt images, or `--registry` yours; `--cluster kind` for a
kind cluster with the images `make cluster` loaded), and `<out>/kustomization.yaml`
listing every `access.yaml`, so that `kubectl apply -k build/classlab` creates the whole
class.

`kubeconfigs` uses the current kube context (a cluster admin's): it applies the same objects
and writes `<out>/<namespace>/kubeconfig` for each student, holding a token of the student's
ServiceAccount (TokenRequest API, valid `--hours`) and the cluster's address and CA.

`sizing` prints how many nodes a class needs (`manifests/classlab/README.md` explains the
arithmetic).
"""

from __future__ import annotations

import base64
import math
import os
import re
import string
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from .config import project_root
from .errors import LabError, command_line
from .images import LAB_IMAGES, PREBUILT_REGISTRY, registry_host

MANIFESTS = project_root() / "manifests"
TEMPLATE = MANIFESTS / "classlab" / "student.yaml"
PREFIX = "crypto-lab-student"
CLUSTERS = ("aks", "kind")
SERVICE_ACCOUNT = "student"
FIELD_MANAGER = "crypto-lab-classlab"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ClassLabError(LabError):
    """The class lab cannot be generated or set up on the cluster."""


# ---------------------------------------------------------------------------- offline


def student_namespaces(students: int, prefix: str = PREFIX) -> list[str]:
    """`crypto-lab-student01` ... one namespace name per student, numbered from 1."""
    if students < 1:
        raise ClassLabError(f"--students {students} is not valid: give 1 or more")
    width = max(2, len(str(students)))
    names = [f"{prefix}{i:0{width}d}" for i in range(1, students + 1)]
    for name in (names[0], names[-1]):
        if len(name) > 63 or not DNS_LABEL.fullmatch(name):
            raise ClassLabError(
                f"{name!r} cannot name a namespace: use a --prefix of lower-case letters, digits "
                "and '-', at most 60 characters"
            )
    return names


def student_objects(namespace: str) -> list[dict]:
    """The Kubernetes objects of one student's namespace, from `manifests/classlab`."""
    if not TEMPLATE.exists():
        raise ClassLabError(f"{TEMPLATE} is missing: run this from the lab's folder")
    text = string.Template(TEMPLATE.read_text()).substitute(namespace=namespace)
    return [doc for doc in yaml.safe_load_all(text) if doc]


class _Dumper(yaml.SafeDumper):
    """Writes text of several lines as a `|` block, as a person would."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def _dump(*docs: dict) -> str:
    return "---\n".join(yaml.dump(doc, Dumper=_Dumper, sort_keys=False) for doc in docs)


def lab_kustomization(
    namespace: str, lab_dir: Path, registry: str = PREBUILT_REGISTRY, cluster: str = "aks"
) -> dict:
    """The lab in `namespace`: on AKS (`manifests/base`, Azure disks, images from
    `registry`: a registry host, or the name of an Azure Container Registry), or on kind
    (`manifests/overlays/kind`, the images loaded into the node).

    `lab_dir` is the folder the kustomization will be written to: kustomize only accepts
    paths relative to it.
    """
    if cluster not in CLUSTERS:
        raise ClassLabError(f"--cluster {cluster} is not valid: use {' or '.join(CLUSTERS)}")
    here = Path(os.path.abspath(lab_dir))

    def relative(path: Path) -> str:
        return Path(os.path.relpath(path, here)).as_posix()

    kustomization: dict = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
    }
    if cluster == "kind":
        kustomization["resources"] = [relative(MANIFESTS / "overlays" / "kind")]
    else:
        host = registry_host(registry)
        kustomization["resources"] = [relative(MANIFESTS / "base")]
        kustomization["components"] = [relative(MANIFESTS / "components" / "azure-disk")]
        kustomization["images"] = [
            {"name": image, "newName": f"{host}/{image}", "newTag": _version()}
            for image in LAB_IMAGES
        ]
    # The teacher creates the namespace (access.yaml); a student may not create one.
    kustomization["patches"] = [
        {
            "patch": yaml.safe_dump(
                {
                    "$patch": "delete",
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "crypto-lab"},
                },
                sort_keys=False,
            )
        }
    ]
    return kustomization


def _version() -> str:
    from . import __version__

    return __version__


def generate(
    students: int,
    out: Path | str,
    *,
    registry: str = PREBUILT_REGISTRY,
    prefix: str = PREFIX,
    cluster: str = "aks",
) -> list[Path]:
    """Write the class's YAML files under `out` (see the module help); returns the files.

    Runs offline and can be run again: it rewrites the same files.
    """
    out = Path(out)
    written = []
    access_files = []
    for namespace in student_namespaces(students, prefix):
        folder = out / namespace
        (folder / "lab").mkdir(parents=True, exist_ok=True)
        access = folder / "access.yaml"
        header = f"# {namespace}: written by `python -m lab_helpers.classlab generate`.\n"
        access.write_text(header + _dump(*student_objects(namespace)))
        lab = folder / "lab" / "kustomization.yaml"
        lab.write_text(
            f"# The lab in {namespace}. Deploy it: kubectl apply -k {folder / 'lab'}\n"
            + _dump(lab_kustomization(namespace, lab.parent, registry, cluster))
        )
        written += [access, lab]
        access_files.append(f"{namespace}/access.yaml")
    top = out / "kustomization.yaml"
    top.write_text(
        "# Every student's namespace, quota and role. Create them: kubectl apply -k "
        f"{out}\n"
        + _dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": access_files,
            }
        )
    )
    return [top, *written]


# ---------------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class NodeSize:
    """An Azure VM size as an AKS node: what it has, and what pods can get of it."""

    name: str
    cpus: int
    memory_gib: float
    max_data_disks: int

    @property
    def allocatable_cpu(self) -> float:
        # AKS keeps some CPU for the kubelet and the runtime: 140m on 4 cores, 180m on 8,
        # 260m on 16 (Microsoft's "resource reservations" table).
        reserved = {4: 0.14, 8: 0.18, 16: 0.26}.get(self.cpus, 0.06 + 0.015 * self.cpus)
        return self.cpus - reserved

    @property
    def allocatable_memory_gib(self) -> float:
        # AKS (1.29+) keeps 20 MiB per possible pod (250 with Azure CNI Overlay) + 50 MiB, at
        # most 25 % of the memory, and evicts pods below 100 MiB free.
        kube_reserved = min((20 * 250 + 50) / 1024, 0.25 * self.memory_gib)
        return self.memory_gib - kube_reserved - 100 / 1024


NODE_SIZES = {
    node.name: node
    for node in (
        NodeSize("Standard_D4s_v5", 4, 16, 8),
        NodeSize("Standard_D8s_v5", 8, 32, 16),
        NodeSize("Standard_D16s_v5", 16, 64, 32),
    )
}
# What AKS's own pods (DNS, metrics, network and disk drivers) take on each node, roughly.
SYSTEM_CPU_PER_NODE = 0.5
SYSTEM_MEMORY_GIB_PER_NODE = 1.0


def quota() -> dict[str, float]:
    """The student quota of the template, as numbers (CPU in cores, sizes in bytes)."""
    from kubernetes.utils import parse_quantity

    for doc in student_objects("quota"):
        if doc["kind"] == "ResourceQuota":
            return {key: float(parse_quantity(value)) for key, value in doc["spec"]["hard"].items()}
    raise ClassLabError(f"{TEMPLATE} has no ResourceQuota")


@dataclass(frozen=True)
class Sizing:
    """How many nodes of one size a class needs, by each resource, and in all."""

    students: int
    node: NodeSize
    by_cpu: int
    by_memory: int
    by_disks: int

    @property
    def nodes(self) -> int:
        return max(self.by_cpu, self.by_memory, self.by_disks)

    def __str__(self) -> str:
        q, gib = quota(), 1024**3
        cpu_node = self.node.allocatable_cpu - SYSTEM_CPU_PER_NODE
        mem_node = self.node.allocatable_memory_gib - SYSTEM_MEMORY_GIB_PER_NODE
        rows = [
            ("CPU requests", q["requests.cpu"], cpu_node, self.by_cpu),
            ("memory requests, GiB", q["requests.memory"] / gib, mem_node, self.by_memory),
            ("Azure disks", q["persistentvolumeclaims"], self.node.max_data_disks, self.by_disks),
        ]
        lines = [f"{self.students} students on {self.node.name} nodes:"]
        for what, each, per_node, nodes in rows:
            need = f"{self.students} x {each:.2f}"
            lines.append(f"  {what:<21} {need:>12} / {per_node:6.2f} a node -> {nodes} nodes")
        lines.append(f"  => {self.nodes} nodes (a ceiling: the quotas are not all used at once)")
        return "\n".join(lines)


def sizing(students: int, node: str = "Standard_D8s_v5") -> Sizing:
    """Nodes of size `node` that `students` full quotas need (CPU, memory, disks)."""
    if students < 1:
        raise ClassLabError(f"--students {students} is not valid: give 1 or more")
    if node not in NODE_SIZES:
        raise ClassLabError(f"unknown node size {node!r}: use one of {', '.join(NODE_SIZES)}")
    size = NODE_SIZES[node]
    q = quota()
    per_cpu = size.allocatable_cpu - SYSTEM_CPU_PER_NODE
    per_mem = (size.allocatable_memory_gib - SYSTEM_MEMORY_GIB_PER_NODE) * 1024**3
    return Sizing(
        students,
        size,
        by_cpu=math.ceil(students * q["requests.cpu"] / per_cpu),
        by_memory=math.ceil(students * q["requests.memory"] / per_mem),
        by_disks=math.ceil(students * q["persistentvolumeclaims"] / size.max_data_disks),
    )


# ---------------------------------------------------------------------------- on the cluster


@dataclass(frozen=True)
class ClusterAccess:
    """Where the cluster of a kube context answers, and the CA that signs its certificate."""

    name: str
    server: str
    ca_data: bytes | None  # PEM; None when the context skips TLS verification


def _kubernetes():
    try:
        import kubernetes
    except ImportError:
        raise ClassLabError(
            "the kubernetes package is missing: pip install -e '.[notebooks]'"
        ) from None
    return kubernetes


def _config_file(path: str | None) -> str | None:
    # The kubernetes package reads $KUBECONFIG once, when it is imported: read it now.
    return path or os.environ.get("KUBECONFIG") or None


def current_cluster(context: str | None = None, config_file: str | None = None) -> ClusterAccess:
    """The cluster of the current (or the named) kube context: its name, server and CA.

    `config_file` defaults to `$KUBECONFIG`, else `~/.kube/config`.
    """
    k8s = _kubernetes()
    config_file = _config_file(config_file)
    try:
        contexts, active = k8s.config.list_kube_config_contexts(config_file=config_file)
        chosen = next(c for c in contexts if c["name"] == context) if context else active
        configuration = k8s.client.Configuration()
        k8s.config.load_kube_config(
            config_file=config_file, context=chosen["name"], client_configuration=configuration
        )
    except (k8s.config.ConfigException, StopIteration, TypeError):
        raise ClassLabError(
            "no usable kube context"
            + (f" named {context!r}" if context else "")
            + ": connect kubectl to the class cluster first (on AKS: az aks get-credentials "
            "--resource-group <group> --name <cluster>)"
        ) from None
    ca = None
    if configuration.verify_ssl and configuration.ssl_ca_cert:
        ca = Path(configuration.ssl_ca_cert).read_bytes()
    return ClusterAccess(chosen["context"]["cluster"], configuration.host, ca)


def student_kubeconfig(cluster: ClusterAccess, namespace: str, token: str) -> dict:
    """A kubeconfig for one student: the cluster, the student's token, their namespace."""
    entry: dict[str, str | bool] = {"server": cluster.server}
    if cluster.ca_data:
        entry["certificate-authority-data"] = base64.b64encode(cluster.ca_data).decode()
    else:
        entry["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster.name, "cluster": entry}],
        "users": [{"name": namespace, "user": {"token": token}}],
        "contexts": [
            {
                "name": namespace,
                "context": {"cluster": cluster.name, "user": namespace, "namespace": namespace},
            }
        ],
        "current-context": namespace,
    }


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def kubeconfigs(
    students: int,
    out: Path | str,
    *,
    hours: float = 24,
    prefix: str = PREFIX,
    context: str | None = None,
    config_file: str | None = None,
) -> list[Path]:
    """Apply every student's namespace objects and write one kubeconfig per student.

    Uses the current kube context (or `context` of `config_file`), which must be
    allowed to create namespaces and roles. Each kubeconfig holds a ServiceAccount token
    valid for `hours` (the API server may cap it); run this again for fresh tokens.
    Returns the files written.
    """
    k8s = _kubernetes()
    from kubernetes.client import ApiException
    from kubernetes.dynamic import DynamicClient
    from urllib3.exceptions import HTTPError

    seconds = int(hours * 3600)
    if seconds < 600:
        raise ClassLabError(f"--hours {hours} is too short: tokens must last 10 minutes or more")
    names = student_namespaces(students, prefix)
    config_file = _config_file(config_file)
    cluster = current_cluster(context, config_file)
    api_client = k8s.config.new_client_from_config(config_file=config_file, context=context)
    out = Path(out)
    written = []
    namespace = "?"
    try:
        dynamic = DynamicClient(api_client)
        core = k8s.client.CoreV1Api(api_client)
        for namespace in names:
            for obj in student_objects(namespace):
                resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                # Server-side apply: creates the object, or updates it to this content.
                resource.server_side_apply(
                    body=obj, field_manager=FIELD_MANAGER, force_conflicts=True
                )
            request = k8s.client.AuthenticationV1TokenRequest(
                spec=k8s.client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
            )
            token = core.create_namespaced_service_account_token(
                SERVICE_ACCOUNT, namespace, request
            )
            path = out / namespace / "kubeconfig"
            config = student_kubeconfig(cluster, namespace, token.status.token)
            _write_private(path, _dump(config))
            written.append(path)
    except ApiException as err:
        if err.status in (401, 403):
            raise ClassLabError(
                f"the cluster refused to set up {namespace} ({err.status} {err.reason}): use a "
                "kube context that may create namespaces and roles (a cluster admin, e.g. "
                "az aks get-credentials --admin ...)"
            ) from None
        raise ClassLabError(
            f"the cluster refused to set up {namespace}: {err.status} {err.reason}"
        ) from None
    except (HTTPError, OSError):
        raise ClassLabError(
            f"the cluster at {cluster.server} does not answer: check that it runs and that "
            "the current kube context is the class cluster (kubectl config current-context)"
        ) from None
    finally:
        api_client.close()
    return written


# ---------------------------------------------------------------------------- command line


@command_line
def main(argv: list[str] | None = None) -> int:
    """`python -m lab_helpers.classlab generate|kubeconfigs|sizing` (see the module help)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.classlab", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("generate", "write every student's YAML files (offline)"),
        ("kubeconfigs", "apply them with the current kube context; one kubeconfig per student"),
        ("sizing", "how many nodes the class needs"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--students", type=int, required=True, help="how many students")
        if name == "sizing":
            cmd.add_argument("--node", default="Standard_D8s_v5", choices=NODE_SIZES)
            continue
        cmd.add_argument("--out", default="build/classlab", help="folder (default %(default)s)")
        cmd.add_argument("--prefix", default=PREFIX, help="namespace prefix (%(default)s)")
        if name == "generate":
            cmd.add_argument(
                "--registry",
                default=PREBUILT_REGISTRY,
                help="where the lab's images are (default: the prebuilt ones, %(default)s): "
                "myclass.azurecr.io, or just myclass",
            )
            cmd.add_argument(
                "--cluster", default="aks", choices=CLUSTERS, help="aks (default) or kind"
            )
        else:
            cmd.add_argument("--hours", type=float, default=24, help="token validity (24)")
            cmd.add_argument("--context", help="kube context (default: the current one)")
    args = parser.parse_args(argv)
    if args.command == "sizing":
        print(sizing(args.students, args.node))
    elif args.command == "generate":
        files = generate(
            args.students, args.out, registry=args.registry, prefix=args.prefix,
            cluster=args.cluster,
        )  # fmt: skip
        print(f"wrote {len(files)} files under {args.out} for {args.students} students")
        print(f"create the namespaces:  kubectl apply -k {args.out}")
        print(f"or, with student kubeconfigs: python -m lab_helpers.classlab kubeconfigs "
              f"--students {args.students} --out {args.out}")  # fmt: skip
        if args.cluster == "aks" and args.registry == PREBUILT_REGISTRY:
            print(f"the labs run the prebuilt images of {PREBUILT_REGISTRY}; your own "
                  "registry instead: --registry <your-acr>.azurecr.io")  # fmt: skip
    else:
        files = kubeconfigs(
            args.students, args.out, hours=args.hours, prefix=args.prefix,
            context=args.context,
        )  # fmt: skip
        until = datetime.now(UTC) + timedelta(hours=args.hours)
        print(f"wrote {len(files)} kubeconfigs under {args.out} (tokens valid until "
              f"{until:%Y-%m-%d %H:%M} UTC); give each student their own file")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
