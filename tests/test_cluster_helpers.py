"""The cluster helpers without a cluster: the exact commands for az, docker, kind and helm,
the rule that nothing runs unless asked (and only in cluster mode), rendering the overlays,
the rollout rules, and the port-forward bridge against a real local TCP server.

Everything that needs the Kubernetes API server is in tests/cluster/ (skipped without one).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from pathlib import Path

import pytest
import requests
import yaml

from lab_helpers import __version__, azure, cluster, helm, images
from lab_helpers.cluster import (
    ClusterError,
    Command,
    CommandError,
    ModeError,
    PortForward,
    ToolMissingError,
    run_commands,
)
from lab_helpers.config import load_settings
from tests.services import wait_for

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_MODE = load_settings(env={"LAB_MODE": "cluster"})
LOCAL_MODE = load_settings(env={"LAB_MODE": "local"})


def args_of(commands: list[Command]) -> list[list[str]]:
    return [list(c.args) for c in commands]


# -- the commands ----------------------------------------------------------------------------


def test_aks_cluster_is_small_on_the_free_tier_and_may_pull_from_the_registry(capsys):
    commands = azure.create_cluster(registry="CryptoLab123")
    assert args_of(commands) == [
        [
            "az", "aks", "create",
            "--resource-group", "crypto-lab-rg", "--name", "crypto-lab-aks",
            "--tier", "free", "--node-count", "2", "--node-vm-size", "Standard_B2s",
            "--generate-ssh-keys", "--attach-acr", "cryptolab123",
        ]
    ]  # fmt: skip
    assert commands[0].returncode is None  # shown, never run
    shown = capsys.readouterr().out
    assert "$ az aks create --resource-group crypto-lab-rg" in shown
    assert "pass run=True, with LAB_MODE=cluster" in shown


def test_every_azure_step_builds_its_exact_command():
    steps = {
        "login": (azure.login(), ["az", "login", "--use-device-code"]),
        "group": (
            azure.create_group("g1", "northeurope"),
            ["az", "group", "create", "--name", "g1", "--location", "northeurope"],
        ),
        "registry": (
            azure.create_registry("cryptolab123", "g1"),
            ["az", "acr", "create", "--resource-group", "g1", "--name", "cryptolab123",
             "--sku", "Basic"],
        ),
        "credentials": (
            azure.get_credentials("c1", "g1"),
            ["az", "aks", "get-credentials", "--resource-group", "g1", "--name", "c1",
             "--overwrite-existing"],
        ),
        "stop": (azure.stop_cluster("c1", "g1"),
                 ["az", "aks", "stop", "--resource-group", "g1", "--name", "c1"]),
        "delete": (azure.delete_group("g1"),
                   ["az", "group", "delete", "--name", "g1", "--yes", "--no-wait"]),
        "quota": (azure.quota("westus2"),
                  ["az", "vm", "list-usage", "--location", "westus2", "--output", "table"]),
    }  # fmt: skip
    for name, (commands, expected) in steps.items():
        assert args_of(commands) == [expected], name
    remaining = args_of(azure.remaining())[0]
    assert remaining[:5] == ["az", "group", "list", "--query", remaining[4]]
    assert "contains(name, 'crypto-lab')" in remaining[4]


def test_azure_builds_images_for_linux_amd64_with_the_lab_version():
    commands = azure.acr_build("api", "cryptolab123")
    assert args_of(commands) == [
        ["az", "acr", "build", "--registry", "cryptolab123",
         "--image", f"lab-api:{__version__}", "--platform", "linux/amd64",
         "--file", "services/api/Dockerfile", "."]
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["crypto-lab", "abc", "x" * 51, "lab_registry", ""])
def test_registry_names_azure_would_refuse_are_refused_here(name):
    with pytest.raises(ClusterError, match="5 to 50 letters and digits"):
        azure.check_registry_name(name)


def test_a_suggested_registry_name_is_valid():
    name = azure.suggest_registry_name()
    assert azure.check_registry_name(name) == name


def test_docker_builds_each_service_for_linux_amd64_from_the_repository_root():
    command = images.build_command("ingest", "cryptolab123")
    assert list(command.args) == [
        "docker", "build", "--platform", "linux/amd64",
        "-f", "services/ingest/Dockerfile",
        "-t", f"cryptolab123.azurecr.io/lab-ingest:{__version__}", ".",
    ]  # fmt: skip
    assert command.cwd == ROOT
    assert (ROOT / "services" / "ingest" / "Dockerfile").exists()


def test_kind_gets_locally_built_images_loaded_into_its_nodes():
    commands = args_of(images.for_kind("lab"))
    assert len(commands) == 2 * len(images.SERVICES)
    for service in images.SERVICES:
        image = f"lab-{service}:{__version__}"
        build = ["docker", "build", "--platform", "linux/amd64", "-f",
                 f"services/{service}/Dockerfile", "-t", image, "."]  # fmt: skip
        assert build in commands
        load = ["kind", "load", "docker-image", image, "--name", "lab"]
        assert commands.index(load) == commands.index(build) + 1


def test_a_registry_gets_docker_pushes_or_an_azure_build_without_docker():
    with_docker = args_of(images.for_registry("cryptolab123", ["api"], use_docker=True))
    image = f"cryptolab123.azurecr.io/lab-api:{__version__}"
    assert with_docker == [
        ["docker", "build", "--platform", "linux/amd64", "-f", "services/api/Dockerfile",
         "-t", image, "."],
        ["az", "acr", "login", "--name", "cryptolab123"],
        ["docker", "push", image],
    ]  # fmt: skip
    without = args_of(images.for_registry("cryptolab123", use_docker=False))
    assert [c[:3] for c in without] == [["az", "acr", "build"]] * len(images.SERVICES)
    assert all(c[c.index("--platform") + 1] == "linux/amd64" for c in without)


def test_no_image_is_ever_tagged_latest():
    every = [images.build_command(s) for s in images.SERVICES]
    every += images.for_kind() + images.for_registry("cryptolab123", use_docker=True)
    every += images.for_registry("cryptolab123", use_docker=False)
    assert not [c for c in every if "latest" in str(c)]
    with pytest.raises(ClusterError, match="never 'latest'"):
        images.image_name("api", version="latest")
    with pytest.raises(ClusterError, match="unknown service"):
        images.image_name("web")


def test_helm_installs_nats_idempotently_from_the_pinned_official_chart():
    commands = args_of(helm.install_nats("crypto-lab-x", context="kind-lab"))
    assert commands[0] == ["helm", "repo", "add", "nats", "https://nats-io.github.io/k8s/helm/charts/",
                           "--force-update"]  # fmt: skip
    assert commands[1] == ["helm", "repo", "update", "nats"]
    assert commands[2] == [
        "helm", "upgrade", "--install", "nats", "nats/nats",
        "--version", helm.NATS_CHART_VERSION,
        "--namespace", "crypto-lab-x",
        "--values", "manifests/helm/nats-values.yaml",
        "--wait", "--timeout", "5m",
        "--kube-context", "kind-lab",
    ]  # fmt: skip
    assert (ROOT / commands[2][commands[2].index("--values") + 1]).exists()
    assert args_of(helm.uninstall_nats("crypto-lab-x")) == [
        ["helm", "uninstall", "nats", "--namespace", "crypto-lab-x", "--wait"]
    ]


def test_helm_values_keep_the_contract_and_the_restricted_pod_profile():
    values = yaml.safe_load(helm.NATS_VALUES.read_text())
    jetstream = values["config"]["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"]
    assert jetstream["fileStore"]["pvc"] == {"enabled": True, "size": "1Gi"}
    assert values["config"]["monitor"]["port"] == 8222
    assert values["service"]["ports"]["monitor"]["enabled"] is True
    pod = values["podTemplate"]["merge"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in (values["container"], values["reloader"]):
        security = container["merge"]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["merge"]["resources"]["limits"]["memory"]
    assert values["natsBox"]["enabled"] is False


# -- nothing runs unless asked, and only in cluster mode -------------------------------------


def test_shown_commands_never_run(tmp_path):
    marker = tmp_path / "ran"
    command = Command((sys.executable, "-c", f"open({str(marker)!r}, 'w')"))
    run_commands([command], run=False, settings=CLUSTER_MODE)
    assert command.returncode is None and not marker.exists()
    run_commands([command], run=True, settings=CLUSTER_MODE)
    assert command.returncode == 0 and marker.exists()


def test_local_mode_refuses_to_run_azure_steps(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # were it to run anything, nothing is there
    for step in (azure.create_group, azure.delete_group, lambda **kw: azure.login(**kw)):
        with pytest.raises(ModeError, match="set LAB_MODE=cluster .it is 'local' now."):
            step(run=True, settings=LOCAL_MODE)


def test_local_mode_is_the_default(monkeypatch):
    monkeypatch.delenv("LAB_MODE", raising=False)
    with pytest.raises(ModeError):
        helm.install_nats(run=True)


@pytest.mark.parametrize(
    "step, hint",
    [
        (lambda **kw: azure.create_group(**kw), "install-azure-cli"),
        (lambda **kw: helm.install_nats(**kw), "get-helm-3"),
        (lambda **kw: images.for_kind(**kw), "https://docs.docker.com/get-docker/"),
        (lambda **kw: images.for_registry("cryptolab123", use_docker=True, **kw), "docker"),
    ],
)
def test_a_missing_tool_is_reported_before_anything_runs(step, hint, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match=hint) as caught:
        step(run=True, settings=CLUSTER_MODE)
    assert "is not installed: install" in str(caught.value)


def test_without_docker_the_images_are_built_in_azure(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert images.docker_available() is False
    commands = images.for_registry("cryptolab123", ["source"])
    assert args_of(commands)[0][:3] == ["az", "acr", "build"]
    assert "no Docker daemon answers here" in capsys.readouterr().out


def test_kind_load_needs_kind(monkeypatch, tmp_path):
    # docker is found (a real program named docker), kind is not: the run stops before docker.
    (tmp_path / "docker").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="kind.sigs.k8s.io"):
        images.for_kind(run=True, settings=CLUSTER_MODE)


def test_a_failed_command_says_what_to_do(capsys):
    quota = (
        "ERROR: Operation could not be completed as it results in exceeding approved "
        "standardBSFamily Cores quota"
    )
    failing = Command(
        (sys.executable, "-c", f"import sys; print('working'); print({quota!r}); sys.exit(3)"),
        hints=azure.HINTS,
    )
    with pytest.raises(CommandError, match="exit status 3: the subscription's vCPU quota"):
        run_commands([failing], run=True, settings=CLUSTER_MODE)
    assert failing.returncode == 3 and quota in failing.output
    assert "working" in capsys.readouterr().out  # the output streams to the notebook
    plain = Command((sys.executable, "-c", "import sys; print('no such thing'); sys.exit(1)"))
    with pytest.raises(CommandError, match="exit status 1: no such thing"):
        run_commands([plain], run=True, settings=CLUSTER_MODE)


# -- kube contexts and connecting ------------------------------------------------------------


def write_kubeconfig(path: Path, context: str, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    return path


def test_the_kube_context_comes_from_the_environment_or_the_kubeconfig(tmp_path):
    config = write_kubeconfig(tmp_path / "config", "kind-lab", "https://127.0.0.1:1")
    assert cluster.kube_context({"KUBECONFIG": str(config)}) == "kind-lab"
    both = f"{tmp_path / 'missing'}:{config}"
    assert cluster.kube_context({"KUBECONFIG": both}) == "kind-lab"
    assert cluster.kube_context({"KUBECONFIG": str(config), "LAB_KUBE_CONTEXT": "aks"}) == "aks"
    assert cluster.kube_context({"KUBECONFIG": str(tmp_path / "missing")}) is None


def test_connecting_without_a_context_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("LAB_KUBE_CONTEXT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="kind create cluster.*az aks get-credentials"):
        cluster.connect()


def test_a_cluster_that_does_not_answer_is_one_sentence(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_kubeconfig(tmp_path / "config", "gone", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("LAB_KUBE_CONTEXT", raising=False)
    with pytest.raises(ClusterError, match="context 'gone' .* does not answer"):
        cluster.connect(timeout=2)
    with pytest.raises(ClusterError, match="no kube context 'other': use one of gone"):
        cluster.connect("other")


def test_bad_arguments_fail_before_any_request():
    with pytest.raises(ClusterError, match="no fixed tag"):
        cluster.set_image("api", "api", "lab-api")
    with pytest.raises(ClusterError, match="no fixed tag"):
        cluster.set_image("api", "api", "example.azurecr.io/lab-api:latest")
    with pytest.raises(ClusterError, match="0 or more"):
        cluster.scale("ingest", -1)


# -- rendering the manifests -----------------------------------------------------------------


def rendered(overlay: str) -> list[dict]:
    if not (ROOT / "manifests" / "overlays" / overlay / "kustomization.yaml").exists():
        pytest.skip(f"manifests/overlays/{overlay} is not there yet")
    try:
        return cluster.render(overlay)
    except ToolMissingError as err:
        pytest.skip(f"cannot render without kubectl: {err}")


def test_the_kind_overlay_renders_the_objects_of_the_contract():
    objects = rendered("kind")
    assert all(isinstance(o, dict) and o["kind"] and o["metadata"]["name"] for o in objects)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name, kind in cluster.WORKLOADS.items():
        assert (kind, name) in names and ("Service", name) in names
    settings = next(o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == "lab-settings")  # fmt: skip
    assert settings["data"] == {
        "LAB_INFLUX_URL": "http://influxdb:8086",
        "LAB_INFLUX_DB": "prices",
        "LAB_NATS_URL": "nats://nats:4222",
        "LAB_MODE": "cluster",
    }
    # The Secret is never in the manifests: create_secrets() makes it in the cluster.
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        cluster.DEFAULT_NAMESPACE
    }
    lab_images = [
        c["image"]
        for o in objects
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if c["image"].split(":")[0] in cluster.LAB_IMAGES
    ]
    assert sorted(lab_images) == sorted(f"{i}:{__version__}" for i in cluster.LAB_IMAGES)


def test_the_aks_overlay_takes_the_images_from_a_registry_given_at_apply_time():
    objects = rendered("aks")
    for obj in objects:
        cluster.use_registry(obj, "cryptolab123")
    images_used = {
        c["image"]
        for o in objects
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    for name in cluster.LAB_IMAGES:
        assert f"cryptolab123.azurecr.io/{name}:{__version__}" in images_used
    others = {i for i in images_used if "/lab-" not in i}
    assert others and not any("cryptolab123" in i for i in others)  # InfluxDB, NATS stay


def test_leaving_out_nats_for_helm_keeps_everything_else():
    objects = rendered("kind")
    kept = cluster.without(objects, ["nats"])
    gone = {(o["kind"], o["metadata"]["name"]) for o in objects} - {
        (o["kind"], o["metadata"]["name"]) for o in kept
    }
    assert gone == {("StatefulSet", "nats"), ("Service", "nats"), ("Service", "nats-headless")}


def test_an_unknown_overlay_lists_the_ones_there_are():
    with pytest.raises(ClusterError, match="no kustomize overlay 'nope'"):
        cluster.render("nope")


# -- the rules of kubectl rollout status -----------------------------------------------------


def deployment(generation=2, observed=2, wanted=2, **status):
    return {
        "metadata": {"name": "api", "generation": generation},
        "spec": {"replicas": wanted},
        "status": {"observedGeneration": observed, **status},
    }


def test_a_deployment_is_rolled_out_when_every_new_replica_is_available():
    state = cluster.rollout_state
    assert state("Deployment", deployment(observed=1)) == (
        False,
        "waiting for the controller to see the new spec",
    )
    assert state("Deployment", deployment(updatedReplicas=1, replicas=2)) == (
        False,
        "1 of 2 new replicas updated",
    )
    assert state("Deployment", deployment(updatedReplicas=2, replicas=3)) == (
        False,
        "1 old replicas pending termination",
    )
    busy = deployment(updatedReplicas=2, replicas=2, availableReplicas=1)
    assert state("Deployment", busy) == (False, "1 of 2 updated replicas available")
    done = deployment(updatedReplicas=2, replicas=2, availableReplicas=2)
    assert state("Deployment", done) == (True, "successfully rolled out")
    stuck = deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    with pytest.raises(ClusterError, match="exceeded its progress deadline"):
        state("Deployment", stuck)


def test_a_statefulset_is_rolled_out_when_ready_at_the_new_revision():
    def sts(**status):
        obj = deployment(wanted=1, **status)
        obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
        return obj

    state = cluster.rollout_state
    assert state("StatefulSet", sts(readyReplicas=0)) == (False, "0 of 1 pods ready")
    moving = sts(readyReplicas=1, updatedReplicas=0, currentRevision="a", updateRevision="b")
    assert state("StatefulSet", moving) == (False, "0 of 1 pods at the new revision")
    ready = sts(readyReplicas=1, updatedReplicas=1, currentRevision="b", updateRevision="b")
    assert state("StatefulSet", ready) == (True, "rolling update complete: 1 pods ready")


# -- the port-forward bridge, against a real local TCP server --------------------------------


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_the_forward_carries_bytes_both_ways_for_many_connections(echo_server):
    with PortForward(lambda: socket.create_connection(echo_server), description="echo") as fwd:
        assert fwd.url == f"http://127.0.0.1:{fwd.port}" and fwd.active
        big = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert exchange(fwd.port, big) == big
        results = {}
        clients = [
            threading.Thread(target=lambda i=i: results.update({i: exchange(fwd.port, b"n%d" % i)}))
            for i in range(8)
        ]  # fmt: skip
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=20)
        assert results == {i: b"n%d" % i for i in range(8)}
        assert fwd.errors == []
    assert not fwd.active
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fwd.port), timeout=2)


def test_http_clients_use_the_forward_like_the_service_itself():
    import http.server

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"path": "%s"}' % self.path.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PortForward(lambda: socket.create_connection(server.server_address)) as fwd:
            with requests.Session() as session:  # keep-alive: one forwarded connection, reused
                assert session.get(fwd.url + "/api/assets", timeout=10).json() == {
                    "path": "/api/assets"
                }
                assert session.get(fwd.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_connection_that_cannot_be_forwarded_is_closed_and_reported():
    def refuse():
        raise ClusterError("no ready pod behind Service 'api' yet")

    with PortForward(refuse) as fwd:
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=10) as client:
            assert client.recv(1) == b""  # closed at once, not left hanging
        assert fwd.errors == [
            "cannot open the forwarded connection: no ready pod behind Service 'api' yet"
        ]


def test_the_far_side_can_report_what_went_wrong(echo_server):
    class Connector:
        def __call__(self):
            return socket.create_connection(echo_server)

        def closed(self, remote):
            return "api-0:8000: connection refused in the pod"

    with PortForward(Connector()) as fwd:
        assert exchange(fwd.port, b"ping") == b"ping"
        wait_for(lambda: fwd.errors, 10, "the connector's report", every=0.02)
        assert fwd.errors == ["api-0:8000: connection refused in the pod"]


def test_closing_the_forward_ends_open_connections(echo_server):
    fwd = PortForward(lambda: socket.create_connection(echo_server))
    client = socket.create_connection(("127.0.0.1", fwd.port), timeout=10)
    client.sendall(b"hello")
    assert client.recv(5) == b"hello"
    fwd.close()
    client.settimeout(10)
    try:
        assert client.recv(1) == b""
    except ConnectionResetError:
        pass  # a reset is a way of being closed too
    finally:
        client.close()


def test_a_local_port_in_use_is_one_sentence(echo_server):
    with pytest.raises(ClusterError, match="cannot listen on 127.0.0.1:.*choose another"):
        PortForward(lambda: None, local_port=echo_server[1])


def test_the_command_line_fails_with_one_sentence_without_a_cluster(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("LAB_KUBE_CONTEXT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cluster.main(["secrets", "--namespace", "crypto-lab"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("⛔ no Kubernetes context:") and err.count("\n") == 1
