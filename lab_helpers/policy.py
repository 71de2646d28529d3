"""The lab's rules for a workload (Deployment or StatefulSet), as code: what the tests hold the
lab's own manifests to, and what notebook 02 holds a learner's manifest to.

Each rule is one sentence when broken. A program's own pods (`own=True`: the lab's services)
also run with a read-only root file system:

    from lab_helpers import policy

    policy.workload_problems(deployment, own=True)   # [] when it keeps every rule
    policy.validate(objects, "1.37.0")               # kubernetes-validate, strict

The rules: every container has CPU and memory requests and limits, a readiness and a liveness
probe on a port it declares; the pod does not mount a service-account token and has a grace
period; every container runs as a non-root numeric user, with the runtime's default seccomp
profile, no privilege escalation and no Linux capability; its image is pinned to a tag.
"""

from __future__ import annotations

from collections.abc import Iterable

PROBES = ("readinessProbe", "livenessProbe")


def containers(workload: dict) -> list[dict]:
    """The init containers and containers of a workload's pod template."""
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec.get("containers", [])


def effective(workload: dict, container: dict, key: str):
    """A securityContext setting of a container, or else of its pod."""
    own = container.get("securityContext") or {}
    pod = workload["spec"]["template"]["spec"].get("securityContext") or {}
    return own.get(key, pod.get(key))


def probe_port(probe: dict):
    """The port an HTTP or TCP probe asks (a number or a port name)."""
    return (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")


def workload_problems(workload: dict, own: bool = False) -> list[str]:
    """What in `workload` breaks the lab's rules (see the module help), one sentence each."""
    problems = []
    spec = workload["spec"]["template"]["spec"]
    where = f"{workload['kind']}/{workload['metadata']['name']}"
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false")
    if not isinstance(spec.get("terminationGracePeriodSeconds"), int):
        problems.append(f"{where}: no terminationGracePeriodSeconds")
    for c in containers(workload):
        at = f"{where} container {c['name']}"
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in (resources.get(part) or {}):
                    problems.append(f"{at}: no {part}.{res}")
        declared = {p["containerPort"] for p in c.get("ports", [])}
        declared |= {p["name"] for p in c.get("ports", []) if "name" in p}
        for key in ("startupProbe", *PROBES):
            if key not in c:
                if key in PROBES:
                    problems.append(f"{at}: no {key}")
                continue
            port = probe_port(c[key])
            if port not in declared:
                problems.append(f"{at}: the {key} asks port {port}, which no port declares")
        if effective(workload, c, "runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        user = effective(workload, c, "runAsUser")
        if not isinstance(user, int) or user == 0:
            problems.append(f"{at}: runAsUser must be a number other than 0, not {user!r}")
        if (effective(workload, c, "seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{at}: seccompProfile is not RuntimeDefault")
        own_context = c.get("securityContext") or {}
        if own_context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if (own_context.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{at}: capabilities do not drop ALL")
        if own and own_context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: the lab's services run with a read-only root file system")
        image = str(c.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if "@sha256:" not in image and (not tag or tag == "latest"):
            problems.append(f"{at}: image {image or '(none)'} is not pinned to a tag")
    return problems


def validate(objects: Iterable[dict], version: str, strict: bool = True) -> list[str]:
    """kubernetes-validate on each object for Kubernetes `version` (`"1.37.0"`); strict:
    unknown fields are errors. One line per object that fails (its first error)."""
    import kubernetes_validate.utils as kv

    problems = []
    for obj in objects:
        name = f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"
        try:
            kv.validate(obj, version, strict=strict)
        except kv.ValidationError as err:
            where = "/".join(map(str, err.absolute_path))
            problems.append(f"{name}: {err.message}" + (f" (at {where})" if where else ""))
        except kv.SchemaNotFoundError as err:
            problems.append(f"{name}: {err.message}")
    return problems
