"""The lab on a kind cluster on this machine, in one command: `make cluster`.

`python -m lab_helpers.kind up` (what `make cluster` runs), each step shown as it runs:

1. `kind create cluster --config manifests/overlays/kind/cluster.yaml` (kept when it exists);
2. `docker build` of the three images, and `kind load docker-image` into the node;
3. `kubectl apply -f manifests/base/namespace.yaml`, the InfluxDB Secret
   (`python -m lab_helpers.cluster secrets`), then `kubectl apply -k manifests/overlays/kind`;
4. `kubectl rollout status` of the five workloads;
5. `kubectl port-forward svc/api` in the background: the dashboard on http://127.0.0.1:8080/.

`python -m lab_helpers.kind down` (`make cluster-down`) stops the port-forward and deletes
the cluster. Without Docker or kind, `up` says in one sentence what is missing and where to
get it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from . import images
from .cluster import DEFAULT_NAMESPACE, ClusterError
from .commands import Command, CommandError, ToolMissingError, find_tool, tool_path
from .config import env_value, load_settings, project_root
from .errors import command_line
from .forward import PortForward
from .forward import command as forward_command
from .pods import WORKLOADS

CONFIG = project_root() / "manifests" / "overlays" / "kind" / "cluster.yaml"
OVERLAY = "manifests/overlays/kind"
NAMESPACE_FILE = "manifests/base/namespace.yaml"
# The node image in CONFIG is kind v0.32.0's: older kinds cannot `kind load` into it.
MIN_KIND = (0, 32)
DASHBOARD_PORT = 8080  # 8000 is the local stack's api (make lab): both can run at once
INSTALL = {
    "docker": "Docker (https://docs.docker.com/get-docker/)",
    "daemon": "a running Docker daemon (docker is installed, but `docker info` gets no answer: "
    "start Docker Desktop, or `sudo systemctl start docker`)",
    "kind": f"kind {'.'.join(map(str, MIN_KIND))} or newer "
    "(https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
    "kubectl": "kubectl (`make setup` installs it into .venv)",
}


def cluster_name() -> str:
    """The kind cluster's name, from the kind config in the repository."""
    return str(yaml.safe_load(CONFIG.read_text())["name"])


def context() -> str:
    """The kube context kind writes for the cluster: `kind-<name>`."""
    return f"kind-{cluster_name()}"


def parse_kind_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from what `kind version` prints (`kind v0.32.0 go1.25 linux/amd64`)."""
    found = re.search(r"\bv(\d+)\.(\d+)\.\d+", text)
    return (int(found[1]), int(found[2])) if found else None


def kind_version(kind: str) -> tuple[int, int] | None:
    """The (major, minor) version of the `kind` program at `kind`, None if it will not say."""
    try:
        out = subprocess.run([kind, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_kind_version(out.stdout)


def missing() -> str | None:
    """One sentence naming what `make cluster` lacks here and where to get it, or None."""
    lacking = []
    if shutil.which("docker", path=tool_path()) is None:
        lacking.append(INSTALL["docker"])
    elif not images.docker_available():
        lacking.append(INSTALL["daemon"])
    for tool in ("kind", "kubectl"):
        try:
            found = find_tool(tool)
        except ToolMissingError:
            lacking.append(INSTALL[tool])
            continue
        if tool == "kind":
            version = kind_version(found)
            if version is not None and version < MIN_KIND:
                have = ".".join(map(str, version))
                lacking.append(f"{INSTALL['kind']} in place of its {have}")
    if not lacking:
        return None
    return (
        "make cluster needs " + " and ".join(lacking) + ", which this machine lacks: install "
        "them, or open the lab in its Codespace (.devcontainer), where all are ready"
    )


def _state_dir() -> Path:
    return load_settings().lab_dir / "cluster"


def _existing_clusters() -> list[str]:
    found = subprocess.run(
        [find_tool("kind"), "get", "clusters"], capture_output=True, text=True, timeout=60
    )
    return found.stdout.split()


def up(build: bool = True, port: int | None = None) -> str:
    """Create (or reuse) the kind cluster and deploy the lab on it; returns the dashboard URL."""
    sentence = missing()
    if sentence:
        raise ClusterError(sentence)
    name, ctx = cluster_name(), context()
    root = project_root()
    steps: list[Command] = []
    if name in _existing_clusters():
        print(f"kind cluster {name!r} exists: deploying onto it")
    else:
        config = str(CONFIG.relative_to(root))
        steps.append(
            Command(
                ("kind", "create", "cluster", "--config", config, "--wait", "120s"),
                why="a one-node Kubernetes cluster in a Docker container",
            )  # fmt: skip
        )
    if build:
        steps += images.kind_commands(name)
    kubectl = ("kubectl", "--context", ctx)
    steps += [
        Command((*kubectl, "apply", "-f", NAMESPACE_FILE), why="the lab's namespace"),
        Command(
            (sys.executable, "-m", "lab_helpers.cluster", "secrets", "--context", ctx),
            why="the InfluxDB passwords, generated, into a Secret",
        ),
        Command((*kubectl, "apply", "-k", OVERLAY), why="everything else of the lab"),
    ]
    for workload, kind in WORKLOADS.items():
        steps.append(
            Command(
                (
                    *kubectl,
                    "-n",
                    DEFAULT_NAMESPACE,
                    "rollout",
                    "status",
                    f"{kind.lower()}/{workload}",
                    "--timeout=300s",
                ),
                why=f"wait until {workload} is rolled out",
            )  # fmt: skip
        )
    for step in steps:
        step.require()
    for step in steps:
        step.show()
        step.execute()
    return forward_dashboard(port)


def forward_dashboard(port: int | None = None) -> str:
    """Start `kubectl port-forward svc/api` in the background (replacing an earlier one)."""
    port = port if port is not None else env_value("LAB_CLUSTER_PORT", DASHBOARD_PORT, int)
    stop_forward()
    state = _state_dir()
    args = forward_command("svc/api", 8000, DEFAULT_NAMESPACE, port, context())
    print("$ " + " ".join(args) + "    # in the background")
    try:
        forward = PortForward(args, timeout=60, log_file=state / "port-forward.log")
    except ClusterError:
        if port == 0:
            raise
        print(f"port {port} is taken: letting kubectl choose a free one")
        args = forward_command("svc/api", 8000, DEFAULT_NAMESPACE, 0, context())
        forward = PortForward(args, timeout=60, log_file=state / "port-forward.log")
    (state / "port-forward.pid").write_text(str(forward.process.pid))
    print(f"✅ the lab runs on kind cluster {cluster_name()!r}; dashboard: {forward.url}/ "
          "(`make cluster-down` removes it all)")  # fmt: skip
    return forward.url


def stop_forward() -> bool:
    """Stop the background port-forward that `up` started, if it still runs."""
    pid_file = _state_dir() / "port-forward.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    # Only our kubectl: a recycled process id may belong to anything.
    if b"port-forward" not in cmdline:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def down() -> None:
    """Stop the port-forward and delete the kind cluster (and everything in it)."""
    if stop_forward():
        print("stopped the dashboard's port-forward")
    name = cluster_name()
    try:
        clusters = _existing_clusters()
    except ToolMissingError:
        print("kind is not installed: there is no kind cluster to delete")
        return
    if name not in clusters:
        print(f"there is no kind cluster {name!r}: nothing to delete")
        return
    step = Command(("kind", "delete", "cluster", "--name", name), why="the cluster and its data")
    step.show()
    step.execute()


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab_helpers.kind", description="The lab on a local kind cluster."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="create the cluster, build, load, deploy, forward")
    start.add_argument("--no-build", action="store_true", help="keep the images already loaded")
    start.add_argument("--port", type=int, help=f"dashboard port (default {DASHBOARD_PORT})")
    sub.add_parser("down", help="stop the port-forward, delete the cluster")
    sub.add_parser("missing", help="say what make cluster lacks here, if anything")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            up(build=not args.no_build, port=args.port)
        except CommandError as err:
            raise ClusterError(
                f"{err} (`make cluster` can be run again: it reuses what exists)"
            ) from None
    elif args.command == "down":
        down()
    else:
        print(missing() or "✅ Docker, kind and kubectl are here: `make cluster` can run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
