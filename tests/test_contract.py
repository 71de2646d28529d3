"""The manifests and the programs agree: what a Deployment says is what the service does.

For each Deployment of the rendered base (source, ingest, api) the test takes the container's
command, environment and port from the manifest, runs that command as a real local process
and checks that it listens on the declared containerPort and answers the liveness and
readiness probes the manifest names. The servers' side is checked the same way: the NATS
flags with a real nats-server, the probe paths and the InfluxDB init statement against the
real servers of the `stack` fixture. And each image's ENTRYPOINT, port and user are the
manifest's (tests/test_dockerfiles.py compares the images with the local command).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from lab_helpers.broker import STREAM
from lab_helpers.stack import find_binary, free_port

from .conftest import require_servers
from .test_dockerfiles import DOCKERFILES, instructions
from .test_manifests import MANIFESTS, containers, kustomize, named, of_kind

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("source", "ingest", "api")
# Which InfluxDB user each key of the Secret influxdb-credentials holds.
SECRET_ROLES = {"ingest": "ingest", "reader": "reader", "admin": "admin"}


@pytest.fixture(scope="module")
def base():
    return kustomize(MANIFESTS / "base")


def container_of(docs: list[dict], kind: str, name: str) -> dict:
    (c,) = containers(named(docs, kind, name))
    return c


def probe(c: dict, key: str) -> tuple[str, str | int]:
    """(path, port) of a container's HTTP probe; a named port becomes its number."""
    get = c[key]["httpGet"]
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    return get["path"], ports.get(get["port"], get["port"])


def image_env(name: str) -> dict[str, str]:
    """The ENV of a service's image, without the variables that hold paths inside the image
    (PATH, LAB_DATA_DIR): the local process keeps this checkout's."""
    env = {}
    for word, args in instructions(DOCKERFILES[name]):
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                if key not in ("PATH", "LAB_DATA_DIR"):
                    env[key] = value
    return env


def manifest_env(docs: list[dict], name: str, stack) -> dict[str, str]:
    """The environment Kubernetes would give the container, resolved from the manifest.

    ConfigMap references take the rendered ConfigMap's values and Secret references the
    stack's generated credentials. The addresses in lab-settings are cluster DNS names
    (http://influxdb:8086, nats://nats:4222) that only resolve inside the namespace: each is
    replaced by the address of the stack's real server. LAB_HOST=0.0.0.0 is replaced by a
    loopback address: on a shared machine a test never listens on every interface.
    """
    c = container_of(docs, "Deployment", name)
    maps = {cm["metadata"]["name"]: cm["data"] for cm in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in c.get("env", []):
        ref = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in ref:
            env[item["name"]] = maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            role, _, part = ref["secretKeyRef"]["key"].rpartition("-")
            creds = stack.settings.credentials(SECRET_ROLES[role])
            env[item["name"]] = creds.username if part == "user" else creds.password
    cluster_addresses = {
        "http://influxdb:8086": stack.settings.influx_url,
        "nats://nats:4222": stack.settings.nats_url,
    }
    for key, value in env.items():
        env[key] = cluster_addresses.get(value, value)
    assert not [v for v in env.values() if "//influxdb:" in v or "//nats:" in v], env
    return env


def loopback_for(port: int) -> str:
    """A loopback address (127.0.0.0/8) where ``port`` is free, so the service gets exactly
    its declared port even when a running lab already holds it on 127.0.0.1."""
    start = random.randrange(2, 250)
    for last in [*range(start, 255), *range(2, start)]:
        host = f"127.0.0.{last}"
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            try:
                sock.bind((host, port))
                return host
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
    why = f"port {port} is taken on every loopback address (something listens on 0.0.0.0)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def wait_for_status(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> int:
    """GET ``url`` until it answers 200 (returns 200) or the deadline (returns the last)."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
        with contextlib.suppress(requests.RequestException):
            status = requests.get(url, timeout=2).status_code
            if status == 200:
                return status
        time.sleep(0.1)
    return status


def on_jetstream(nats_url: str, action):
    """``await action(js)`` on a fresh connection to the stack's NATS; returns its result."""
    import nats

    async def run():
        nc = await nats.connect(nats_url)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


async def consumer_names(js) -> set[str]:
    """The durable consumers of the stream TICKS (none while there is no stream)."""
    from nats.js.errors import NotFoundError

    try:
        return {info.name for info in await js.consumers_info(STREAM)}
    except NotFoundError:
        return set()


@pytest.mark.integration
def test_each_deployment_runs_locally_as_its_manifest_says(base, stack, tmp_path):
    before = on_jetstream(stack.settings.nats_url, consumer_names)
    running = {}
    try:
        for name in SERVICES:
            c = container_of(base, "Deployment", name)
            command = c["command"]
            assert command[0] == "python", command  # run here with this test's interpreter
            (port,) = [p["containerPort"] for p in c["ports"]]
            env = {**image_env(name), **manifest_env(base, name, stack)}
            assert env["LAB_PORT"] == str(port), "the process must listen on the containerPort"
            host = loopback_for(port)
            env["LAB_HOST"] = host
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, *command[1:]],
                    cwd=ROOT,  # the image's WORKDIR holds services/ the same way
                    env={"PATH": os.environ["PATH"], **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running[name] = (proc, f"http://{host}:{port}", c, log)
        for name, (proc, url, c, log) in running.items():
            live_path, live_port = probe(c, "livenessProbe")
            ready_path, ready_port = probe(c, "readinessProbe")
            assert live_port == ready_port == int(url.rsplit(":", 1)[1])
            assert wait_for_status(url + live_path, proc, log) == 200, f"{name} {live_path}"
            # Ready once its dependencies (the stack's NATS and InfluxDB) answer.
            assert wait_for_status(url + ready_path, proc, log) == 200, (
                f"{name} {ready_path}: {requests.get(url + ready_path, timeout=2).text}"
            )
    finally:
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for name, (proc, _, _, log) in running.items():
            code = proc.wait(timeout=30)
            assert code == 0, f"{name} did not stop cleanly on SIGTERM ({code}):\n{log.read_text()}"
        # The ingest service's durable consumer stays on the shared stack's NATS: remove it
        # if this test created it, so later tests start from the state they expect.
        created = on_jetstream(stack.settings.nats_url, consumer_names) - before

        async def delete(js):
            for consumer in created:
                await js.delete_consumer(STREAM, consumer)

        on_jetstream(stack.settings.nats_url, delete)


@pytest.mark.integration
def test_nats_accepts_the_manifest_s_flags_and_serves_its_probes(base, tmp_path):
    require_servers()
    c = container_of(base, "StatefulSet", "nats")
    args = list(c["args"])
    monitor = free_port()
    # The manifest's flags, with the data folder and the monitoring port of this machine.
    args[args.index("-sd") + 1] = str(tmp_path / "data")
    args[args.index("-m") + 1] = str(monitor)
    assert args[0] == "-js"
    cmd = [find_binary("nats-server"), *args, "-a", "127.0.0.1", "-p", str(free_port())]
    log = tmp_path / "nats.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{monitor}"
        for key in ("startupProbe", "livenessProbe", "readinessProbe"):
            path, port = probe(c, key)
            assert port == 8222  # the -m flag of the manifest
            assert wait_for_status(base_url + path, proc, log) == 200, path
        jsz = requests.get(base_url + "/jsz", timeout=2).json()
        assert jsz["config"]["store_dir"].startswith(str(tmp_path / "data")), jsz["config"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.integration
def test_influxdb_probe_and_init_statement_work_on_a_real_influxd(base, admin, stack):
    c = container_of(base, "StatefulSet", "influxdb")
    for key in ("startupProbe", "livenessProbe", "readinessProbe"):
        path, port = probe(c, key)
        assert port == 8086
        # Kubernetes counts any status from 200 to 399 as success; /ping answers 204.
        assert 200 <= requests.get(stack.settings.influx_url + path, timeout=2).status_code < 400
    (init,) = [cm for cm in of_kind(base, "ConfigMap") if cm["metadata"]["name"] != "lab-settings"]
    (statement,) = init["data"].values()
    database = named(base, "ConfigMap", "lab-settings")["data"]["LAB_INFLUX_DB"]

    def shard_duration() -> str:
        (result,) = admin.execute(f'SHOW RETENTION POLICIES ON "{admin.database}"')
        (series,) = result["series"]
        rows = [dict(zip(series["columns"], row)) for row in series["values"]]
        return next(r["shardGroupDuration"] for r in rows if r["name"] == "autogen")

    # The image runs it as the admin right after `CREATE DATABASE`, which gives one-week
    # shards. Here on a database of its own, so the session's "prices" stays as it is.
    admin.execute(f'ALTER RETENTION POLICY "autogen" ON "{admin.database}" SHARD DURATION 7d')
    assert shard_duration() == "168h0m0s"
    admin.execute(statement.replace(f'"{database}"', f'"{admin.database}"'))
    assert shard_duration() == "8736h0m0s"  # 52 weeks


@pytest.mark.parametrize("name", SERVICES)
def test_each_image_runs_the_manifest_s_command_port_and_user(base, name):
    rows = instructions(DOCKERFILES[name])
    (entrypoint,) = [json.loads(args) for word, args in rows if word == "ENTRYPOINT"]
    deployment = named(base, "Deployment", name)
    (c,) = containers(deployment)
    assert c["command"] == entrypoint
    assert [str(p["containerPort"]) for p in c["ports"]] == [a for w, a in rows if w == "EXPOSE"]
    users = [args for word, args in rows if word == "USER"]
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert str(pod["runAsUser"]) == users[-1], "the manifest runs the image's own user"
