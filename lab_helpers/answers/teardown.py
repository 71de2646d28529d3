"""How the exercises of notebook 06 (teardown and costs) are checked.

06.2: `leftovers(pids, ports)`, the check that nothing of the lab is left on this machine: the
checker runs it on real processes and ports it makes for the purpose (one alive, one gone, one
exited but not yet collected by its parent, a listening port, a closed one), then on the lab's
own after `down()`.
06.3: the commands that show what is left on a cluster (the namespace's objects) and on Azure
(the resource group): the real kubectl reads the first; the second is taken apart with az's
documented options (tests/test_az_commands.py runs az's own parser on the notebooks' commands).
06.1: the cost of a week with the nodes stopped, from `lab_helpers.costs`, the one dated table.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

from .. import cmdline, costs
from ..exercises import Wrong
from . import parse_step

HOURS_PER_WEEK = 7 * 24


# -- 06.1 nothing left on this machine ---------------------------------------------------------
@contextlib.contextmanager
def _specimens():
    """Processes and ports to look at: {name: pid}, {name: port} and the names that are still
    there."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    alive = subprocess.Popen(sleeper)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; never waited for here
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the zombie: exited, its status not yet collected
        with open(f"/proc/{zombie.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    try:
        yield (
            {"alive": alive.pid, "gone": gone.pid, "exited": zombie.pid},
            {"listening": listening.getsockname()[1], "closed": closed_port},
            ["alive", "listening"],
        )
    finally:
        alive.kill()
        alive.wait()
        zombie.wait()
        listening.close()


def verify_leftovers(leftovers, pids, ports) -> None:
    if not callable(leftovers):
        raise Wrong("`leftovers` is a function: leftovers(pids, ports)")
    with _specimens() as (some_pids, some_ports, expected):
        found = leftovers(some_pids, some_ports)
        if not isinstance(found, list | tuple | set):
            raise Wrong("return a list of the names still there")
        found = sorted(found)
    if "exited" in found:
        raise Wrong(
            "a process that exited is still listed: until its parent collects it, it is a "
            "zombie that answers os.kill(pid, 0); read its state in /proc/<pid>/stat (Z)"
        )
    if "alive" not in found:
        raise Wrong("a running process of the list is missing from your answer")
    if "gone" in found:
        raise Wrong("a process that exited long ago is still in your answer")
    if "listening" not in found:
        raise Wrong("a port where something listens is missing: try to connect to it")
    if "closed" in found:
        raise Wrong("a port where nothing listens is in your answer")
    if found != expected:
        raise Wrong(f"return the names, not the numbers: {found[:3]}")
    after = sorted(leftovers(pids, ports))
    if after:
        raise Wrong(f"after down(), your function still finds {after}: so do you agree?")


# -- 06.2 nothing left on the cluster, nor on Azure --------------------------------------------
def verify_checks(leftover_commands, NAMESPACE, GROUP) -> None:
    if not isinstance(leftover_commands, dict) or set(leftover_commands) != {"cluster", "azure"}:
        raise Wrong("`leftover_commands` is a dict with the keys cluster and azure")
    for key in ("cluster", "azure"):
        if not isinstance(leftover_commands[key], str):
            raise Wrong(f'write the "{key}" command')
    kube = parse_step(cmdline.kubectl, leftover_commands, "cluster")
    if kube.command != ("get",):
        raise Wrong("cluster: a check only reads: kubectl get")
    kinds = {cmdline.kind_of(k) for k in (kube.args[0].split(",") if kube.args else [])}
    whole = kinds == {"namespace"} and kube.args[1:2] == [NAMESPACE]
    if not whole:
        if kube.value("--namespace") != NAMESPACE:
            raise Wrong(f"cluster: look in the lab's namespace, {NAMESPACE}")
        if "all" in kinds and "persistentvolumeclaim" not in kinds:
            raise Wrong(
                "cluster: `all` leaves out the PersistentVolumeClaims, the disks that bill on "
                "Azure: add pvc"
            )
        if not kinds:
            raise Wrong("cluster: name what to list (e.g. all,pvc), or the namespace itself")
    words = parse_step(cmdline.split, leftover_commands, "azure")
    if words[:1] != ["az"]:
        raise Wrong("azure: the line starts with az")
    reads = {("group", "exists"), ("group", "show"), ("resource", "list")}
    if tuple(words[1:3]) not in reads:
        if tuple(words[1:3]) == ("group", "delete"):
            raise Wrong("azure: that deletes; the check only reads what is left")
        raise Wrong("azure: ask about the resource group (az group ..., or az resource list)")
    given = [words[i + 1] for i, w in enumerate(words[:-1])
             if w in ("--name", "-n", "--resource-group", "-g")]  # fmt: skip
    if given != [GROUP]:
        raise Wrong(f"azure: name the lab's resource group, {GROUP}")


# -- 06.3 the cost of stopped nodes --------------------------------------------------------------
def stopped_week_reference() -> float:
    """What the cluster bills in a week with its nodes stopped: every item but the node VMs
    (and the free control plane), from the one table."""
    table = costs.cluster_table()
    still = [i for i in table.index if not i.startswith(("node VM", "AKS control plane"))]
    return float(HOURS_PER_WEEK * table.loc[still, "usd_per_hour"].sum())


def verify_stopped_week(stopped_week_cost) -> None:
    if isinstance(stopped_week_cost, bool) or not isinstance(stopped_week_cost, int | float):
        raise Wrong(f"one number of US dollars, not a {type(stopped_week_cost).__name__}")
    expected = stopped_week_reference()
    table = costs.cluster_table()
    if abs(stopped_week_cost - expected) < 0.01:
        return
    if abs(stopped_week_cost - HOURS_PER_WEEK * table["usd_per_hour"].sum()) < 0.01:
        raise Wrong("stopped nodes do not bill: leave the node VMs out")
    each = table.drop([i for i in table.index if i.startswith("node VM")])
    if abs(stopped_week_cost - HOURS_PER_WEEK * each["usd_per_hour_each"].sum()) < 0.01:
        raise Wrong("each item bills for its quantity: usd_per_hour, not usd_per_hour_each")
    if abs(stopped_week_cost - expected / 7) < 0.01:
        raise Wrong("that is one day: a week has 7 × 24 hours")
    raise Wrong("not this sum: every item that still exists, times the hours of a week")
