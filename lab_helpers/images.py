"""The three service images (`lab-source`, `lab-ingest`, `lab-api`): where they come from.

Every image is tagged with the lab's version, `lab_helpers.__version__`, never `latest`: a
tag that names one build is what lets Kubernetes roll forward and back. Three ways to get them
onto a cluster, one function each:

- `for_kind`: `docker build` for this machine's own platform, then `kind load
  docker-image` copies each image into the kind cluster's node (no registry needed);
- `for_registry`: `docker build --platform linux/amd64` (what AKS nodes run),
  `az acr login` and `docker push` to `<registry>.azurecr.io`; without a Docker daemon,
  `az acr build` builds in Azure instead (refused on free-trial subscriptions, see
  `docs/azure.md`);
- the **prebuilt** images: the workflow `.github/workflows/images.yml` publishes all three
  for linux/amd64 and linux/arm64 to `PREBUILT_REGISTRY` on each release tag. The aks
  overlay uses them, so nobody has to build anything to deploy.

The commands are shown first and run only with `run=True` in cluster mode
(`LAB_MODE=cluster`). Command line:

    python -m lab_helpers.images kind [--cluster crypto-lab] [--run]
    python -m lab_helpers.images acr REGISTRY [--run]
    python -m lab_helpers.images overlay REGISTRY      # an aks overlay with your registry's images
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from . import __version__, azure
from .cluster import ClusterError
from .commands import Command, run_commands
from .config import Settings, project_root
from .errors import command_line
from .stack import APPS

SERVICES = tuple(APPS)  # ingest, api, source
LAB_IMAGES = tuple(f"lab-{service}" for service in SERVICES)
# What AKS nodes run; an image built on an ARM laptop without it would not start there.
AKS_PLATFORM = "linux/amd64"
# Where the release workflow publishes the images (ghcr.io/<repository owner>), for both
# platforms learners' machines and clusters have.
PREBUILT_REGISTRY = "ghcr.io/k8s-data-lab"
PREBUILT_PLATFORMS = ("linux/amd64", "linux/arm64")
KIND_CLUSTER = "crypto-lab"  # the name in manifests/overlays/kind/cluster.yaml


def registry_host(registry: str) -> str:
    """`cryptolab1a2b3c` (an Azure Container Registry name) -> `cryptolab1a2b3c.azurecr.io`;
    a host or host/path (`localhost:5001`, `ghcr.io/me`) stays as it is."""
    registry = registry.rstrip("/")
    return registry if "." in registry or ":" in registry else f"{registry}.azurecr.io"


def image_name(service: str, registry: str | None = None, version: str = __version__) -> str:
    """`lab-<service>:<version>`, prefixed with the registry (an ACR name becomes
    `<name>.azurecr.io`)."""
    if service not in SERVICES:
        raise ClusterError(f"unknown service {service!r}: choose from {', '.join(SERVICES)}")
    if not version or version == "latest":
        raise ClusterError("an image needs a version tag that names one build, never 'latest'")
    name = f"lab-{service}:{version}"
    return f"{registry_host(registry)}/{name}" if registry else name


def docker_available(timeout: float = 10.0) -> bool:
    """True when `docker info` answers: a Docker daemon this machine may use."""
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def build_command(
    service: str, registry: str | None = None, platform: str | None = None
) -> Command:
    """`docker build [--platform P] -f services/<name>/Dockerfile -t <image> .`

    Run from the repository root: the build needs `lab_helpers/` next to the service.
    Without `platform` Docker builds for this machine (right for kind, which runs here).
    """
    args = ["docker", "build"]
    if platform:
        args += ["--platform", platform]
    args += ["-f", f"services/{service}/Dockerfile", "-t", image_name(service, registry), "."]
    return Command(tuple(args), why=f"build the {service} image", cwd=project_root())


def _services(services: Iterable[str] | None) -> list[str]:
    chosen = list(services or SERVICES)
    for service in chosen:
        image_name(service)  # checks the name
    return chosen


def kind_commands(
    cluster: str = KIND_CLUSTER, services: Iterable[str] | None = None
) -> list[Command]:
    """`docker build` and `kind load docker-image` for each service (built, not shown)."""
    commands = []
    for service in _services(services):
        commands.append(build_command(service))
        commands.append(
            Command(
                ("kind", "load", "docker-image", image_name(service), "--name", cluster),
                why=f"copy it into the nodes of kind cluster {cluster!r}",
            )
        )
    return commands


def for_kind(
    cluster: str = KIND_CLUSTER,
    services: Iterable[str] | None = None,
    *,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Build the images with Docker and load them into the kind cluster `cluster`.

    The kind overlay then runs `lab-<service>:<version>` as it is on the node
    (`imagePullPolicy: Never`), so nothing is pulled from a registry.
    """
    return run_commands(kind_commands(cluster, services), run, settings)


def for_registry(
    registry: str,
    services: Iterable[str] | None = None,
    *,
    use_docker: bool | None = None,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Put the images into an Azure Container Registry, for AKS.

    With a Docker daemon (`use_docker=None` asks `docker info`): `docker build` here for
    linux/amd64, then `az acr login` and `docker push`. Without one: `az acr build`,
    which builds in Azure (ACR Tasks; not allowed on free-trial subscriptions: use the
    prebuilt images there, or Docker in the lab's Codespace).
    """
    registry = azure.check_registry_name(registry)
    chosen = _services(services)
    if use_docker is None:
        use_docker = docker_available()
    if not use_docker:
        print("no Docker daemon answers here: Azure builds the images (az acr build)")
        commands = [azure.acr_build_command(s, registry) for s in chosen]
        return run_commands(commands, run, settings)
    commands = [build_command(s, registry, AKS_PLATFORM) for s in chosen]
    commands.append(azure.acr_login_command(registry))
    commands += [
        Command(("docker", "push", image_name(s, registry)), why=f"upload the {s} image")
        for s in chosen
    ]
    return run_commands(commands, run, settings)


def overlay(registry: str, out: Path | str | None = None) -> Path:
    """Write an overlay that is `manifests/overlays/aks` with the images of `registry`
    (an ACR name or a registry host); returns its folder, for `kubectl apply -k`.

    Default folder: `build/overlays/aks-<registry>` in the repository.
    """
    host = registry_host(registry)
    folder = Path(out) if out else project_root() / "build" / "overlays" / f"aks-{registry}"
    folder.mkdir(parents=True, exist_ok=True)
    aks = project_root() / "manifests" / "overlays" / "aks"
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only.
        "resources": [Path(os.path.relpath(aks, folder.resolve())).as_posix()],
        "images": [
            {"name": f"{PREBUILT_REGISTRY}/{image}", "newName": f"{host}/{image}"}
            for image in LAB_IMAGES
        ],
    }
    header = (
        f"# manifests/overlays/aks with the images of {host}. Deploy: kubectl apply -k {folder}\n"
    )
    (folder / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    print(f"wrote {folder / 'kustomization.yaml'}: kubectl apply -k {folder}")
    return folder


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.images",
        description=f"The lab's images (tag {__version__}) for a cluster.",
    )
    sub = parser.add_subparsers(dest="target", required=True)
    kind = sub.add_parser("kind", help="docker build, then kind load docker-image")
    kind.add_argument("--cluster", default=KIND_CLUSTER, help=f"kind cluster ({KIND_CLUSTER})")
    acr = sub.add_parser("acr", help="into an Azure Container Registry (docker or az acr build)")
    acr.add_argument("registry", help="the registry's name (without .azurecr.io)")
    for sub_parser in (kind, acr):
        only = "only this service (repeatable)"
        sub_parser.add_argument("--service", action="append", choices=SERVICES, help=only)
        sub_parser.add_argument("--run", action="store_true", help="run (LAB_MODE=cluster)")
    own = sub.add_parser("overlay", help="write the aks overlay with your registry's images")
    own.add_argument("registry", help="an ACR name, or a registry host such as ghcr.io/me")
    own.add_argument("--out", help="folder (default: build/overlays/aks-<registry>)")
    args = parser.parse_args(argv)
    if args.target == "kind":
        for_kind(args.cluster, args.service, run=args.run)
    elif args.target == "acr":
        for_registry(args.registry, args.service, run=args.run)
    else:
        overlay(args.registry, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
