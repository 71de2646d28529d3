"""Helm, the package manager of Kubernetes: install NATS from its official chart.

A Helm *chart* is a package of Kubernetes manifests with settings (*values*); installing it
makes a *release*, which Helm can upgrade and uninstall as a whole. The lab's own NATS is a
plain StatefulSet in `manifests/base/nats.yaml`; on a cluster it can come from the
official chart instead, with the lab's values file `manifests/helm/nats-values.yaml`. Use
one or the other (`manifests/helm/README.md`: delete the lab's own NATS first):

    from lab_helpers import helm

    helm.install_nats("crypto-lab")                   # shows the helm commands
    helm.install_nats("crypto-lab", run=True)         # runs them (needs LAB_MODE=cluster)

As everywhere in the lab, the commands are shown first and run only with `run=True` in
cluster mode. Command line:

    python -m lab_helpers.helm nats [--namespace NS] [--context CTX] [--run]
    python -m lab_helpers.helm uninstall [--namespace NS] [--context CTX] [--run]
"""

from __future__ import annotations

import argparse
import sys

from .cluster import DEFAULT_NAMESPACE
from .commands import Command, run_commands
from .config import Settings, project_root
from .errors import command_line

NATS_REPO = "https://nats-io.github.io/k8s/helm/charts/"
NATS_CHART = "nats/nats"
# A fixed chart version: the same install next month (values keys change between versions).
# The chart's versions follow the NATS server's since 2.12.
NATS_CHART_VERSION = "2.14.2"
NATS_VALUES = project_root() / "manifests" / "helm" / "nats-values.yaml"
RELEASE = "nats"  # the chart names the StatefulSet and the client Service after the release


def _helm(*args: str, why: str, context: str | None) -> Command:
    args = (*args, "--kube-context", context) if context else args
    return Command(("helm", *args), why=why)


def install_nats_commands(
    namespace: str = DEFAULT_NAMESPACE, *, context: str | None = None, wait: str = "5m"
) -> list[Command]:
    """The commands of `install_nats`, built and not shown."""
    return [
        Command(
            ("helm", "repo", "add", "nats", NATS_REPO, "--force-update"),
            why="where the NATS charts are published",
        ),
        Command(("helm", "repo", "update", "nats"), why="the repository's list of versions"),
        _helm(
            "upgrade", "--install", RELEASE, NATS_CHART,
            "--version", NATS_CHART_VERSION,
            "--namespace", namespace,
            "--values", str(NATS_VALUES.relative_to(project_root())),
            "--wait", "--timeout", wait,
            why="install, or upgrade when already installed, and wait until ready",
            context=context,
        ),
    ]  # fmt: skip


def install_nats(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    context: str | None = None,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Install NATS with JetStream from the official chart, or upgrade it to these values.

    `helm upgrade --install` makes it idempotent: the first run installs the release
    `nats`, the next ones change it only where the values or the chart version differ.
    `--wait` returns once the pod is ready. `context` is a kube context (default: the
    current one). The namespace must exist, made by the lab so that it has the lab's labels
    and Pod Security profile, and hold no other NATS: the lab's own is deleted first
    (`kubectl delete statefulset/nats service/nats service/nats-headless pvc/data-nats-0`).
    """
    return run_commands(install_nats_commands(namespace, context=context), run, settings)


def uninstall_nats(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    context: str | None = None,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Remove the Helm release `nats` (its volume claim stays, as with any StatefulSet)."""
    command = _helm(
        "uninstall", RELEASE, "--namespace", namespace, "--wait",
        why="delete everything the release installed", context=context,
    )  # fmt: skip
    return run_commands([command], run, settings)


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.helm", description="NATS from its official Helm chart."
    )
    parser.add_argument("action", choices=["nats", "uninstall"])
    parser.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE)
    parser.add_argument("--context", help="kube context (default: the current one)")
    parser.add_argument("--run", action="store_true", help="run (needs LAB_MODE=cluster)")
    args = parser.parse_args(argv)
    step = install_nats if args.action == "nats" else uninstall_nats
    step(args.namespace, context=args.context, run=args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
