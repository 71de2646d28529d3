"""`docker` and `kubectl` command lines read the way the tools read them, without running them.

A line is split with the shell's rules (`shlex`), then its options are taken apart with the
tool's documented flags: which take a value (`-t lab-stats:0.1.0`, `--tag=...`), which are
switches that may be grouped (`-dit`). `docker` knows the subcommands the lab teaches
(`DOCKER_FLAGS`, from `docker <command> --help`; `docker buildx build` reads as `docker
build`, whose options it shares); for `kubectl`, the real kubectl
reads the line too (`kubectl_accepts`): pointed at a server that does not exist, it gets
as far as connecting when the line is valid, and says what is wrong when it is not (an unknown
flag, a missing argument), in its own words:

    from lab_helpers import cmdline

    cmd = cmdline.docker("docker run -d -p 127.0.0.1:8003:8003 -e A=1 lab-stats:0.1.0")
    cmd.value("-p")        # "127.0.0.1:8003:8003"
    cmd.values("-e")       # ["A=1"]
    cmd.args               # ["lab-stats:0.1.0"]
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .commands import find_tool
from .errors import LabError


class CommandLineError(LabError):
    """The line is not a command the tool would accept: the message says why."""


# docker's options per subcommand, as `docker <command> --help` documents them: each long
# name with its short form, and whether it takes a value. Only the subcommands the lab teaches.
_VALUE, _SWITCH = True, False
DOCKER_FLAGS: dict[str, dict[str, tuple[str | None, bool]]] = {
    "build": {
        "--tag": ("-t", _VALUE), "--file": ("-f", _VALUE), "--platform": (None, _VALUE),
        "--build-arg": (None, _VALUE), "--target": (None, _VALUE), "--label": (None, _VALUE),
        "--no-cache": (None, _SWITCH), "--pull": (None, _SWITCH), "--quiet": ("-q", _SWITCH),
        "--progress": (None, _VALUE), "--load": (None, _SWITCH), "--push": (None, _SWITCH),
    },
    "run": {
        "--detach": ("-d", _SWITCH), "--name": (None, _VALUE), "--publish": ("-p", _VALUE),
        "--env": ("-e", _VALUE), "--env-file": (None, _VALUE), "--rm": (None, _SWITCH),
        "--interactive": ("-i", _SWITCH), "--tty": ("-t", _SWITCH), "--user": ("-u", _VALUE),
        "--read-only": (None, _SWITCH), "--platform": (None, _VALUE),
        "--network": (None, _VALUE), "--volume": ("-v", _VALUE), "--memory": ("-m", _VALUE),
        "--cpus": (None, _VALUE), "--entrypoint": (None, _VALUE), "--workdir": ("-w", _VALUE),
        "--restart": (None, _VALUE), "--label": ("-l", _VALUE), "--init": (None, _SWITCH),
        "--pull": (None, _VALUE), "--publish-all": ("-P", _SWITCH), "--tmpfs": (None, _VALUE),
    },
    "ps": {
        "--all": ("-a", _SWITCH), "--filter": ("-f", _VALUE), "--format": (None, _VALUE),
        "--last": ("-n", _VALUE), "--latest": ("-l", _SWITCH), "--no-trunc": (None, _SWITCH),
        "--quiet": ("-q", _SWITCH), "--size": ("-s", _SWITCH),
    },
    "images": {
        "--all": ("-a", _SWITCH), "--digests": (None, _SWITCH), "--filter": ("-f", _VALUE),
        "--format": (None, _VALUE), "--no-trunc": (None, _SWITCH), "--quiet": ("-q", _SWITCH),
    },
    "tag": {},
    "push": {"--all-tags": ("-a", _SWITCH), "--quiet": ("-q", _SWITCH),
             "--platform": (None, _VALUE)},  # fmt: skip
    "logs": {"--follow": ("-f", _SWITCH), "--tail": ("-n", _VALUE), "--since": (None, _VALUE),
             "--timestamps": ("-t", _SWITCH)},  # fmt: skip
    "rm": {"--force": ("-f", _SWITCH), "--volumes": ("-v", _SWITCH)},
}  # fmt: skip
# How many arguments each subcommand takes (after its options): (least, most or None).
DOCKER_ARGS = {
    "build": (1, 1), "run": (1, None), "ps": (0, 0), "images": (0, 1), "tag": (2, 2),
    "push": (1, 1), "logs": (1, 1), "rm": (1, None),
}  # fmt: skip


@dataclass
class Parsed:
    """A command line taken apart: the program, its subcommand words, its options (by long
    name, each with every value given) and its other arguments."""

    line: str
    program: str
    command: tuple[str, ...]
    options: dict[str, list[str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return name in self.options

    def values(self, name: str) -> list[str]:
        return list(self.options.get(name, []))

    def value(self, name: str) -> str | None:
        found = self.options.get(name)
        return found[-1] if found else None


def split(line: str) -> list[str]:
    """The words of `line` as a POSIX shell splits them; one sentence when it cannot."""
    if not isinstance(line, str):
        raise CommandLineError("a command is one line of text (a string)")
    try:
        words = shlex.split(line, comments=True)
    except ValueError as err:
        raise CommandLineError(
            f"the shell cannot split that line ({err}): check the quotes"
        ) from None
    if not words:
        raise CommandLineError("the line is empty")
    return words


def _take_options(
    words: list[str], flags: dict[str, tuple[str | None, bool]], where: str
) -> tuple[dict[str, list[str]], list[str]]:
    short = {s: long for long, (s, _) in flags.items() if s}
    options: dict[str, list[str]] = {}
    args: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            args += words[i + 1 :]
            break
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            if name not in flags:
                raise CommandLineError(f"`{where}` has no option {name}")
            takes = flags[name][1]
            if takes and not eq:
                if i + 1 >= len(words):
                    raise CommandLineError(f"{name} needs a value")
                value, i = words[i + 1], i + 1
            elif not takes and eq:
                raise CommandLineError(f"{name} takes no value")
            options.setdefault(name, []).append(value if takes else "")
        elif word.startswith("-") and len(word) > 1:
            letters = word[1:]
            for at, letter in enumerate(letters):
                name = short.get(f"-{letter}")
                if name is None:
                    raise CommandLineError(f"`{where}` has no option -{letter}")
                if flags[name][1]:
                    value = letters[at + 1 :].lstrip("=")
                    if not value:
                        if i + 1 >= len(words):
                            raise CommandLineError(f"-{letter} needs a value")
                        value, i = words[i + 1], i + 1
                    options.setdefault(name, []).append(value)
                    break
                options.setdefault(name, []).append("")
        else:
            args.append(word)
        i += 1
    return options, args


def docker(line: str) -> Parsed:
    """A `docker` command line taken apart with docker's documented options
    (`DOCKER_FLAGS`); a `CommandLineError` says what docker would refuse."""
    words = split(line)
    if words[0] != "docker":
        raise CommandLineError("the line starts with docker")
    if len(words) < 2:
        raise CommandLineError("docker needs a command: build, run, ps, images, tag, push ...")
    command = words[1]
    if command in ("image", "container") and len(words) > 2:  # docker image ls, ...
        command = {"ls": "images", "list": "images", "push": "push", "tag": "tag",
                   "build": "build", "run": "run", "logs": "logs", "rm": "rm"}.get(
            words[2], words[2])  # fmt: skip
        words = [words[0], command, *words[3:]]
    if command == "buildx":  # docker buildx build: the same options as build (BuildKit's)
        if words[2:3] != ["build"]:
            raise CommandLineError("the lab teaches `docker buildx build` only")
        command, words = "build", [words[0], "build", *words[3:]]
    if command not in DOCKER_FLAGS:
        raise CommandLineError(f"the lab does not teach `docker {command}` here")
    if command == "run":
        # Everything after the image is the container's own command, not docker's options.
        options, args, rest = _run_options(words[2:])
    else:
        options, args = _take_options(words[2:], DOCKER_FLAGS[command], f"docker {command}")
        rest = []
    least, most = DOCKER_ARGS[command]
    if len(args) < least or (most is not None and len(args) > most):
        wanted = f"{least}" if least == most else f"at least {least}"
        raise CommandLineError(
            f"`docker {command}` takes {wanted} argument(s) after its options, not "
            f"{len(args)}: {' '.join(args) or '(none)'}"
        )
    return Parsed(line, "docker", (command,), options, args + rest)


def _run_options(words: list[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """docker run's options, its image, and the container's own command after the image."""
    flags = DOCKER_FLAGS["run"]
    short = {s: long for long, (s, _) in flags.items() if s}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name, eq, _ = word.partition("=")
            i += 2 if name in flags and flags[name][1] and not eq else 1
        elif word.startswith("-") and len(word) > 1:
            letters = word[1:]
            for at, letter in enumerate(letters):
                long = short.get(f"-{letter}")
                if long and flags[long][1]:
                    i += 1 if at == len(letters) - 1 else 0  # its value is the next word
                    break
            i += 1
        else:  # the image: what follows is the container's command
            options, args = _take_options(words[: i + 1], flags, "docker run")
            return options, args, words[i + 1 :]
    options, args = _take_options(words, flags, "docker run")
    return options, args, []


def published(cmd: Parsed) -> list[tuple[str, int, int]]:
    """The port mappings of a `docker run`: (host address, host port, container port) for each
    `-p [ADDRESS:]HOST:CONTAINER`; a `CommandLineError` for one docker would refuse."""
    found = []
    for text in cmd.values("--publish"):
        spec = text.split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 2:
            parts = ["0.0.0.0", *parts]
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise CommandLineError(
                f"-p {text}: publish a port as [ADDRESS:]HOST_PORT:CONTAINER_PORT, "
                "e.g. 127.0.0.1:8003:8003"
            )
        found.append((parts[0] or "0.0.0.0", int(parts[1]), int(parts[2])))
    return found


def environment(cmd: Parsed) -> dict[str, str]:
    """The `-e NAME=value` settings of a `docker run`."""
    env = {}
    for text in cmd.values("--env"):
        name, eq, value = text.partition("=")
        if not eq:
            raise CommandLineError(
                f"-e {text}: give a value (NAME=value); without one docker copies the variable "
                "from your shell, where it may not exist"
            )
        env[name] = value
    return env


# -- kubectl: the real one reads the line ---------------------------------------------------

_NOWHERE = """apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: nowhere, user: {token: none}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nowhere}}]
current-context: nowhere
"""
_REFUSED = "was refused - did you specify the right host or port?"


def kubectl_accepts(words: list[str]) -> str | None:
    """None when the real kubectl accepts the command line `words` (it gets as far as
    connecting to a server, which here does not exist), else kubectl's own first error line
    (an unknown flag, a missing argument...). Nothing is sent anywhere: the server address is
    127.0.0.1 port 9, where nothing listens."""
    kubectl = find_tool("kubectl")
    with tempfile.TemporaryDirectory(prefix="kubectl-parse-") as tmp:
        config = Path(tmp) / "config"
        config.write_text(_NOWHERE)
        env = {**os.environ, "KUBECONFIG": str(config), "HOME": tmp}
        run = subprocess.run(
            [kubectl, *words[1:], "--request-timeout=2s"],
            capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
    text = run.stdout + run.stderr
    if run.returncode == 0 or _REFUSED in text or "connect: connection refused" in text:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("E1")]
    return lines[0] if lines else f"kubectl exited with {run.returncode}"


# kubectl's options that take a value, for the lab's commands (`kubectl <command> --help`).
KUBECTL_VALUES = {
    "-n": "--namespace", "--namespace": "--namespace", "--context": "--context",
    "-l": "--selector", "--selector": "--selector", "--replicas": "--replicas",
    "--timeout": "--timeout", "--tail": "--tail", "-c": "--container",
    "--container": "--container", "-o": "--output", "--output": "--output",
    "--to-revision": "--to-revision", "-f": "--filename", "--filename": "--filename",
    "-k": "--kustomize", "--kustomize": "--kustomize", "--since": "--since",
    "--grace-period": "--grace-period", "--kubeconfig": "--kubeconfig",
}  # fmt: skip
# Subcommands with two words.
KUBECTL_GROUPS = {"rollout", "config", "set", "create"}


def kubectl(line: str, *, check: bool = True) -> Parsed:
    """A `kubectl` command line taken apart (options by long name); with `check`, the real
    kubectl reads it first and its objection, if any, is the `CommandLineError`."""
    words = split(line)
    if words[0] != "kubectl":
        raise CommandLineError("the line starts with kubectl")
    if check:
        problem = kubectl_accepts(words)
        if problem:
            raise CommandLineError(f"kubectl refuses it: {problem}")
    options: dict[str, list[str]] = {}
    plain: list[str] = []
    follows = "logs" in words  # for kubectl logs, -f is --follow (elsewhere --filename)
    i = 1
    while i < len(words):
        word = words[i]
        if follows and word in ("-f", "--follow"):
            options.setdefault("--follow", []).append("")
        elif word.startswith("-"):
            name, eq, value = word.partition("=")
            long = KUBECTL_VALUES.get(name)
            if long and not eq:
                value, i = (words[i + 1] if i + 1 < len(words) else ""), i + 1
            options.setdefault(long or name, []).append(value)
        else:
            plain.append(word)
        i += 1
    size = 2 if plain and plain[0] in KUBECTL_GROUPS else 1
    return Parsed(line, "kubectl", tuple(plain[:size]), options, plain[size:])


def target(cmd: Parsed) -> tuple[str, str | None]:
    """The object a kubectl command names, as (kind, name): `deployment/stats` and
    `deployment stats` both give ("deployment", "stats"); `pod -l ...` gives ("pod", None)."""
    if not cmd.args:
        return "", None
    first = cmd.args[0]
    if "/" in first:
        kind, _, name = first.partition("/")
        return kind_of(kind), name
    return kind_of(first), (cmd.args[1] if len(cmd.args) > 1 else None)


def kind_of(word: str) -> str:
    """A kind as kubectl understands its short names and plurals: `deploy` -> `deployment`."""
    word = word.lower()
    aliases = {"deploy": "deployment", "deployments": "deployment", "po": "pod", "pods": "pod",
               "svc": "service", "services": "service", "ns": "namespace",
               "namespaces": "namespace", "pvc": "persistentvolumeclaim",
               "persistentvolumeclaims": "persistentvolumeclaim"}  # fmt: skip
    return aliases.get(word, word)
