"""The Azure steps of the lab, through the Azure CLI (`az`): registry, AKS cluster, teardown.

Each step is a function that **builds** the exact `az` command and shows it. It runs only
when you pass `run=True` *and* the lab is in cluster mode (`LAB_MODE=cluster`); otherwise
nothing is sent to Azure, so you can read every command before anything costs money:

    from lab_helpers import azure

    azure.create_group()                            # shown, not run
    azure.create_group(run=True)                    # run (needs LAB_MODE=cluster)

A whole session, in order (`docs/azure.md` explains each step; `lab_helpers.costs` holds
what each part costs):

    azure.login()                                   # once per machine
    azure.create_group()                            # free
    azure.create_cluster()                          # 2 x Standard_B2s_v2, Cilium network policy
    azure.get_credentials()                         # kubectl now talks to AKS
    ...                                             # kubectl apply -k manifests/overlays/aks
    azure.delete_group()                            # everything above stops costing
    azure.remaining()                               # check that nothing is left

The aks overlay runs the prebuilt images (`lab_helpers.images`), so a registry of your own is
optional: `create_registry` and `create_cluster(registry=...)` when you build your own.
"""

from __future__ import annotations

import re
import secrets

from . import __version__
from .cluster import ClusterError
from .commands import Command, run_commands
from .config import Settings

LOCATION = "westeurope"
GROUP = "crypto-lab-rg"
CLUSTER = "crypto-lab-aks"
# Two nodes of 2 vCPUs: 4 vCPUs in all, what a free-trial subscription may run in a region.
# Bsv2 (the current burstable family, 8 GiB each): room for the lab, the Helm NATS and AKS's
# own pods (Cilium, DNS, metrics, disk drivers). AKS needs at least 2 vCPUs and 4 GiB a node.
VM_SIZE = "Standard_B2s_v2"
NODE_COUNT = 2
# Without a network policy engine AKS accepts NetworkPolicies and enforces none. Azure CNI
# powered by Cilium is the engine AKS recommends (Azure's own NPM reaches end of support), with
# the overlay network (pod addresses outside the virtual network).
NETWORK = {
    "network_plugin": "azure",
    "network_plugin_mode": "overlay",
    "network_dataplane": "cilium",
    "network_policy": "cilium",
}

# Texts in az's error output, and what to do about them (shown when a command fails).
HINTS = (
    (
        "TasksOperationsNotAllowed",
        "ACR Tasks (az acr build) are refused on free-trial subscriptions: deploy the prebuilt "
        "images (the aks overlay uses them), or build with Docker and push (the lab's "
        "Codespace has Docker), or upgrade the subscription to pay-as-you-go",
    ),
    (
        "quota",
        "the subscription's vCPU quota is too small for these nodes: `azure.quota(run=True)` "
        "shows it; use one node (node_count=1), another region (location='northeurope'), or "
        "request more quota (Azure portal > Quotas > Compute); see docs/azure.md",
    ),
    (
        "is not allowed in your subscription",
        "this VM size is not offered to your subscription in this region: pick one that "
        "`az vm list-skus --location <region> --size Standard_B --output table` lists "
        "without restrictions, or another region",
    ),
    (
        "MissingSubscriptionRegistration",
        "the subscription has not enabled this Azure service yet: run `az provider register "
        "--namespace Microsoft.ContainerService` (and Microsoft.ContainerRegistry), wait a "
        "few minutes, then run the step again",
    ),
    (
        "AuthorizationFailed",
        "your account may not do this in the subscription: ask its owner for the Contributor "
        "role (attaching the registry to AKS also needs Owner or User Access Administrator)",
    ),
    ("az login", "the Azure CLI is not signed in: run azure.login(run=True) first"),
)


def _az(*words: str, why: str, **options: str | int | bool | None) -> Command:
    """The `az` command of these words and options: `resource_group="g"` becomes
    `--resource-group g`, `True` a bare flag, `None` or `False` nothing."""
    args = ["az", *words]
    for key, value in options.items():
        if value is None or value is False:
            continue
        args.append("--" + key.replace("_", "-"))
        if value is not True:
            args.append(str(value))
    return Command(tuple(args), why=why, hints=HINTS)


def check_registry_name(name: str) -> str:
    """An Azure Container Registry name: 5 to 50 letters and digits, unique in all of Azure.

    Returns it in lower case (the registry's address is `<name>.azurecr.io`).
    """
    if not re.fullmatch(r"[A-Za-z0-9]{5,50}", name or ""):
        raise ClusterError(
            f"{name!r} cannot name a container registry: use 5 to 50 letters and digits, no "
            f"dashes, e.g. {suggest_registry_name()!r}"
        )
    return name.lower()


def suggest_registry_name(prefix: str = "cryptolab") -> str:
    """A registry name that is very likely still free: the prefix and 6 random characters."""
    return f"{prefix}{secrets.token_hex(3)}"


def login(
    *, device_code: bool = True, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Sign in to Azure (once per machine; Azure Cloud Shell is signed in already).

    `device_code=True` prints a code to enter at https://microsoft.com/devicelogin, which
    works from a notebook or a remote machine without a browser.
    """
    command = _az("login", why="sign in to Azure", use_device_code=device_code)
    return run_commands([command], run, settings)


def create_group(
    name: str = GROUP,
    location: str = LOCATION,
    *,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Create the resource group that holds everything of the lab (free in itself).

    One group for the registry and the cluster means that one command deletes it all.
    """
    command = _az(
        "group",
        "create",
        why="the folder for all the lab's resources",
        name=name,
        location=location,
    )
    return run_commands([command], run, settings)


def create_registry(
    name: str,
    group: str = GROUP,
    *,
    sku: str = "Basic",
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Create an Azure Container Registry (ACR) for images you build yourself.

    Optional: the aks overlay runs the prebuilt images. The Basic tier includes 10 GiB of
    storage (the lab's three images take well under 1 GiB); its price is in
    `lab_helpers.costs`. The name must be unique in all of Azure
    (`suggest_registry_name()` makes one).
    """
    name = check_registry_name(name)
    command = _az(
        "acr",
        "create",
        why=f"a private image registry, {name}.azurecr.io",
        resource_group=group,
        name=name,
        sku=sku,
    )
    return run_commands([command], run, settings)


def create_cluster(
    name: str = CLUSTER,
    group: str = GROUP,
    registry: str | None = None,
    *,
    node_count: int = NODE_COUNT,
    vm_size: str = VM_SIZE,
    tier: str = "free",
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Create a small AKS cluster (5 to 10 minutes) that enforces NetworkPolicies.

    `--network-policy cilium` (with the Cilium dataplane on Azure CNI overlay) installs the
    policy engine at creation; it cannot be added to a cluster created without one by a
    simple update. The **free tier** control plane costs nothing; you pay for the nodes, their
    disks and the load balancer (`lab_helpers.costs` has the figures). Two
    `Standard_B2s_v2` are 4 vCPUs, what a free trial allows in a region.

    `registry` (only when you build your own images) adds `--attach-acr`, which lets the
    nodes pull from it without a password (giving that right needs the Owner or User Access
    Administrator role). `--generate-ssh-keys` creates `~/.ssh/id_rsa` if it is missing
    (AKS wants a key; the lab never uses it).
    """
    command = _az(
        "aks",
        "create",
        why=f"a Kubernetes cluster of {node_count} x {vm_size}, with Cilium network policy",
        resource_group=group,
        name=name,
        tier=tier,
        node_count=node_count,
        node_vm_size=vm_size,
        **NETWORK,
        generate_ssh_keys=True,
        attach_acr=check_registry_name(registry) if registry else None,
    )
    return run_commands([command], run, settings)


def get_credentials(
    name: str = CLUSTER,
    group: str = GROUP,
    *,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Write the cluster's credentials into `~/.kube/config` as the current context.

    After this, `kubectl` and `lab_helpers.cluster.connect()` talk to AKS. Running it
    again (a re-created cluster) replaces the old entry.
    """
    command = _az(
        "aks",
        "get-credentials",
        why="a kube context for the AKS cluster",
        resource_group=group,
        name=name,
        overwrite_existing=True,
    )
    return run_commands([command], run, settings)


def acr_login_command(registry: str) -> Command:
    """`az acr login --name <registry>` (built, not shown: `lab_helpers.images` uses it)."""
    return _az("acr", "login", why="docker login", name=check_registry_name(registry))


def acr_login(
    registry: str, *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Let the local `docker` push to the registry (needs a Docker daemon)."""
    return run_commands([acr_login_command(registry)], run, settings)


def acr_build_command(service: str, registry: str, version: str = __version__) -> Command:
    """`az acr build ... --platform linux/amd64 ...` for one service (built, not shown)."""
    registry = check_registry_name(registry)
    command = _az(
        "acr",
        "build",
        why=f"build lab-{service} in Azure, into {registry}.azurecr.io",
        registry=registry,
        image=f"lab-{service}:{version}",
        platform="linux/amd64",
        file=f"services/{service}/Dockerfile",
    )
    command.args += (".",)  # the build context: the repository root
    return command


def acr_build(
    service: str,
    registry: str,
    *,
    version: str = __version__,
    run: bool = False,
    settings: Settings | None = None,
) -> list[Command]:
    """Build one service's image **in Azure**, for learners without Docker on their machine.

    It uploads the repository (without what `.dockerignore` leaves out), builds
    `services/<service>/Dockerfile` for linux/amd64 (what AKS nodes run) and stores
    `lab-<service>:<version>` in the registry. This runs an *ACR Task*, which free-trial
    subscriptions may not use (`TasksOperationsNotAllowed`): there, deploy the prebuilt
    images instead (the aks overlay's default).
    """
    return run_commands([acr_build_command(service, registry, version)], run, settings)


def _power(verb: str, name: str, group: str, run: bool, settings: Settings | None):
    why = "stop the nodes (the cluster is kept)" if verb == "stop" else "start the nodes again"
    command = _az("aks", verb, why=why, resource_group=group, name=name)
    return run_commands([command], run, settings)


def stop_cluster(
    name: str = CLUSTER, group: str = GROUP, *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Stop the cluster's nodes between sessions; `start_cluster()` resumes it.

    A stopped cluster still costs its disks and public IP, and the registry keeps costing:
    deleting everything (`delete_group()`) is the only way to stop all billing.
    """
    return _power("stop", name, group, run, settings)


def start_cluster(
    name: str = CLUSTER, group: str = GROUP, *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Start a stopped cluster again (a few minutes); its nodes bill again from then on."""
    return _power("start", name, group, run, settings)


def delete_group(
    name: str = GROUP, *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Delete the resource group and everything in it: this stops all the lab's billing.

    `--yes` skips the question and `--no-wait` returns at once while Azure deletes (5 to
    15 minutes). AKS's own node resource group (`MC_<group>_<cluster>_<region>`) goes
    with the cluster. Check with `remaining()` until nothing is listed.
    """
    command = _az(
        "group",
        "delete",
        why="delete the group and everything in it",
        name=name,
        yes=True,
        no_wait=True,
    )
    return run_commands([command], run, settings)


def remaining(
    prefix: str = "crypto-lab", *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """List the resource groups whose name holds `prefix` (the lab's and AKS's `MC_...`).

    After `delete_group()` they show `Deleting`, then disappear: when the list is
    empty, nothing of the lab bills any more.
    """
    query = f"[?contains(name, '{prefix}')].{{name:name, state:properties.provisioningState}}"
    command = _az(
        "group",
        "list",
        why="what is left (empty: nothing bills any more)",
        query=query,
        output="table",
    )
    return run_commands([command], run, settings)


def quota(
    location: str = LOCATION, *, run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Show the subscription's vCPU quotas in a region: used and allowed, per VM family."""
    command = _az("vm", "list-usage", why="vCPU quotas", location=location, output="table")
    return run_commands([command], run, settings)
