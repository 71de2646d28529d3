"""The class lab's permissions contract (manifests/classlab/README.md): every command a student
runs is listed with the API requests it makes; the generated Role must grant all of them, and
the lab's own Python command may call no API its row does not list.

The kubectl commands are checked on a real cluster, with a student's kubeconfig and
``kubectl -v=6`` (tests/cluster/test_classlab.py, in the kind workflow).
"""

from __future__ import annotations

import textwrap

import pytest

from lab_helpers import classlab, cluster
from tests import rbac

STUDENT_COMMANDS = [
    "secrets", "apply", "status", "logs", "scale", "port-forward", "delete a pod", "update",
    "rollback", "rollout status", "teardown",
]  # fmt: skip
# The Python command of the table, and the functions of lab_helpers it runs.
PYTHON_COMMANDS = {"secrets": [cluster.connect, cluster.create_secrets]}


@pytest.fixture(scope="module")
def rows() -> dict[str, rbac.Row]:
    return rbac.table()


@pytest.fixture(scope="module")
def granted() -> set[rbac.Need]:
    (role,) = [o for o in classlab.student_objects("crypto-lab-student01") if o["kind"] == "Role"]
    return rbac.grants(role)


def test_the_table_lists_every_student_command(rows):
    assert list(rows) == STUDENT_COMMANDS
    for row in rows.values():
        assert row.typed and row.needs, row.name


@pytest.mark.parametrize("command", STUDENT_COMMANDS)
def test_the_student_role_grants_what_each_command_needs(rows, granted, command):
    missing = sorted(rows[command].needs - granted)
    assert not missing, f"{command}: the Role lab-student does not grant {missing}"


@pytest.mark.parametrize("command", sorted(PYTHON_COMMANDS))
def test_the_python_command_calls_only_what_its_row_lists(rows, command):
    called = set().union(*(rbac.api_needs(f) for f in PYTHON_COMMANDS[command]))
    assert called, "no API call found: the inspection would then prove nothing"
    unlisted = sorted(called - rows[command].needs)
    assert not unlisted, f"{command} calls APIs the table does not list: {unlisted}"


def test_the_secrets_command_is_typed_as_in_the_table(rows):
    assert rows["secrets"].typed == ("python -m lab_helpers.cluster secrets",)
    assert cluster.main.__wrapped__  # the command line the row names (python -m ...)


# -- the inspection itself, on code it must accept and code it must refuse --------------------

NAMESPACE_FIRST = textwrap.dedent(
    """
    def create_secrets(core, namespace):
        core.read_namespace(namespace)          # what the first version did: 403 for a student
        core.read_namespaced_secret("influxdb-credentials", namespace)
    """
)


def test_the_inspection_finds_a_namespace_read(tmp_path, monkeypatch):
    module = tmp_path / "first_version.py"
    module.write_text(NAMESPACE_FIRST)
    monkeypatch.syspath_prepend(str(tmp_path))
    import first_version

    needs = rbac.api_needs(first_version.create_secrets)
    assert needs == {("get", "", "namespaces"), ("get", "", "secrets")}


def test_requests_map_to_what_the_authorizer_checks():
    need = rbac.request_need
    base = "https://127.0.0.1:6443"
    assert need("GET", f"{base}/api/v1/namespaces/s1/pods?limit=500") == ("list", "", "pods")
    assert need("GET", f"{base}/api/v1/namespaces/s1/pods?watch=true&fieldSelector=x") == (
        "watch", "", "pods",
    )  # fmt: skip
    assert need("GET", f"{base}/api/v1/namespaces/s1/pods/api-1/log") == ("get", "", "pods/log")
    assert need("PATCH", f"{base}/apis/apps/v1/namespaces/s1/deployments/ingest/scale") == (
        "patch", "apps", "deployments/scale",
    )  # fmt: skip
    assert need("POST", f"{base}/api/v1/namespaces/s1/pods/api-1/portforward") == (
        "create", "", "pods/portforward",
    )  # fmt: skip
    assert need("DELETE", f"{base}/api/v1/namespaces/s1/pods/x") == ("delete", "", "pods")
    assert need("DELETE", f"{base}/api/v1/namespaces/s1/pods") == ("deletecollection", "", "pods")
    assert need("GET", f"{base}/api/v1/namespaces/s1") == ("get", "", "namespaces")
    for discovery in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v3"):
        assert need("GET", base + discovery) is None, discovery


def test_kubectl_verbose_logs_are_read():
    log = (
        'I1205 round_trippers.go:632] "Response" verb="GET" '
        'url="https://127.0.0.1:6443/apis/apps/v1/namespaces/s1/deployments/ingest" '
        'status="200 OK" milliseconds=3\n'
        'I1205 round_trippers.go:632] "Response" verb="GET" url="https://127.0.0.1:6443/api?'
        'timeout=32s" status="200 OK" milliseconds=1\n'
    )
    assert rbac.logged_needs(log) == {("get", "apps", "deployments")}
