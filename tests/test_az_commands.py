"""Every ``az`` command the lab shows or runs is accepted by the Azure CLI's own parser.

The real ``az`` (PyPI's ``azure-cli``, in a virtual environment of its own: ``scripts/setup.sh
tools``) parses each command without a login: a well-formed one gets as far as "Please run 'az
login'" (exit 1), an unknown or misspelled option stops it with exit 2. The parser does not
check values, so the values the lab passes are checked against the choices ``az ... --help``
lists. The commands come from ``lab_helpers.azure`` (each step's exact command) and from every
text a learner reads: the docs and READMEs, the notebooks, the helpers' messages.

``az aks create --generate-ssh-keys`` writes keys into ``~/.ssh`` before it asks for a login,
so every run gets a ``HOME`` and an ``AZURE_CONFIG_DIR`` of its own in a temporary folder.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from lab_helpers import azure, images
from tests.tools import isolated_tool

ROOT = Path(__file__).resolve().parent.parent
# Placeholders in the docs, and the Python values the notebooks' cells expand.
SAMPLES = {
    "registry": "cryptolab123", "group": "crypto-lab-rg", "cluster": "crypto-lab-aks",
    "region": "westeurope", "name": "cryptolab123", "REGISTRY": "cryptolab123",
    "GROUP": "crypto-lab-rg", "CLUSTER": "crypto-lab-aks", "LOCATION": "westeurope", "s": "api",
}  # fmt: skip
PARSE_ERRORS = ("unrecognized arguments", "the following arguments are required", "misspelled")


def az_path() -> Path:
    return isolated_tool("azure-cli", "az")


def run_az(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    home = tmp / f"home-{abs(hash(tuple(args)))}"
    (home / ".azure").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AZURE_CONFIG_DIR": str(home / ".azure"),
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "AZURE_CORE_ONLY_SHOW_ERRORS": "true",
        "AZURE_CORE_NO_COLOR": "true",
    }
    return subprocess.run(
        [str(az_path()), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


# -- where the lab shows az commands ---------------------------------------------------------


def helper_commands() -> list[str]:
    """The exact commands of every step of lab_helpers.azure (and its image builds)."""
    import contextlib
    import io

    commands = []
    with contextlib.redirect_stdout(io.StringIO()):
        commands += azure.login() + azure.create_group() + azure.create_registry("cryptolab123")
        commands += azure.create_cluster() + azure.create_cluster(registry="cryptolab123")
        commands += azure.get_credentials() + azure.stop_cluster() + azure.start_cluster()
        commands += azure.delete_group() + azure.remaining() + azure.quota()
        commands += images.for_registry("cryptolab123", use_docker=False)
        commands += [azure.acr_login_command("cryptolab123")]
    return [str(c) for c in commands if c.tool == "az"]


def text_files() -> list[Path]:
    skip = {".git", ".venv", "build", "data", "node_modules", ".lab"}
    found = []
    for path in ROOT.rglob("*"):
        if any(part in skip for part in path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in (".md", ".py", ".ipynb", ".yml", ".yaml") and "tests" not in path.parts:
            found.append(path)
    return found


def texts(path: Path) -> list[str]:
    """The text a learner reads in a file: notebook cells' sources (not their outputs), a
    module's strings (as Python joins them)."""
    if path.suffix == ".ipynb":
        return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]
    if path.suffix == ".py":
        tree = ast.parse(path.read_text())
        return [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
    return [path.read_text()]


def shown_commands() -> dict[str, list[str]]:
    """``az ...`` in code spans and code lines of every text file: {command: [where]}.

    A bare name in prose (`az acr build`) is not a command; one with an option is."""
    found: dict[str, list[str]] = {}
    for path in text_files():
        for text in texts(path):
            joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines
            candidates = re.findall(r"`(az [^`]+)`", joined)
            candidates += re.findall(r"^\s*(?:\$ )?(az [a-z].*)$", joined, re.M)
            for candidate in candidates:
                command = " ".join(candidate.split("    #")[0].split("  # ")[0].split())
                if "..." in command or "`" in command or "--" not in command:
                    continue  # an elided example ("az aks get-credentials ... --overwrite")
                where = str(path.relative_to(ROOT))
                found.setdefault(command, []).append(where)
    return found


def concrete(command: str) -> list[str]:
    """The command with its placeholders filled in, split like a shell would."""
    text = re.sub(r"<([a-z-]+)>", lambda m: SAMPLES.get(m.group(1), "sample1"), command)
    text = re.sub(r"\{([A-Z_]+)\}", lambda m: SAMPLES.get(m.group(1), "sample1"), text)
    text = re.sub(r"\$\{?([a-z]+)\}?", lambda m: SAMPLES.get(m.group(1), "sample1"), text)
    words = shlex.split(text)
    assert words[0] == "az", command
    return words[1:]


@cache
def every_command() -> dict[str, list[str]]:
    commands = {c: ["lab_helpers/azure.py"] for c in helper_commands()}
    for command, where in shown_commands().items():
        commands.setdefault(command, []).extend(where)
    return commands


def test_the_lab_shows_many_az_commands():
    commands = every_command()
    groups = {tuple(concrete(c)[:2]) for c in commands}
    # The steps of docs/azure.md and notebook 02 at least.
    for step in [("aks", "create"), ("aks", "get-credentials"), ("group", "delete"),
                 ("acr", "build"), ("acr", "login"), ("vm", "list-usage")]:  # fmt: skip
        assert step in groups, step
    assert len(commands) >= 20


def outcome(args: list[str], tmp: Path) -> tuple[int, str]:
    done = run_az(args, tmp)
    return done.returncode, done.stdout + done.stderr


def test_every_az_command_is_accepted_by_az_s_own_parser(tmp_path):
    az_path()
    commands = every_command()
    args = {c: concrete(c) for c in commands}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(args, pool.map(lambda a: outcome(a, tmp_path), args.values())))
    problems = []
    for command, (code, text) in results.items():
        parsed = code == 1 and not any(e in text for e in PARSE_ERRORS)
        if args[command][:1] == ["login"]:
            ok = parsed  # no login can happen here (no network): just no parse error
        elif args[command][:2] == ["acr", "login"]:
            # az acr login asks the local Docker daemon before Azure, after parsing.
            ok = parsed and ("az login" in text or "Docker daemon" in text)
        else:
            ok = parsed and "az login" in text
        if not ok:
            problems.append(f"{command}  ({', '.join(sorted(set(commands[command])))}): "
                            f"exit {code}: {text.strip().splitlines()[-1:]}")  # fmt: skip
    print(f"{len(results)} distinct az commands parsed by az")
    assert not problems, "\n".join(problems)


def test_the_parser_refuses_a_misspelled_option(tmp_path):
    """The check above can fail: az stops at a wrong option with exit 2."""
    code, text = outcome(["aks", "create", "--resource-group", "g", "--name", "c",
                          "--network-polcy", "cilium"], tmp_path)  # fmt: skip
    assert code == 2 and "unrecognized arguments" in text or "misspelled" in text


@cache
def allowed_values(command: tuple[str, ...], tmp: Path) -> dict[str, set[str]]:
    """{option: allowed values} from ``az <command> --help``."""
    help_text = run_az([*command, "--help"], tmp).stdout
    entries = re.split(r"\n(?=\s{4}--[a-z0-9-]+)", help_text)
    allowed = {}
    for entry in entries:
        head = re.match(r"\s{4}(--[a-z0-9-]+)", entry)
        if not head:
            continue
        flat = " ".join(entry.split())
        values = re.search(r"Allowed values: ([^.]+)\.", flat)
        if values:
            allowed[head.group(1)] = {v.strip() for v in values.group(1).split(",")}
        else:
            # --network-policy lists them as bullets instead
            listed = re.findall(r'- "([a-z0-9-]+)" (?:for|when)', flat)
            if listed:
                allowed[head.group(1)] = set(listed)
    return allowed


def value_problems(args: list[str], tmp: Path) -> list[str]:
    words = [w for w in args if not w.startswith("-")]
    command = tuple(words[:2]) if words[:1] != ["login"] else ("login",)
    allowed = allowed_values(command, tmp)
    problems = []
    for i, word in enumerate(args[:-1]):
        if word in allowed and not args[i + 1].startswith("-") and args[i + 1] not in allowed[word]:
            problems.append(f"{word} {args[i + 1]} (allowed: {', '.join(sorted(allowed[word]))})")
    return problems


def test_the_values_the_lab_passes_are_among_the_allowed_ones(tmp_path):
    az_path()
    problems = []
    checked = 0
    for command in every_command():
        found = value_problems(concrete(command), tmp_path)
        checked += 1
        problems += [f"{command}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    create = allowed_values(("aks", "create"), tmp_path)
    assert {"cilium", "azure", "calico", "none"} <= create["--network-policy"]
    assert (
        "cilium" in create["--network-dataplane"] and "overlay" in create["--network-plugin-mode"]
    )
    # And the check can fail: a value az would take but AKS would not.
    assert value_problems(["aks", "create", "--network-policy", "nonsense"], tmp_path)
