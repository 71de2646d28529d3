"""The environment files agree with each other, and local state is never committed."""

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name_and_bound(spec: str) -> tuple[str, str]:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip())
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += [s for s in extra if not s.startswith("lab_helpers")]
    return dict(_name_and_bound(s) for s in specs)


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs = [s for s in env["dependencies"] if isinstance(s, str)]
    specs += [s for d in env["dependencies"] if isinstance(d, dict) for s in d.get("pip", [])]
    conda = dict(_name_and_bound(s) for s in specs)
    # conda-forge names the official Kubernetes client python-kubernetes.
    conda["kubernetes"] = conda.pop("python-kubernetes")
    assert conda.pop("python") == ">=3.11"
    conda.pop("pip")
    assert conda == pyproject_requirements()


def test_local_state_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (".lab/", ".venv/", "build/"):
        assert entry in ignored
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [f for f in tracked.splitlines() if f.startswith((".lab/", "build/", ".venv/"))]


# Shapes of committed secrets: private keys, cloud keys, and passwords written as values.
SECRET_SHAPES = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|AKIA[0-9A-Z]{16}"
    r"|(?i:password|secret|token)[\"']?\s*[:=]\s*[\"'][A-Za-z0-9_\-+/]{16,}[\"']"
)


def test_no_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    found = []
    for name in tracked.splitlines():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".csv", ".png"):
            continue
        text = path.read_text(errors="replace")
        found += [
            f"{name}: {m.group(0)[:60]}"
            for m in SECRET_SHAPES.finditer(text)
            if "not-" not in m.group(0)  # the tests' own fakes say so: "not-the-password"
        ]
    assert not found, found
    assert not [n for n in tracked.splitlines() if Path(n).name == "credentials.json"]
