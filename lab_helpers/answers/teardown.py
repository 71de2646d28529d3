"""Exercises of notebook 06 (teardown and costs) and how they are checked.

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
from ..exercises import Exercise, Wrong, WrongAnswer
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


# Most wrong answers are the solution with one change (see `WrongAnswer.edit`).
_ZOMBIE = """        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            continue
"""
_ONLY_PORTS = """def leftovers(pids, ports):
    return [name for name, port in ports.items() if port_open(port)]
"""
_CLUSTER = "kubectl -n {NAMESPACE} get all,pvc,secret"


EXERCISES = [
    Exercise(
        key="06.1",
        title="a week with the nodes stopped",
        verify=verify_stopped_week,
        hint="costs.cluster_table() has a row per item; stopping the cluster stops only the "
        "node VMs (and the control plane is free)",
        writes="the cost, in US dollars, of a week of the cluster with its nodes stopped",
        checked_by="a reference computed from lab_helpers.costs (the one dated table), with "
        "feedback for the nodes counted, the quantities forgotten, a day instead of a week",
        minutes=5,
        wrong={
            "nodes counted": WrongAnswer(
                'stopped_week_cost = 168 * costs.cluster_table()["usd_per_hour"].sum()\n',
                says="leave the node VMs out",
            ),
            "one day": WrongAnswer(edit={"7 * 24 *": "24 *"}, says="one day"),
        },
    ),
    Exercise(
        key="06.2",
        title="nothing left on this machine",
        verify=verify_leftovers,
        hint="signal 0 asks whether a process exists (os.kill); a process that has exited "
        "but was not collected by its parent still exists for that signal: /proc/<pid>/stat "
        "says Z; for a port, try to connect (port_open)",
        writes="`leftovers(pids, ports)`: the names of the processes still running and of "
        "the ports still listening",
        checked_by="run on real specimens the checker makes (a live process, one long gone, "
        "a zombie, a listening port, a closed one), then on the lab's own after down()",
        minutes=8,
        wrong={
            "ports only": WrongAnswer(_ONLY_PORTS, says="running process"),
            "a zombie counted as running": WrongAnswer(edit={_ZOMBIE: ""}, says="zombie"),
        },
    ),
    Exercise(
        key="06.3",
        optional=True,
        title="nothing left on the cluster and on Azure",
        verify=verify_checks,
        hint="kubectl get can list several kinds at once, separated by commas, in one "
        "namespace (-n); `all` is only the workloads and Services. az has a command that "
        "answers whether a resource group exists",
        writes="a `kubectl get` line that shows what is left of the lab in its namespace, "
        "and an `az` line that shows whether its resource group still exists",
        checked_by="the real kubectl reads the first line (lab_helpers.cmdline), then the "
        "namespace and kinds are checked; the az line is split with the shell's rules and its "
        "command and group checked (az's own parser reads the notebooks' az lines in "
        "tests/test_az_commands.py)",
        minutes=5,
        wrong={
            "all without the disks": WrongAnswer(
                edit={"get all,pvc,secret": "get all"}, says="PersistentVolumeClaims"
            ),
            "another namespace": WrongAnswer(
                edit={_CLUSTER: "kubectl get all,pvc -n default"}, says="lab's namespace"
            ),
            "deletes instead of checking": WrongAnswer(
                edit={
                    _CLUSTER: "kubectl get namespace {NAMESPACE}",
                    "az group exists --name": "az group delete --yes --name",
                },
                says="that deletes",
            ),
        },
    ),
]
