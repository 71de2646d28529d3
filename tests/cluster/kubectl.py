"""Running ``kubectl`` (and ``helm``) from the cluster suite, the way a person types them."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from lab_helpers.commands import find_tool, tool_path

ROOT = Path(__file__).resolve().parent.parent.parent


def run(
    line: str,
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run one command line (``kubectl ...``, ``helm ...``) from the repository's folder;
    ``kubeconfig`` replaces ``$KUBECONFIG`` (a student's file), ``context`` is added as
    ``--context`` (kubectl) or ``--kube-context`` (helm)."""
    args = shlex.split(line)
    args[0] = find_tool(args[0])
    if context:
        flag = "--kube-context" if Path(args[0]).name == "helm" else "--context"
        args += [flag, context]
    env = {**os.environ, "PATH": tool_path()}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
        env.pop("LAB_KUBE_CONTEXT", None)
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"`{line}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def kustomization(folder: Path, namespace: str, overlay: str = "kind") -> Path:
    """A kustomization in ``folder``: the overlay, moved into ``namespace`` (kustomize renames
    the Namespace object too)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = ROOT / "manifests" / "overlays" / overlay
    relative = Path(os.path.relpath(base, folder.resolve())).as_posix()
    (folder / "kustomization.yaml").write_text(
        f"resources:\n  - {relative}\nnamespace: {namespace}\n"
    )
    return folder
