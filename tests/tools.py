"""The heavy checkers of the test suite, each in a virtual environment of its own that
``scripts/setup.sh tools`` makes (``make test`` runs it): where they are, or why not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TOOLS_DIR = Path(os.environ.get("TOOLS_DIR", Path(sys.prefix) / "tools"))


def isolated_tool(package: str, program: str) -> Path:
    """The program of an isolated tool; a skip (a failure in CI) that says how to get it."""
    found = TOOLS_DIR / package / "bin" / program
    if found.exists():
        return found
    why = f"{package} is not installed at {found}: run `scripts/setup.sh tools` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run {program}, but {why}")
    pytest.skip(why)
