"""The cluster suite: the lab deployed on a real Kubernetes cluster, end to end.

It runs against ``$LAB_KUBE_CONTEXT`` or, when that is not set, the current kube context if
it is a kind cluster (``kind-...``): a context of a shared or paid cluster is used only when
named on purpose. Without one, every test is skipped at once, without a network call: the
check only reads the kubeconfig file. The images must be in the cluster first (``make
cluster``; the GitHub workflow ``cluster.yml`` does it).
"""

from __future__ import annotations

import os

import pytest

from lab_helpers import cluster

NO_CLUSTER = (
    "no Kubernetes cluster configured: run `make cluster` (kind, needs Docker) to run the "
    "cluster suite"
)


def chosen_context() -> tuple[str | None, str]:
    """(context, why not) for this run: only files are read, so it is instant."""
    explicit = os.environ.get("LAB_KUBE_CONTEXT")
    if explicit:
        return explicit, ""
    current = cluster.kube_context()
    if current is None:
        return None, NO_CLUSTER
    if not current.startswith("kind-"):
        return None, (
            f"{NO_CLUSTER} (the current context {current!r} is not a kind cluster: set "
            f"LAB_KUBE_CONTEXT={current} to run the suite there on purpose)"
        )
    return current, ""


@pytest.fixture(scope="session")
def kube() -> cluster.Connection:
    """A connection to the cluster, or a skip that says how to get one."""
    context, why_not = chosen_context()
    if context is None:
        pytest.skip(why_not)
    try:
        return cluster.connect(context)
    except cluster.ClusterError as err:
        if os.environ.get("LAB_KUBE_CONTEXT"):
            pytest.fail(f"LAB_KUBE_CONTEXT={context} was set, but {err}")
        pytest.skip(f"{NO_CLUSTER} (the kind context {context!r} does not answer: {err})")
