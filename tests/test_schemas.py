"""The files around the cluster, checked against their schemas with ``check-jsonschema``: the kind
cluster config, the dev container, the GitHub workflows; and the cluster workflow runs on a
change to anything its steps read or import (tests/schemas/README.md says where each schema
comes from)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CHECK = Path(sys.executable).parent / "check-jsonschema"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def check(*args: str) -> subprocess.CompletedProcess:
    if not CHECK.exists():
        pytest.skip("check-jsonschema is not installed: pip install -e '.[dev]'")
    return subprocess.run([str(CHECK), *args], capture_output=True, text=True, timeout=300)


def test_the_kind_config_follows_kind_s_types():
    run = check("--schemafile", str(SCHEMAS / "kind-cluster-v1alpha4.schema.json"),
                str(ROOT / "manifests" / "overlays" / "kind" / "cluster.yaml"))  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_kind_schema_refuses_an_unknown_field(tmp_path):
    wrong = tmp_path / "cluster.yaml"
    wrong.write_text("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: master\n")
    run = check("--schemafile", str(SCHEMAS / "kind-cluster-v1alpha4.schema.json"), str(wrong))
    assert run.returncode == 1 and "master" in run.stdout


def test_the_devcontainer_follows_the_dev_container_spec(tmp_path):
    # devcontainer.json allows comments (JSONC): check-jsonschema reads it as JSON5.
    source = ROOT / ".devcontainer" / "devcontainer.json"
    copy = tmp_path / "devcontainer.json5"
    copy.write_text(source.read_text())
    run = check("--schemafile", str(SCHEMAS / "devContainer.base.schema.json"), str(copy))
    assert run.returncode == 0, run.stdout + run.stderr


def devcontainer() -> dict:
    import json5

    return json5.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())


def test_the_devcontainer_has_the_cluster_tools_and_opens_jupyterlab():
    config = devcontainer()
    features = " ".join(config["features"])
    for tool in ("docker-in-docker", "kubectl-helm", "kind", "azure-cli"):
        assert tool in features, tool
    assert {8888, 8000} <= set(config["forwardPorts"])
    assert config["postCreateCommand"] == "make setup"
    start = (ROOT / config["postStartCommand"].split()[-1]).read_text()
    assert "make stack-up" in start and "jupyter lab" in start and "--port=8888" in start
    # Debian, as the lab's machines: apt has influxdb and nats-server.
    assert "bookworm" in config["image"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_the_workflows_follow_github_s_schema(workflow):
    run = check("--builtin-schema", "vendor.github-workflows", str(workflow))
    assert run.returncode == 0, run.stdout + run.stderr


# -- the cluster workflow runs whenever something it uses changes ----------------------------


def glob_regex(pattern: str) -> re.Pattern:
    """A GitHub paths filter as a regex: ``**`` crosses folders, ``*`` does not."""
    out = ""
    for part in re.split(r"(\*\*|\*)", pattern):
        out += {"**": ".*", "*": "[^/]*"}.get(part, re.escape(part))
    return re.compile(out + "$")


def filters() -> list[re.Pattern]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "cluster.yml").read_text())
    events = workflow[True]  # YAML reads the key `on` as True
    push, pull = events["push"]["paths"], events["pull_request"]["paths"]
    assert push == pull, "push and pull_request watch the same paths"
    return [glob_regex(p) for p in push]


def imported_files(path: Path) -> set[Path]:
    """The repository's files a test module imports (tests.*, lab_helpers.*), followed."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen or not current.exists():
            continue
        seen.add(current)
        for node in ast.walk(ast.parse(current.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] in ("tests", "lab_helpers"):
                    base = ROOT / Path(*name.split("."))
                    todo += [base.with_suffix(".py"), base / "__init__.py"]
    return seen


def test_the_cluster_workflow_watches_everything_it_uses():
    patterns = filters()
    used = set()
    for test in (ROOT / "tests" / "cluster").glob("*.py"):
        used |= imported_files(test)
    used |= imported_files(ROOT / "tests" / "test_manifests.py")
    # pytest loads the conftest.py files above the tests; make cluster runs these.
    used |= {ROOT / "tests" / "conftest.py", ROOT / "Makefile", ROOT / "scripts" / "setup.sh"}
    used |= {ROOT / "pyproject.toml", ROOT / ".dockerignore"}
    used |= set((ROOT / "manifests").rglob("*.yaml")) | set((ROOT / "services").rglob("*.py"))
    workflow = (ROOT / ".github" / "workflows" / "cluster.yml").read_text()
    used |= {
        ROOT / "notebooks" / f"{nb}.ipynb" for nb in re.findall(r"\b(0\d_[a-z_]+)\b", workflow)
    }
    assert any("test_deploy" in str(p) for p in used) and ROOT / "tests" / "services.py" in used
    unwatched = sorted(
        str(p.relative_to(ROOT))
        for p in used
        if not any(r.match(str(p.relative_to(ROOT))) for r in patterns)
    )
    assert not unwatched, f"cluster.yml's path filters miss {unwatched}"


def test_the_path_check_finds_a_missing_filter():
    patterns = [glob_regex(p) for p in ["tests/cluster/**", "lab_helpers/**"]]
    assert not any(r.match("tests/services.py") for r in patterns)
    assert any(r.match("tests/cluster/test_deploy.py") for r in patterns)
    assert not glob_regex("services/*").match("services/api/main.py")


def test_the_images_workflow_publishes_what_the_overlay_runs():
    from lab_helpers import images

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    job = workflow["jobs"]["publish"]
    assert job["strategy"]["matrix"]["service"] == sorted(
        images.SERVICES, key="source ingest api".split().index
    )
    build = next(
        s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action")
    )
    assert set(build["with"]["platforms"].split(",")) == set(images.PREBUILT_PLATFORMS)
    meta = next(s for s in job["steps"] if s.get("id") == "meta")
    assert meta["with"]["images"].startswith("ghcr.io/${{ github.repository_owner }}/lab-")
    assert workflow[True]["push"]["tags"] == ["v*"]
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}
