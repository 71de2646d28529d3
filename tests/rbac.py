"""The class lab's permissions contract, as data: the table of student commands in
``manifests/classlab/README.md``, the student Role's grants, and the RBAC meaning of an HTTP
request to the API server (what ``kubectl -v=6`` logs, what a client method sends).

Used by ``tests/test_classlab_permissions.py`` (offline) and ``tests/cluster/test_classlab.py``
(the same commands run with a student's kubeconfig on a real cluster).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "manifests" / "classlab" / "README.md"
HEADER = "| student command | what the student types | API requests it makes |"

# A need: (verb, API group, resource[/subresource]).
Need = tuple[str, str, str]


@dataclass(frozen=True)
class Row:
    """One row of the table: the command's name, what is typed, and the requests it makes."""

    name: str
    typed: tuple[str, ...]
    needs: frozenset[Need]


def parse_resource(text: str) -> tuple[str, str]:
    """``deployments.apps/scale`` -> (``apps``, ``deployments/scale``); ``pods`` -> ("", "pods")."""
    resource, _, sub = text.partition("/")
    name, _, group = resource.partition(".")
    return group, name + (f"/{sub}" if sub else "")


def parse_needs(cell: str) -> frozenset[Need]:
    """`` `get,create secrets` `list pods,services` `` -> the (verb, group, resource) needs."""
    needs = set()
    for item in re.findall(r"`([^`]+)`", cell):
        verbs, _, resources = item.strip().partition(" ")
        for resource in resources.split(","):
            group, name = parse_resource(resource.strip())
            needs.update((verb.strip(), group, name) for verb in verbs.split(","))
    return frozenset(needs)


def table(readme: Path = README) -> dict[str, Row]:
    """The rows of the student command table, by command name."""
    lines = readme.read_text().splitlines()
    start = lines.index(HEADER) + 2  # the header, then the |---| line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, typed, needs = (cell.strip() for cell in line.strip("|").split("|"))
        rows[name] = Row(name, tuple(re.findall(r"`([^`]+)`", typed)), parse_needs(needs))
    return rows


def grants(role: dict) -> set[Need]:
    """What a Role allows: (verb, group, resource) for every combination of its rules."""
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def request_need(method: str, url: str) -> Need | None:
    """The RBAC need of one HTTP request to the API server, as the API server's authorizer
    sees it; ``None`` for a non-resource URL (discovery, ``/version``, ``/openapi``)."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # the group's own discovery document
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource: /namespaces/{ns}/{resource}/...
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource += "/" + rest[2]
    query = parse_qs(parsed.query)
    method = method.upper()
    if method == "GET":
        if name:
            verb = "get"
        elif query.get("watch", ["false"])[0] in ("true", "1"):
            verb = "watch"
        else:
            verb = "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
    return verb, group, resource


# -- the official client's methods, and which ones a function calls ---------------------------


def client_request(method_name: str) -> tuple[str, str] | None:
    """(HTTP method, path) that a method of the official client's typed APIs sends, read from
    the client's own generated code; ``None`` when no API class has that method."""
    import kubernetes.client as client

    for api_name in dir(client):
        api = getattr(client, api_name)
        if not (inspect.isclass(api) and api_name.endswith("Api")):
            continue
        serialize = getattr(api, f"_{method_name}_serialize", None)
        if serialize is None:
            continue
        source = inspect.getsource(serialize)
        found = re.search(r"method='([A-Z]+)',\s*resource_path='([^']+)'", source)
        if found:
            return found.group(1), found.group(2)
    return None


def calls_in(function) -> set[str]:
    """The names of the attributes a function uses (``x.y.read_namespaced_secret(...)``, also
    when the method is passed on without being called there), in it and in the functions of
    its own module that it calls, followed into them."""
    module = inspect.getmodule(function)
    seen: set[str] = set()
    methods: set[str] = set()
    todo = [function]
    while todo:
        current = todo.pop()
        if current.__name__ in seen:
            continue
        seen.add(current.__name__)
        tree = ast.parse(textwrap.dedent(inspect.getsource(current)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                methods.add(node.attr)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                local = getattr(module, node.func.id, None)
                if inspect.isfunction(local) and inspect.getmodule(local) is module:
                    todo.append(local)
    return methods


def api_needs(function) -> set[Need]:
    """The RBAC needs of every official-client API method that ``function`` calls."""
    needs = set()
    for name in calls_in(function):
        request = client_request(name)
        if request is None:
            continue
        method, path = request
        # Placeholders become sample names: a path with {name} addresses one object.
        url = re.sub(r"\{[a-z_]+\}", "x", path)
        need = request_need(method, url)
        if need is not None:
            needs.add(need)
    return needs


VERBOSE_REQUEST = re.compile(r'verb="([A-Z]+)" url="([^"]+)"')


def logged_needs(log: str) -> set[Need]:
    """The RBAC needs of the requests that ``kubectl -v=6`` logged."""
    needs = set()
    for method, url in VERBOSE_REQUEST.findall(log):
        need = request_need(method, url)
        if need is not None:
            needs.add(need)
    return needs
