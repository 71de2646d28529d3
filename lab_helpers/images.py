"""Build the three service images (``lab-source``, ``lab-ingest``, ``lab-api``) for a cluster.

Every image is built for **linux/amd64** (what kind on a PC and AKS nodes run; an image built
on an ARM laptop without it would not start there) and tagged with the lab's version,
``lab_helpers.__version__``, never ``latest``: a tag that names one build is what lets
Kubernetes roll forward and back. Three ways, one function each:

- :func:`for_kind`: ``docker build``, then ``kind load docker-image`` copies the image into
  the kind cluster's node (no registry needed);
- :func:`for_registry` with a Docker daemon: ``docker build``, ``az acr login``,
  ``docker push`` to ``<registry>.azurecr.io``;
- :func:`for_registry` without one: ``az acr build`` builds in Azure instead.

As everywhere in the lab, the commands are shown first and run only with ``run=True`` in
cluster mode (``LAB_MODE=cluster``). Command line::

    python -m lab_helpers.images kind [--cluster kind] [--run]
    python -m lab_helpers.images acr REGISTRY [--run]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterable

from . import __version__, azure
from .cluster import ClusterError, Command, registry_host, run_commands
from .config import Settings, project_root
from .errors import command_line
from .stack import APPS

SERVICES = tuple(APPS)  # ingest, api, source
PLATFORM = "linux/amd64"


def image_name(service: str, registry: str | None = None, version: str = __version__) -> str:
    """``lab-<service>:<version>``, prefixed with ``<registry>.azurecr.io/`` for an ACR name
    (or with any registry host given in full, e.g. ``localhost:5001``)."""
    if service not in SERVICES:
        raise ClusterError(f"unknown service {service!r}: choose from {', '.join(SERVICES)}")
    if not version or version == "latest":
        raise ClusterError("an image needs a version tag that names one build, never 'latest'")
    name = f"lab-{service}:{version}"
    if not registry:
        return name
    return f"{registry_host(registry)}/{name}"


def docker_available(timeout: float = 10.0) -> bool:
    """True when ``docker info`` answers: a Docker daemon this machine may use."""
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def build_command(service: str, registry: str | None = None) -> Command:
    """``docker build --platform linux/amd64 -f services/<name>/Dockerfile -t <image> .``

    Run from the repository root: the build needs ``lab_helpers/`` next to the service.
    """
    return Command(
        (
            "docker", "build", "--platform", PLATFORM,
            "-f", f"services/{service}/Dockerfile",
            "-t", image_name(service, registry),
            ".",
        ),
        why=f"build the {service} image",
        cwd=project_root(),
    )  # fmt: skip


def _services(services: Iterable[str] | None) -> list[str]:
    chosen = list(services or SERVICES)
    for service in chosen:
        image_name(service)  # checks the name
    return chosen


def for_kind(
    cluster: str = "kind",
    services: Iterable[str] | None = None,
    *,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Build the images with Docker and load them into the kind cluster ``cluster``.

    The kind overlay then runs ``lab-<service>:<version>`` as it is on the node, so nothing
    is pulled from the internet. Needs Docker, which kind itself runs on.
    """
    commands = []
    for service in _services(services):
        commands.append(build_command(service))
        commands.append(
            Command(
                ("kind", "load", "docker-image", image_name(service), "--name", cluster),
                why=f"copy it into the nodes of kind cluster {cluster!r}",
            )
        )
    return run_commands(commands, run, settings)


def for_registry(
    registry: str,
    services: Iterable[str] | None = None,
    *,
    use_docker: bool | None = None,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Put the images into an Azure Container Registry, for AKS.

    With a Docker daemon (``use_docker=None`` asks ``docker info``): ``docker build`` here,
    then ``az acr login`` and ``docker push``. Without one: ``az acr build``, which uploads
    the sources and builds in Azure (see :func:`lab_helpers.azure.acr_build`).
    """
    registry = azure.check_registry_name(registry)
    chosen = _services(services)
    if use_docker is None:
        use_docker = docker_available()
    if not use_docker:
        print("no Docker daemon answers here: Azure builds the images (az acr build)")
        commands = [azure.acr_build_command(s, registry) for s in chosen]
        return run_commands(commands, run, settings)
    commands = [build_command(s, registry) for s in chosen]
    commands.append(azure.acr_login_command(registry))
    commands += [
        Command(("docker", "push", image_name(s, registry)), why=f"upload the {s} image")
        for s in chosen
    ]
    return run_commands(commands, run, settings)


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.images",
        description=f"Build the lab's images ({PLATFORM}, tag {__version__}) for a cluster.",
    )
    sub = parser.add_subparsers(dest="target", required=True)
    kind = sub.add_parser("kind", help="docker build, then kind load docker-image")
    kind.add_argument("--cluster", default="kind", help="kind cluster name (default: kind)")
    acr = sub.add_parser("acr", help="into an Azure Container Registry (docker or az acr build)")
    acr.add_argument("registry", help="the registry's name (without .azurecr.io)")
    for sub_parser in (kind, acr):
        only = "only this service (repeatable)"
        sub_parser.add_argument("--service", action="append", choices=SERVICES, help=only)
        sub_parser.add_argument("--run", action="store_true", help="run (LAB_MODE=cluster)")
    args = parser.parse_args(argv)
    if args.target == "kind":
        for_kind(args.cluster, args.service, run=args.run)
    else:
        for_registry(args.registry, args.service, run=args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
