"""Where code lives (docs/architecture.md): `services/<name>/` holds what only that service
runs; `lab_helpers/` holds what the notebooks or two services share.

Read from the code's own imports (Python's `ast`, nothing is run): lab_helpers imports nothing
of services/, no service imports another, every service has the same layout, and its image
gets what it imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/main.py"))
OWN = {name: {p.stem for p in (ROOT / "services" / name).glob("*.py")} for name in SERVICES}
SERVICE_MODULES = set().union(*OWN.values())


def imports(path: Path) -> list[tuple[int, str, int]]:
    """`(line, module, level)` of every import in a file (level > 0: a relative import)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_there_are_services_to_check():
    assert {"api", "ingest", "source", "stats"} <= set(SERVICES)
    assert {"main", "settings", "worker", "producer", "routes", "models"} <= SERVICE_MODULES


def test_lab_helpers_imports_nothing_of_the_services():
    wrong = []
    for path in sorted((ROOT / "lab_helpers").rglob("*.py")):
        for line, module, level in imports(path):
            top = module.split(".")[0]
            if level == 0 and (top == "services" or top in SERVICE_MODULES):
                wrong.append(f"{where(path, line)} imports {module}")
        # Nor does it load one by its path, or put a service's folder on the import path.
        text = path.read_text()
        for pattern in (r"sys\.path\.(insert|append)", r"spec_from_file_location", r"run_path"):
            for match in re.finditer(pattern, text):
                wrong.append(f"{where(path, text.count(chr(10), 0, match.start()) + 1)}: "
                             f"{match.group()}")  # fmt: skip
    assert not wrong, "lab_helpers must not depend on services/: " + "; ".join(wrong)


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_imports_no_other_service(name):
    others = SERVICE_MODULES - OWN[name]
    wrong = []
    for path in sorted((ROOT / "services" / name).glob("*.py")):
        for line, module, level in imports(path):
            top = module.split(".")[0]
            if level or top == "services" or top in others:
                wrong.append(f"{where(path, line)} imports {'.' * level}{module}")
    assert not wrong, f"{name} may import its own modules and lab_helpers only: {wrong}"


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_the_same_layout(name):
    folder = ROOT / "services" / name
    assert (folder / "README.md").is_file() and (folder / "settings.py").is_file()
    settings = _top_level_names(folder / "settings.py")
    assert {"SERVICE", "DEFAULT_PORT", "Settings", "read_settings"} <= settings, settings
    main = _top_level_names(folder / "main.py")
    assert {"build_app", "main"} <= main
    # What only the service runs is in its folder, and its image copies the whole folder.
    dockerfile = folder / "Dockerfile"
    if dockerfile.exists():  # the stats service's Dockerfile is the learner's (notebook 01)
        copies = re.findall(r"^COPY (\S+) (\S+)$", dockerfile.read_text(), re.M)
        assert (f"services/{name}", f"services/{name}") in copies, copies


def test_ruff_knows_every_module_of_the_services_as_local():
    isort = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["isort"]
    assert set(isort["known-local-folder"]) == SERVICE_MODULES - {"main"}


def test_every_package_a_service_imports_is_pinned_for_its_image():
    pinned = set()
    for line in (ROOT / "services" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pinned.add(Requirement(line).name.lower().replace("_", "-"))
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for name in SERVICES:
        for path in sorted((ROOT / "services" / name).glob("*.py")):
            for line, module, level in imports(path):
                top = module.split(".")[0]
                if level or top in OWN[name] | {"lab_helpers", "__future__"}:
                    continue
                if top in sys.stdlib_module_names:
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                if not dists & pinned:
                    missing.append(f"{where(path, line)}: {module} ({', '.join(dists) or '?'})")
    assert not missing, "not in services/requirements.txt: " + "; ".join(missing)


def test_the_package_help_lists_every_module_once():
    doc = ast.get_docstring(ast.parse((ROOT / "lab_helpers" / "__init__.py").read_text()))
    listed = re.findall(r"^- `(\w+)`:", doc, re.M)
    modules = {p.stem for p in (ROOT / "lab_helpers").glob("*.py")} - {"__init__"}
    modules |= {p.parent.name for p in (ROOT / "lab_helpers").glob("*/__init__.py")}
    assert sorted(listed) == sorted(modules), set(listed) ^ modules
