"""The cluster helpers without a cluster: the exact commands for az, docker, kind and helm,
the rule that nothing runs unless asked (and only in cluster mode), the ``%%cluster`` cells of
the notebooks, ``make cluster``'s sentence when Docker or kind is missing, the background
``kubectl port-forward``, rendering the overlays, and connecting.

Everything that needs the Kubernetes API server is in tests/cluster/ (skipped without one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab_helpers import __version__, azure, cluster, forward, helm, images, kind, manifests, shell
from lab_helpers.cluster import ClusterError
from lab_helpers.commands import Command, CommandError, ModeError, ToolMissingError, run_commands
from lab_helpers.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_MODE = load_settings(env={"LAB_MODE": "cluster"})
LOCAL_MODE = load_settings(env={"LAB_MODE": "local"})


def args_of(commands: list[Command]) -> list[list[str]]:
    return [list(c.args) for c in commands]


# -- the Azure commands ----------------------------------------------------------------------


def test_the_aks_cluster_enforces_network_policies_and_fits_a_trial(capsys):
    commands = azure.create_cluster()
    assert args_of(commands) == [
        [
            "az", "aks", "create",
            "--resource-group", "crypto-lab-rg", "--name", "crypto-lab-aks",
            "--tier", "free", "--node-count", "2", "--node-vm-size", "Standard_B2s_v2",
            "--network-plugin", "azure", "--network-plugin-mode", "overlay",
            "--network-dataplane", "cilium", "--network-policy", "cilium",
            "--generate-ssh-keys",
        ]
    ]  # fmt: skip
    assert commands[0].returncode is None  # shown, never run
    shown = capsys.readouterr().out
    assert "$ az aks create --resource-group crypto-lab-rg" in shown
    assert "pass run=True, with LAB_MODE=cluster" in shown
    # A free trial may run 4 vCPUs in a region: two nodes of 2.
    assert azure.NODE_COUNT * 2 <= 4 and azure.VM_SIZE.startswith("Standard_B2")
    with_registry = args_of(azure.create_cluster(registry="CryptoLab123"))[0]
    assert with_registry[-2:] == ["--attach-acr", "cryptolab123"]


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


def test_a_refused_acr_task_says_what_to_do_on_a_free_trial():
    message = (
        "(TasksOperationsNotAllowed) ACR Tasks requests for the registry cryptolab123 and "
        "0000 are not permitted. Please file an Azure support request"
    )
    failing = Command(
        (sys.executable, "-c", f"import sys; print({message!r}); sys.exit(1)"), hints=azure.HINTS
    )
    with pytest.raises(
        CommandError, match="refused on free-trial subscriptions: deploy the prebuilt"
    ):
        run_commands([failing], run=True, settings=CLUSTER_MODE)


@pytest.mark.parametrize("name", ["crypto-lab", "abc", "x" * 51, "lab_registry", ""])
def test_registry_names_azure_would_refuse_are_refused_here(name):
    with pytest.raises(ClusterError, match="5 to 50 letters and digits"):
        azure.check_registry_name(name)


def test_a_suggested_registry_name_is_valid():
    name = azure.suggest_registry_name()
    assert azure.check_registry_name(name) == name


# -- images ----------------------------------------------------------------------------------


def test_aks_images_are_built_for_linux_amd64_kind_images_for_this_machine():
    command = images.build_command("ingest", "cryptolab123", images.AKS_PLATFORM)
    assert list(command.args) == [
        "docker", "build", "--platform", "linux/amd64",
        "-f", "services/ingest/Dockerfile",
        "-t", f"cryptolab123.azurecr.io/lab-ingest:{__version__}", ".",
    ]  # fmt: skip
    assert command.cwd == ROOT
    assert (ROOT / "services" / "ingest" / "Dockerfile").exists()
    # kind runs on this machine: its images are built for this machine's platform.
    commands = args_of(images.for_kind("lab"))
    assert len(commands) == 2 * len(images.SERVICES)
    for service in images.SERVICES:
        image = f"lab-{service}:{__version__}"
        build = ["docker", "build", "-f", f"services/{service}/Dockerfile", "-t", image, "."]
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


def test_no_image_is_ever_tagged_latest():
    every = [images.build_command(s) for s in images.SERVICES]
    every += images.for_kind() + images.for_registry("cryptolab123", use_docker=True)
    every += images.for_registry("cryptolab123", use_docker=False)
    assert not [c for c in every if "latest" in str(c)]
    with pytest.raises(ClusterError, match="never 'latest'"):
        images.image_name("api", version="latest")
    with pytest.raises(ClusterError, match="unknown service"):
        images.image_name("web")


def test_an_own_registry_overlay_renders_with_its_images(tmp_path):
    folder = images.overlay("cryptolab123", tmp_path / "aks-own")
    objects = manifests.render(folder)
    used = {
        c["image"]
        for o in objects
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    }
    assert {f"cryptolab123.azurecr.io/{i}:{__version__}" for i in images.LAB_IMAGES} <= used
    assert not [i for i in used if images.PREBUILT_REGISTRY in i]


def test_the_prebuilt_registry_is_the_repository_owner_s():
    from lab_helpers.workbook import REPOSITORY

    owner = REPOSITORY.removeprefix("https://github.com/").split("/")[0]
    assert images.PREBUILT_REGISTRY == f"ghcr.io/{owner}"
    component = yaml.safe_load(
        (ROOT / "manifests" / "components" / "prebuilt-images" / "kustomization.yaml").read_text()
    )
    assert {i["newName"] for i in component["images"]} == {
        f"{images.PREBUILT_REGISTRY}/{name}" for name in images.LAB_IMAGES
    }


# -- Helm ------------------------------------------------------------------------------------


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


def without_tools(monkeypatch, tmp_path, *keep: str) -> None:
    """PATH with only ``keep`` (real programs, linked) and bash; no .venv/bin either."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("bash", *keep):
        target = {"docker": "/bin/false"}.get(name) or subprocess.run(
            ["which", name], capture_output=True, text=True
        ).stdout.strip()
        (folder / name).symlink_to(target)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(sys, "executable", str(folder / "python-not-here"))


@pytest.mark.parametrize(
    "step, hint",
    [
        (lambda **kw: azure.create_group(**kw), "install-azure-cli"),
        (lambda **kw: helm.install_nats(**kw), "helm.sh/docs/intro/install"),
        (lambda **kw: images.for_kind(**kw), "https://docs.docker.com/get-docker/"),
        (lambda **kw: images.for_registry("cryptolab123", use_docker=True, **kw), "docker"),
    ],
)
def test_a_missing_tool_is_reported_before_anything_runs(step, hint, monkeypatch, tmp_path):
    without_tools(monkeypatch, tmp_path)
    with pytest.raises(ToolMissingError, match=hint) as caught:
        step(run=True, settings=CLUSTER_MODE)
    assert "is not installed: install" in str(caught.value)


def test_a_failed_command_says_what_to_do(capsys):
    quota = (
        "ERROR: Operation could not be completed as it results in exceeding approved "
        "standardBSv2Family Cores quota"
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


def test_a_shell_line_runs_under_bash_with_pipefail(capsys):
    ok = Command.line("echo one two | wc -w")
    assert ok.tool == "echo" and str(ok) == "echo one two | wc -w"
    ok.execute()
    assert ok.output.strip() == "2"
    broken = Command.line(f"{sys.executable} -c 'import sys; sys.exit(4)' | cat")
    with pytest.raises(CommandError, match="exit status 4"):
        broken.execute()


# -- the notebooks' %%cluster cells ----------------------------------------------------------


@pytest.fixture
def cell_mode(monkeypatch):
    """Restores the mode and LAB_MODE (a cluster mode sets it) after the test."""
    monkeypatch.setenv("LAB_MODE", os.environ.get("LAB_MODE", "local"))
    before = shell.mode()
    yield
    shell._mode = before


def ipython_shell():
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    return start_ipython() or get_ipython()


def test_local_mode_explains_each_command_and_runs_nothing(
    cell_mode, monkeypatch, tmp_path, capsys
):
    without_tools(monkeypatch, tmp_path)  # nothing could run even if it tried
    shell.use("local")
    assert shell.mode() == "local"
    cell = """
    # the lab's pods, with their nodes
    kubectl -n crypto-lab get pods \\
        -o wide
    kubectl -n crypto-lab scale deployment ingest --replicas=3
    """
    records = shell.run_cell(cell)
    out = capsys.readouterr().out
    assert [r.line for r in records] == [
        "kubectl -n crypto-lab get pods -o wide",
        "kubectl -n crypto-lab scale deployment ingest --replicas=3",
    ]
    assert not any(r.ran for r in records) and shell.last() == records
    assert "$ kubectl -n crypto-lab get pods -o wide\n  ↳ lists objects" in out
    assert "↳ sets the number of pods of a Deployment" in out
    assert out.rstrip().endswith("(local mode: shown, not run)")


def test_cluster_mode_runs_each_line_and_stops_at_the_first_failure(cell_mode, capsys):
    shell.use("kind")
    assert os.environ["LAB_MODE"] == "cluster"
    ok, failing, never = "echo first", f"{sys.executable} -c 'raise SystemExit(2)'", "echo never"
    with pytest.raises(CommandError, match="exit status 2"):
        shell.run_cell("\n".join([ok, failing, never]))
    out = capsys.readouterr().out
    assert "$ echo first\nfirst\n" in out and "never" not in out.split(failing)[-1]
    assert [(r.line, r.returncode) for r in shell.last()] == [(ok, 0), (failing, 2)]


def test_a_cell_for_one_cluster_mode_is_explained_in_the_other(cell_mode, capsys):
    shell.use("kind")
    records = shell.run_cell("docker push cryptolab123.azurecr.io/lab-api:0.1.0", only=("aks",))
    assert not records[0].ran
    assert "(aks only: shown, not run)" in capsys.readouterr().out


def test_the_mode_is_checked(cell_mode, monkeypatch):
    with pytest.raises(Exception, match="MODE='cluster' is not valid: use one of local, kind, aks"):
        shell.use("cluster")
    monkeypatch.setenv("LAB_MODE", "local")
    shell.use(None)
    assert shell.mode() == "local"


def test_the_cell_magic_expands_python_values_like_bang_lines(cell_mode, capsys):
    ipython = ipython_shell()
    ipython.user_ns["NAMESPACE"] = "crypto-lab-student07"
    shell.use("local")
    ipython.run_cell_magic("cluster", "", "kubectl -n {NAMESPACE} get pods\n")
    assert "$ kubectl -n crypto-lab-student07 get pods" in capsys.readouterr().out
    with pytest.raises(Exception, match="name kind, aks or nothing, not 'gke'"):
        ipython.run_cell_magic("cluster", "gke", "kubectl get pods\n")


# -- make cluster ----------------------------------------------------------------------------


def test_make_cluster_says_in_one_sentence_what_is_missing(monkeypatch, tmp_path, capsys):
    without_tools(monkeypatch, tmp_path)
    assert kind.main(["up"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("⛔ make cluster needs Docker")
    assert "https://docs.docker.com/get-docker/" in err and "kind.sigs.k8s.io" in err
    assert "kubectl" in err and ".devcontainer" in err


def test_make_cluster_tells_a_docker_without_its_daemon(monkeypatch, tmp_path):
    without_tools(monkeypatch, tmp_path, "docker")  # `docker info` fails: no daemon
    sentence = kind.missing()
    assert sentence and "docker is installed, but `docker info` gets no answer" in sentence
    assert "Docker (https://docs.docker.com" not in sentence


def test_make_cluster_asks_for_a_kind_that_can_load_into_its_node_image(monkeypatch, tmp_path):
    """The pinned node image is kind v0.32.0's: an older kind creates the cluster, then fails
    at `kind load`. Here `kind` is a script that answers `kind version` like kind v0.24."""
    without_tools(monkeypatch, tmp_path, "docker")
    old_kind = tmp_path / "bin" / "kind"
    old_kind.write_text("#!/bin/bash\necho 'kind v0.24.0 go1.22.6 linux/amd64'\n")
    old_kind.chmod(0o755)
    sentence = kind.missing()
    assert sentence and "kind 0.32 or newer" in sentence and "in place of its 0.24" in sentence
    assert kind.parse_kind_version("kind v0.32.0 go1.25.1 linux/amd64") == (0, 32)
    assert kind.parse_kind_version("kind version unknown") is None


def test_the_kind_config_names_the_cluster_and_pins_its_node():
    config = yaml.safe_load(kind.CONFIG.read_text())
    assert kind.cluster_name() == "crypto-lab" == images.KIND_CLUSTER
    assert kind.context() == "kind-crypto-lab"
    (node,) = config["nodes"]
    assert "@sha256:" in node["image"] and node["image"].startswith("kindest/node:v1.")


def test_make_cluster_down_without_kind_deletes_nothing(monkeypatch, tmp_path, capsys):
    without_tools(monkeypatch, tmp_path)
    monkeypatch.setenv("LAB_DIR", str(tmp_path / "lab"))
    assert kind.main(["down"]) == 0
    assert "no kind cluster to delete" in capsys.readouterr().out


# -- kubectl port-forward in the background --------------------------------------------------


def test_the_port_forward_command_is_kubectl_s():
    assert forward.command("svc/api", 8000, "crypto-lab-x") == [
        "kubectl", "port-forward", "--namespace", "crypto-lab-x", "svc/api", ":8000",
    ]  # fmt: skip
    assert forward.command("pod/influxdb-0", 8086, "n", 18086, "kind-lab")[-3:] == [
        "18086:8086", "--context", "kind-lab",
    ]  # fmt: skip


def test_a_port_forward_that_cannot_start_says_why(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port on which no API server listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_kubeconfig(tmp_path / "config", "gone", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(ClusterError, match="port-forward .* stopped: .*refused"):
        forward.port_forward("svc/api", 8000, "crypto-lab", timeout=60)


# -- rendering the manifests -----------------------------------------------------------------


def test_the_kind_overlay_renders_the_objects_of_the_contract():
    objects = manifests.render("kind")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    from lab_helpers.pods import WORKLOADS

    for name, workload_kind in WORKLOADS.items():
        assert (workload_kind, name) in names and ("Service", name) in names
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_an_unknown_overlay_lists_the_ones_there_are():
    with pytest.raises(ClusterError, match="no kustomize overlay 'nope': use one of aks, kind"):
        manifests.render("nope")


# -- kube contexts and connecting ------------------------------------------------------------


def write_kubeconfig(path: Path, context: str, server: str, namespace: str | None = None) -> Path:
    ctx = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": context, "context": ctx}],
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
    with pytest.raises(ClusterError, match="make cluster.*az aks get-credentials"):
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


def test_the_command_line_fails_with_one_sentence_without_a_cluster(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("LAB_KUBE_CONTEXT", raising=False)
    assert cluster.main(["secrets", "--namespace", "crypto-lab"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("⛔ no Kubernetes context:") and err.count("\n") == 1


def test_a_cell_for_some_learners_runs_only_when_its_variable_is_set(cell_mode, capsys):
    ipython = ipython_shell()
    shell.use("aks")
    ipython.user_ns["REGISTRY"] = ""
    ipython.run_cell_magic("cluster", "aks --when REGISTRY", "docker push x/lab-api:0.1.0\n")
    assert not shell.last()[0].ran
    assert "(REGISTRY is not set: shown, not run)" in capsys.readouterr().out
    with pytest.raises(Exception, match="--when needs the name of a variable"):
        ipython.run_cell_magic("cluster", "aks --when", "docker push x\n")
