"""`%%cluster` cells: the commands a learner types (`docker`, `kind`, `kubectl`, `helm`,
`az`), run for real on a cluster and explained without one.

A notebook chooses its mode once, then writes commands exactly as in a terminal:

    from lab_helpers import shell
    shell.use(MODE)            # "local", "kind" or "aks"; registers the %%cluster cell magic

    %%cluster
    kubectl -n {NAMESPACE} get pods -o wide

- **kind** or **aks**: each line is shown (`$ ...`) and run from the repository's folder, its
  output streamed as it comes; a failing line stops the cell with one sentence (and fails a
  headless run), the lines after it do not run.
- **local**: each line is shown with what it would do and why, and is not run; the cell after
  it runs the local equivalent.

`%%cluster kind` (or `%%cluster aks`) runs the cell in that mode only (`kind load` has no
meaning on AKS, `docker push` to Azure none on kind); in the other modes it is explained.
`%%cluster aks --when REGISTRY` runs it only when the Python variable `REGISTRY` is set (not
empty): a step that only some learners take.
`{NAME}` takes the value of a Python variable, as in `!` lines. Lines may end in `\\` to
continue; `#` starts a comment. `history` keeps every command of the session with
whether it ran (an exercise checker reads `shell.last()`).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from .cluster import kube_context
from .commands import Command, first_program
from .config import project_root
from .errors import LabError

MODES = ("local", "kind", "aks")
_mode = "local"

# What each command does, and why the lab uses it: shown for every line in local mode (and for
# a cell meant for the other cluster mode). Keys are the first words of the command.
EXPLAIN = {
    ("docker", "build"): "builds an image from a Dockerfile, layer by layer (unchanged "
    "layers come from the cache), and tags it with the lab's version",
    ("docker", "run"): "starts a container from an image: the same program as "
    "`python services/<name>/main.py`, in its own file system and network",
    ("docker", "ps"): "lists the running containers, with their image, ports and uptime "
    "(`-a` adds the stopped ones, and why they stopped)",
    ("docker", "tag"): "gives an image a second name, such as the registry's address, without "
    "copying it",
    ("docker", "images"): "lists the images on this machine, with their tags and sizes",
    ("docker", "push"): "uploads an image to a registry, from which the cluster's nodes pull it",
    ("docker", "rm"): "removes a stopped container (`-f` stops it first)",
    ("docker", "logs"): "shows what a container wrote to its standard output",
    ("kind", "load"): "copies an image from this machine's Docker into the kind cluster's "
    "nodes, so no registry is needed",
    ("kind", "create"): "creates a Kubernetes cluster whose nodes are Docker containers",
    ("kind", "delete"): "deletes the kind cluster and everything in it",
    ("kubectl", "apply"): "sends the manifests to the API server, which creates or updates "
    "each object so that the cluster matches them (running it again changes nothing)",
    ("kubectl", "get"): "lists objects as the API server holds them (`-o wide` adds the "
    "node and the pod's address)",
    ("kubectl", "describe"): "shows an object in detail, with its recent events",
    ("kubectl", "scale"): "sets the number of pods of a Deployment; its ReplicaSet starts or "
    "stops pods until the count matches",
    ("kubectl", "delete"): "deletes objects; a deleted pod of a Deployment or StatefulSet is "
    "replaced by its controller within seconds (self-healing)",
    ("kubectl", "rollout", "status"): "waits until a rollout is finished: every new pod "
    "ready, every old one gone",
    ("kubectl", "rollout", "undo"): "goes back to the previous pod template of a "
    "Deployment (kept in its ReplicaSets), which starts a rolling update to it",
    ("kubectl", "rollout", "history"): "lists the revisions of a Deployment",
    ("kubectl", "rollout", "restart"): "replaces every pod of a workload, one by one",
    ("kubectl", "set", "image"): "changes a container's image in the pod template, which "
    "starts a rolling update",
    ("kubectl", "logs"): "shows what a pod's containers wrote to their standard output",
    ("kubectl", "port-forward"): "carries a local port to a Service or pod of the cluster, "
    "until it is stopped",
    ("kubectl", "top"): "shows the CPU and memory the pods use now (needs metrics-server)",
    ("kubectl", "create"): "creates one object from the command line",
    ("kubectl", "config"): "reads or changes the kube contexts in your kubeconfig",
    ("helm", "repo"): "registers or refreshes a repository of Helm charts",
    ("helm", "install"): "installs a chart as a release: renders its templates with your "
    "values and creates every object",
    ("helm", "upgrade"): "changes a release to a new chart version or new values "
    "(`--install` installs it when missing)",
    ("helm", "uninstall"): "deletes every object of a release",
    ("helm", "list"): "lists the releases of a namespace",
    ("helm", "template"): "renders a chart's objects without installing anything",
    ("az",): "talks to Azure (it needs `az login`; most steps create resources that cost money)",
    ("python", "lab_helpers.images", "overlay"): "writes a kustomize overlay: the aks one, with "
    "the images of your registry instead of the prebuilt ones",
    ("python", "lab_helpers.cluster", "secrets"): "creates the Secret with the "
    "InfluxDB passwords, generated, never printed (a program, because no file may hold them)",
}


def explain(line: str) -> str:
    """What a command line does, from `EXPLAIN` (the longest matching first words)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    program = first_program(line)
    words = words[words.index(program) :] if program in words else words
    # Options between the words (kubectl -n NS get) do not count.
    plain = tuple(
        w for i, w in enumerate(words) if not w.startswith("-") and not _option_value(words, i)
    )
    for size in (4, 3, 2, 1):
        if plain[:size] in EXPLAIN and len(plain) >= size:
            return EXPLAIN[plain[:size]]
    return f"runs `{program}`" if program else "a shell command"


def _option_value(words: list[str], i: int) -> bool:
    """True for the value of an option given apart (`-n crypto-lab`)."""
    return i > 0 and words[i - 1] in ("-n", "--namespace", "--context", "-f", "-l", "-c", "-o")


@dataclass
class Record:
    """One command of a `%%cluster` cell: the mode, the line, whether it ran, its exit code."""

    mode: str
    line: str
    ran: bool
    returncode: int | None = None


history: list[Record] = []
_last_cell: list[Record] = []


def last() -> list[Record]:
    """The commands of the last `%%cluster` cell that was run (or explained)."""
    return list(_last_cell)


def mode() -> str:
    """The mode `use` chose (`local` until then)."""
    return _mode


def use(chosen: str | None = None) -> None:
    """Choose where `%%cluster` cells run: `local` (explained only), `kind` or `aks`.

    `None` takes `LAB_MODE`: `local`, or for `cluster` the kind of the current kube
    context (`kind-...` is kind, anything else AKS). A cluster mode sets `LAB_MODE=cluster`
    for this process, so the lab's helpers may run what they show. Registers the cell magic
    when running in IPython; `mode()` tells the mode chosen.
    """
    global _mode
    if chosen is None:
        if os.environ.get("LAB_MODE", "local").strip().lower() == "cluster":
            chosen = "kind" if (kube_context() or "").startswith("kind-") else "aks"
        else:
            chosen = "local"
    chosen = chosen.strip().lower()
    if chosen not in MODES:
        raise LabError(f"MODE={chosen!r} is not valid: use one of {', '.join(MODES)}")
    _mode = chosen
    if chosen != "local":
        os.environ["LAB_MODE"] = "cluster"
    _register()
    if chosen == "local":
        print("local mode: %%cluster cells show each command and what it would do; the "
              "local equivalent runs beside it")  # fmt: skip
    else:
        context = kube_context() or "none yet"
        print(f"{chosen} mode: %%cluster cells run their commands (kube context: {context})")


def lines_of(cell: str) -> list[str]:
    """The command lines of a cell: continuations joined, blank and comment lines dropped."""
    commands, pending = [], ""
    for raw in cell.splitlines():
        text = raw.rstrip()
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        text = (pending + text.strip()).strip()
        pending = ""
        if text and not text.startswith("#"):
            commands.append(text)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def run_cell(
    cell: str, only: tuple[str, ...] = (), when: tuple[str, bool] | None = None
) -> list[Record]:
    """Run (or explain) the command lines of a cell in the current mode; see the module help.

    `only`: the cluster modes in which the cell runs (default: kind and aks). `when`:
    (name, value) of the variable that must be set for the cell to run.
    """
    only = only or ("kind", "aks")
    runs = _mode in only and (when is None or when[1])
    _last_cell.clear()
    for line in lines_of(cell):
        record = Record(_mode, line, ran=runs)
        _last_cell.append(record)
        history.append(record)
        if not runs:
            print(f"$ {line}\n  ↳ {explain(line)}")
            continue
        command = Command.line(line, cwd=project_root())
        command.show()
        try:
            command.execute()
        finally:
            record.returncode = command.returncode
    if not runs:
        if _mode == "local":
            where = "local mode"
        elif _mode not in only:
            where = f"{' or '.join(only)} only"
        else:
            where = f"{when[0] if when else ''} is not set"
        print(f"({where}: shown, not run)")
    return list(_last_cell)


def _register() -> None:
    """Register `%%cluster` in the running IPython (nothing outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ipython = get_ipython()
    if ipython is None:
        return

    def cluster(line: str, cell: str) -> None:
        words = line.split()
        when = None
        if "--when" in words:
            at = words.index("--when")
            if at + 1 >= len(words):
                raise LabError(f"%%cluster {line}: --when needs the name of a variable")
            name = words[at + 1]
            when = (name, bool(ipython.user_ns.get(name)))
            del words[at : at + 2]
        unknown = [m for m in words if m not in ("kind", "aks")]
        if unknown:
            raise LabError(f"%%cluster {line}: name kind, aks or nothing, not {unknown[0]!r}")
        expanded = ipython.var_expand(cell, depth=1)
        run_cell(expanded, tuple(words), when)

    ipython.register_magic_function(cluster, magic_kind="cell", magic_name="cluster")


def load_ipython_extension(ipython) -> None:  # noqa: ANN001 - IPython's own hook
    """`%load_ext lab_helpers.shell`: the mode from `LAB_MODE` (see `use`)."""
    use(None)
