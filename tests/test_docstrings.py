"""Docstrings read cleanly with `?` in Jupyter and `help()`: plain Markdown backticks.

Jupyter shows a docstring as it is written, and nothing renders Sphinx's markup there, so
`:func:`clean``, `:class:`~lab_helpers.influx.InfluxDB`` and reST's ``double backticks``
would show raw. Every docstring of lab_helpers, services and bench (of a module, a class, a
function, or an attribute) is held to single backticks, and to a plain `:` before an
indented example instead of reST's `::`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("lab_helpers", "services", "bench")
MARKUP = {
    "a Sphinx role": re.compile(r":(?:py:)?[a-z]+:`"),
    "a double-backtick span": re.compile(r"``"),
    "a reST literal-block marker": re.compile(r"\S::[ \t]*$", re.M),
}


def markup_in(source: str, name: str = "<text>") -> list[str]:
    """Where the docstrings of `source` hold reST or Sphinx markup: `name:line: what`."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Constant):
            continue
        text = node.value.value
        if not isinstance(text, str):
            continue
        for what, pattern in MARKUP.items():
            match = pattern.search(text)
            if match:
                line = node.lineno + text.count("\n", 0, match.start())
                found.append(f"{name}:{line}: {what} ({match.group().strip()!r})")
    return found


def test_the_check_finds_each_kind_of_markup():
    sample = '''
def f():
    """Like :func:`g`, see ``h``. Example::

        f()
    """
'''
    found = markup_in(sample)
    assert [entry.split(": ", 1)[1].split(" (")[0] for entry in found] == list(MARKUP)
    assert markup_in('"""Like `g()`, see `h`. Example:\n\n    f()\n"""') == []


def test_every_docstring_is_plain_markdown():
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += markup_in(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "write docstrings in Markdown backticks:\n" + "\n".join(found)
