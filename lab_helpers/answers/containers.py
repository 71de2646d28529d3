"""How the exercises of notebook 01 (microservices and containers) are checked.

01.1: the Dockerfile of the stats service (`services/stats/`), read by Docker's own parser,
linted by hadolint, held to the lab's rules (`lab_helpers.dockerfiles`), then its command run
as a local process with the file's settings, whose `/healthz` must answer 200.
01.2: the `docker` commands that build, run, list and ship that image, taken apart with
docker's documented options (`lab_helpers.cmdline`); in kind mode the notebook runs them.
01.3: what a container shares with its host that a virtual machine does not.
01.4: one `docker buildx build` line for the machines of a heterogeneous fleet (x86 and ARM),
taken apart the same way.
"""

from __future__ import annotations

import posixpath

from .. import __version__, cmdline, dockerfiles
from ..config import project_root
from ..exercises import Wrong
from . import parse_step

SERVICE = "stats"
PORT = 8003  # the stats service's port (services/stats/settings.py)
IMAGE = f"lab-{SERVICE}:{__version__}"
CONTAINER = "lab-stats-try"  # the name the notebook's later steps read logs and remove by
# Where the learner's files go: not committed (build/ is ignored), so the repository holds no
# answer; the kind workflow builds the image from there.
EXERCISE_DIR = project_root() / "build" / "exercises" / SERVICE
DOCKERFILE = EXERCISE_DIR / "Dockerfile"


def save_dockerfile(text: str) -> str:
    """Write the learner's Dockerfile to `build/exercises/stats/Dockerfile`; returns that
    path, relative to the repository (what `docker build -f` takes)."""
    if not isinstance(text, str) or not text.strip():
        raise Wrong("write the Dockerfile first (exercise 01.1)")
    EXERCISE_DIR.mkdir(parents=True, exist_ok=True)
    DOCKERFILE.write_text(text if text.endswith("\n") else text + "\n")
    return DOCKERFILE.relative_to(project_root()).as_posix()


# -- 01.1 the Dockerfile -----------------------------------------------------------------------
def verify_dockerfile(stats_dockerfile, API) -> None:
    if not isinstance(stats_dockerfile, str):
        raise Wrong("`stats_dockerfile` is the Dockerfile's text, as one string")
    try:
        image = dockerfiles.parse(stats_dockerfile)
    except dockerfiles.DockerfileError as err:
        raise Wrong(str(err)) from None
    findings = dockerfiles.hadolint(stats_dockerfile)
    if findings:
        raise Wrong(f"hadolint: {findings[0]}")
    problems = dockerfiles.rule_problems(image, project_root())
    if problems:
        raise Wrong(problems[0])
    if image.env.get("LAB_PORT") != str(PORT):
        raise Wrong(f"the stats service listens on LAB_PORT: set it to {PORT} with ENV")
    with dockerfiles.run_locally(image, project_root(), env={"STATS_API_URL": API}) as run:
        try:
            status = run.probe("/healthz")
        except dockerfiles.DockerfileError as err:
            raise Wrong(f"its command does not serve: {err}") from None
    if status != 200:
        raise Wrong(f"its /healthz answered {status}, not 200")


# -- 01.2 the docker commands ------------------------------------------------------------------
STEPS = ("build", "run", "ps", "images", "tag", "push")


def _parse(commands: dict, step: str) -> cmdline.Parsed:
    parsed = parse_step(cmdline.docker, commands, step)
    if parsed.command[0] != step:  # each step is named after its docker command
        raise Wrong(f'"{step}" is a `docker {step}` command')
    return parsed


def verify_docker_commands(docker_commands, ACR) -> None:
    if not isinstance(docker_commands, dict) or set(docker_commands) != set(STEPS):
        raise Wrong(f"`docker_commands` is a dict with the keys {', '.join(STEPS)}")
    build, run, ps, images, tag, push = (_parse(docker_commands, s) for s in STEPS)
    dockerfile = posixpath.normpath(build.value("--file") or "Dockerfile")
    if dockerfile != _relative(DOCKERFILE):
        raise Wrong("build: -f names the Dockerfile you wrote, build/exercises/stats/Dockerfile")
    if build.args != ["."]:
        raise Wrong(
            "build: the context (the last argument) is the repository's root, `.`: the image "
            "copies lab_helpers/ and services/ from there"
        )
    tags = build.values("--tag")
    if IMAGE not in tags:
        latest = [t for t in tags if t.endswith(":latest") or ":" not in t]
        raise Wrong(
            "build: tag the image with the lab's version, which names one build"
            + (" (never latest)" if latest else "")
        )
    if run.args[:1] != [IMAGE]:
        raise Wrong(f"run: start the image you built ({IMAGE} is its tag)")
    if run.value("--name") != CONTAINER:
        raise Wrong(f"run: name the container {CONTAINER} (--name): the next steps use that name")
    if not run.has("--detach"):
        raise Wrong("run: -d (detached), or the cell would wait for the service to end")
    try:
        ports, env = cmdline.published(run), cmdline.environment(run)
    except cmdline.CommandLineError as err:
        raise Wrong(f"run: {err}") from None
    if not ports:
        raise Wrong("run: publish the service's port with -p, or nothing outside reaches it")
    if any(inside != PORT for _, _, inside in ports):
        raise Wrong(f"run: the container listens on {PORT} (its EXPOSE): -p HOST:{PORT}")
    if any(address != "127.0.0.1" for address, _, _ in ports):
        raise Wrong("run: publish on 127.0.0.1 only (-p 127.0.0.1:HOST:PORT), not to your network")
    if "STATS_API_URL" not in env:
        raise Wrong("run: the service needs the api's address, STATS_API_URL, with -e")
    if not ps.has("--all"):
        raise Wrong("ps: add -a, which lists stopped containers too (a crashed one, say)")
    if images.args not in ([], [IMAGE.split(":")[0]], [IMAGE]):
        raise Wrong("images: list the images (optionally only lab-stats)")
    remote = f"{ACR}.azurecr.io/{IMAGE}"
    if tag.args != [IMAGE, remote]:
        raise Wrong(
            f"tag: `docker tag SOURCE TARGET`, from the image you built to its name in your "
            f"registry, {ACR}.azurecr.io/ followed by the same name and version"
        )
    if push.args != [remote]:
        raise Wrong("push: the name the image has in your registry, as you tagged it")


# -- 01.4 one image for x86 and ARM machines -----------------------------------------------
PLATFORMS = ("linux/amd64", "linux/arm64")


def verify_multi_platform(multi_platform_build, ACR) -> None:
    try:
        build = cmdline.docker(multi_platform_build)
    except cmdline.CommandLineError as err:
        raise Wrong(str(err)) from None
    if build.command[0] != "build":
        raise Wrong("it is a `docker buildx build` line")
    platforms = {p.strip() for value in build.values("--platform") for p in value.split(",")}
    missing = [p for p in PLATFORMS if p not in platforms]
    if missing:
        raise Wrong(
            "--platform names every kind of machine that will pull the image, comma-separated: "
            f"{'one is' if len(missing) == 1 else 'two are'} missing"
        )
    if posixpath.normpath(build.value("--file") or "Dockerfile") != _relative(DOCKERFILE):
        raise Wrong("-f names the Dockerfile you wrote, build/exercises/stats/Dockerfile")
    if build.args != ["."]:
        raise Wrong("the context (the last argument) is the repository's root, `.`")
    if f"{ACR}.azurecr.io/{IMAGE}" not in build.values("--tag"):
        raise Wrong(
            "-t gives the image its name in your registry (as in 01.2's tag), so that every "
            "machine pulls it from there"
        )
    if not build.has("--push"):
        raise Wrong(
            "a multi-platform image cannot be kept in the local Docker, which holds one "
            "platform: --push sends it to the registry as it is built"
        )


def _relative(path) -> str:
    return path.relative_to(project_root()).as_posix()
