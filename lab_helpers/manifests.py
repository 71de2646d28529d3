"""The lab's Kubernetes manifests, rendered offline: what `kubectl kustomize` makes of an
overlay, as Python dicts, for a notebook to walk through or a test to check. No cluster needed:

    from lab_helpers import manifests

    objects = manifests.render("kind")      # or "aks", "base", or a folder
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from .cluster import ClusterError
from .commands import ToolMissingError, find_tool
from .config import project_root

MANIFESTS = project_root() / "manifests"


def overlay_dir(overlay: str | Path) -> Path:
    """The folder of a kustomize overlay: a name (`kind`, `aks`...) or a path."""
    path = Path(overlay)
    candidates = [path] if path.is_absolute() or path.exists() else []
    candidates += [MANIFESTS / "overlays" / str(overlay), MANIFESTS / str(overlay)]
    for folder in candidates:
        if any((folder / name).exists() for name in ("kustomization.yaml", "kustomization.yml")):
            return folder
    overlays = MANIFESTS / "overlays"
    names = sorted(p.name for p in overlays.iterdir() if p.is_dir()) if overlays.is_dir() else []
    raise ClusterError(
        f"there is no kustomize overlay {str(overlay)!r}: use one of "
        f"{', '.join(names) or '(none yet under manifests/overlays/)'}, or the path of a folder "
        "that holds a kustomization.yaml"
    )


def render(overlay: str | Path) -> list[dict]:
    """The objects of a kustomize overlay, as dicts: what `kubectl kustomize` prints.

    `overlay` is a name under `manifests/overlays/` (`kind`, `aks`...) or a folder.
    """
    folder = overlay_dir(overlay)
    try:
        command = [find_tool("kubectl"), "kustomize", str(folder)]
    except ToolMissingError:
        standalone = shutil.which("kustomize")
        if not standalone:
            raise
        command = [standalone, "build", str(folder)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise ClusterError(
            f"kustomize cannot render {folder}: {lines[-1] if lines else 'no error text'}"
        )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
