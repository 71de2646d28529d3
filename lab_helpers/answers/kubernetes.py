"""How the exercises of notebook 02 (Kubernetes) are checked.

02.1: the Deployment and Service of the stats service, validated by kubernetes-validate
(strict), held to the lab's rules (`lab_helpers.policy`), rendered with the lab's overlay by
`kubectl kustomize`, and their container's command run with the manifest's environment: its
probes' paths must answer 200.
02.3: the `kubectl` commands that scale, replace a pod, follow and undo a rollout and read the
logs: the real kubectl reads each line (`lab_helpers.cmdline`); in kind mode they run.
02.2: which probe says that a dependency is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .. import cmdline, dockerfiles, manifests, policy
from ..config import project_root
from ..errors import LabError
from ..exercises import Wrong
from . import parse_step
from .containers import EXERCISE_DIR, IMAGE, PORT, SERVICE

MANIFEST_DIR = EXERCISE_DIR / "k8s"
LABEL = "app.kubernetes.io/name"


def overlay_with(text: str, deploy: str) -> str:
    """Write the learner's manifests and a kustomization that adds them to the overlay
    `deploy` (the folder notebook 02 applies) into `build/exercises/stats/k8s/`; returns
    that folder relative to the repository (what `kubectl apply -k` takes)."""
    if not isinstance(text, str) or not text.strip():
        raise Wrong("write the manifests first (exercise 02.1)")
    MANIFEST_DIR.mkdir(parents=True, exist_ok=True)
    (MANIFEST_DIR / "stats.yaml").write_text(text)
    base = manifests.overlay_dir(project_root() / deploy)
    relative = Path(os.path.relpath(base.resolve(), MANIFEST_DIR.resolve())).as_posix()
    # The overlay's own namespace and the lab's label reach only its own objects: the
    # kustomization that adds yours sets them for yours too.
    namespaces = {o["metadata"].get("namespace") for o in manifests.render(base)
                  if o["kind"] == "Deployment"}  # fmt: skip
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative, "stats.yaml"],
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "crypto-lab"},
                    "includeTemplates": True}],
    }  # fmt: skip
    if len(namespaces) == 1 and None not in namespaces:
        kustomization["namespace"] = namespaces.pop()
    (MANIFEST_DIR / "kustomization.yaml").write_text(
        "# The lab's overlay with the stats service added (notebook 02, exercise 02.1).\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return MANIFEST_DIR.relative_to(project_root()).as_posix()


def _objects(text) -> list[dict]:
    if not isinstance(text, str):
        raise Wrong("`stats_manifests` is the YAML text, as one string")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise Wrong(f"that is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not all(isinstance(d, dict) and "kind" in d for d in docs):
        raise Wrong("each document (between ---) is one Kubernetes object with a kind")
    return docs


def _one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1 or (found[0].get("metadata") or {}).get("name") != SERVICE:
        raise Wrong(f"write one {kind} named {SERVICE}")
    return found[0]


def _selects(service: dict, workload: dict) -> bool:
    selector = service.get("spec", {}).get("selector") or {}
    labels = workload["spec"]["template"].get("metadata", {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def verify_manifests(stats_manifests, DEPLOY, API) -> None:
    import kubernetes_validate.utils as kv

    objects = _objects(stats_manifests)
    deployment, service = _one(objects, "Deployment"), _one(objects, "Service")
    problems = policy.validate(objects, kv.latest_version())
    if problems:
        raise Wrong(f"kubernetes-validate (strict): {problems[0]}")
    problems = policy.workload_problems(deployment, own=True)
    if problems:
        raise Wrong(problems[0])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    if container.get("name") != SERVICE:
        raise Wrong(f"name the container {SERVICE}: `kubectl set image` addresses it by that name")
    if container.get("image") != IMAGE:
        raise Wrong(f"the container runs the image you built in notebook 01, {IMAGE}")
    if not _selects(service, deployment):
        raise Wrong("the Service's selector matches no label of the Deployment's pods")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    targets = [p.get("targetPort", p.get("port")) for p in service["spec"].get("ports", [])]
    if not targets or any(t not in ports and t not in ports.values() for t in targets):
        raise Wrong("the Service's targetPort names no port of the container")
    if PORT not in ports.values():
        raise Wrong(f"the stats service listens on {PORT}: declare that containerPort")
    # Rendered with the overlay it joins: the namespace and labels kustomize adds.
    folder = overlay_with(stats_manifests, DEPLOY)
    try:
        rendered = manifests.render(project_root() / folder)
    except LabError as err:
        raise Wrong(str(err)) from None
    mine = [o for o in rendered if o["metadata"]["name"] == SERVICE]
    namespaces = {o["metadata"].get("namespace") for o in rendered if o["kind"] == "Deployment"}
    if len(mine) != 2 or len({o["metadata"].get("namespace") for o in mine} | namespaces) != 1:
        raise Wrong("with the overlay, the stats objects must land in the lab's namespace")
    _run_with_manifest_env(container, API)


def _run_with_manifest_env(container: dict, api: str) -> None:
    """The container's command, run here with the manifest's literal env (the api's Service
    name replaced by the local api), asked on its probes' paths."""
    command = list(container.get("command") or []) + list(container.get("args") or [])
    if not command:
        raise Wrong("give the container its command, as the lab's other Deployments do")
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    if "STATS_API_URL" not in env:
        raise Wrong("the service needs the api's address in the cluster: STATS_API_URL")
    env["STATS_API_URL"] = api  # in the cluster the Service name `api` resolves; here, this
    image = dockerfiles.Image([], env, [PORT], None, "/", command, [], True, [])
    paths = {
        key: container[key]["httpGet"].get("path", "/")
        for key in ("readinessProbe", "livenessProbe")
        if "httpGet" in container.get(key, {})
    }
    if len(paths) < 2:
        raise Wrong("both probes ask the service over HTTP (httpGet)")
    root = project_root()
    missing = [w for w in command[1:2] if not (root / w).exists()]
    if missing:
        raise Wrong(f"{missing[0]} is not the stats service's program")
    # The manifest's settings, on a free port of 127.0.0.1 (as kubectl port-forward would).
    with dockerfiles.run_locally(image, root, env={"STATS_API_URL": api}) as run:
        for key, path in paths.items():
            try:
                status = run.probe(path)
            except dockerfiles.DockerfileError as err:
                raise Wrong(f"its command does not serve: {err}") from None
            if status != 200:
                raise Wrong(f"the {key} asks {path}, which the stats service answers {status}")


# -- 02.2 kubectl ---------------------------------------------------------------------------
STEPS = ("scale", "restart_pod", "status", "undo", "logs")


def verify_kubectl(kubectl_commands, NAMESPACE) -> None:
    if not isinstance(kubectl_commands, dict) or set(kubectl_commands) != set(STEPS):
        raise Wrong(f"`kubectl_commands` is a dict with the keys {', '.join(STEPS)}")
    parsed = {}
    for step in STEPS:
        parsed[step] = parse_step(cmdline.kubectl, kubectl_commands, step)
        if parsed[step].value("--namespace") != NAMESPACE:
            raise Wrong(f"{step}: the lab's objects are in the namespace {NAMESPACE}: -n")
    expected = {
        "scale": ("scale",), "restart_pod": ("delete",), "status": ("rollout", "status"),
        "undo": ("rollout", "undo"), "logs": ("logs",),
    }  # fmt: skip
    for step, command in expected.items():
        if parsed[step].command != command:
            raise Wrong(f"{step}: that is `kubectl {' '.join(parsed[step].command)}`")
    if parsed["logs"].has("--follow"):
        raise Wrong("logs: without -f: a followed log never ends, and neither would the cell")
    for step in ("scale", "status", "undo", "logs"):
        if cmdline.target(parsed[step]) != ("deployment", SERVICE):
            raise Wrong(f"{step}: name the Deployment, deployment/{SERVICE}")
    replicas = parsed["scale"].value("--replicas") or ""
    if not replicas.isdigit() or int(replicas) < 2:
        raise Wrong("scale: two or more replicas, to see them share the work")
    kind, name = cmdline.target(parsed["restart_pod"])
    if kind != "pod":
        raise Wrong(
            f"restart_pod: that deletes the {kind or 'object'}, and nothing brings it back; "
            "delete a pod, and its Deployment replaces it"
        )
    selector = parsed["restart_pod"].value("--selector") or ""
    if name is None and f"{LABEL}={SERVICE}" not in selector.split(","):
        raise Wrong(f"restart_pod: choose the stats pods by their label, -l {LABEL}=...")
    tail = parsed["logs"].value("--tail")
    if tail is not None and not tail.lstrip("-").isdigit():
        raise Wrong("logs: --tail takes a number of lines")
