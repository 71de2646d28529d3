"""The stats service (services/stats): its settings reader and its routes in-process with
FastAPI's TestClient, against a real api of the test stack; and the checkers' building blocks
of notebooks 01, 02 and 06 (lab_helpers.dockerfiles, cmdline, policy)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab_helpers import cmdline, dockerfiles
from lab_helpers.config import ConfigError

from .services import service_modules

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stats_modules():
    """The service's own modules, imported as `python services/stats/main.py` does."""
    return vars(service_modules("stats"))


def test_settings_are_read_and_checked(stats_modules):
    settings = stats_modules["settings"]
    assert settings.read_settings({}) == settings.Settings()
    read = settings.read_settings({"STATS_API_URL": "http://api:8000/", "STATS_TIMEOUT": "2"})
    assert read.api_url == "http://api:8000" and read.timeout == 2.0
    for env, says in (({"STATS_API_URL": "api:8000"}, "STATS_API_URL"),
                      ({"STATS_TIMEOUT": "0"}, "out of range")):  # fmt: skip
        with pytest.raises(ConfigError, match=says):
            settings.read_settings(env)


def test_a_bad_port_is_one_line_and_exit_code_2():
    env = {**os.environ, "LAB_PORT": "99999", "STATS_API_URL": "http://127.0.0.1:9"}
    run = subprocess.run([sys.executable, "services/stats/main.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, lines
    assert "LAB_PORT='99999' is out of range" in lines[0]


def test_returns_are_summarized(stats_modules):
    returns = stats_modules["returns"]
    closes = [{"time": f"2024-01-0{i}", "price": p} for i, p in enumerate([100, 110, 99], 1)]
    summary = returns.summarize("btc", closes)
    assert summary["returns"] == 2 and summary["last_price"] == 99
    assert summary["mean_log_return"] == pytest.approx((0.0953102 - 0.1053605) / 2, abs=1e-6)
    assert returns.summarize("btc", [])["daily_volatility"] is None


@pytest.mark.integration
def test_routes_answer_from_the_real_api(stats_modules, tmp_path):
    from fastapi.testclient import TestClient

    from lab_helpers.stack import LocalStack

    from .conftest import require_servers

    require_servers()
    settings, main = stats_modules["settings"], stats_modules["main"]
    with LocalStack(tmp_path / "lab", services=["api"]) as lab:
        api = next(s.url for s in lab.status() if s.name == "api")
        with TestClient(main.build_app(settings.Settings(api_url=api))) as client:
            _ask(client)
    nowhere = settings.Settings(api_url="http://127.0.0.1:9")
    with TestClient(main.build_app(nowhere)) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/stats/btc").status_code == 503


def _ask(client) -> None:
    """The routes, asked in-process."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    answer = client.get("/stats/btc", params={"days": 5})
    assert answer.status_code == 200 and answer.json()["asset"] == "btc"
    assert client.get("/stats/nothing").status_code == 404
    assert client.get("/stats/btc", params={"days": 1}).status_code in (400, 422)
    assert "stats_requests_total" in client.get("/metrics").text


# -- the checkers' building blocks ---------------------------------------------------------------


def test_a_dockerfile_is_read_by_docker_s_parser_and_held_to_the_rules():
    image = dockerfiles.parse((ROOT / "services" / "api" / "Dockerfile").read_text())
    assert image.command == ["python", "services/api/main.py"] and image.expose == [8000]
    assert dockerfiles.rule_problems(image, ROOT) == []
    bad = dockerfiles.parse("FROM python:3.11\nCMD python app.py\n")
    found = " | ".join(dockerfiles.rule_problems(bad, ROOT))
    for says in ("not pinned", "multi-stage", "no USER", "exec form", "no EXPOSE"):
        assert says in found, found
    with pytest.raises(dockerfiles.DockerfileError, match="starts with FROM"):
        dockerfiles.parse("RUN echo hi\n")


def test_docker_lines_are_taken_apart_with_docker_s_flags():
    run = cmdline.docker("docker run -dit --name x -p 127.0.0.1:8080:8003 -e A=1 img:1 sh -c 'a b'")
    assert run.has("--detach") and run.has("--tty") and run.value("--name") == "x"
    assert cmdline.published(run) == [("127.0.0.1", 8080, 8003)]
    assert cmdline.environment(run) == {"A": "1"} and run.args == ["img:1", "sh", "-c", "a b"]
    for line, says in (
        ("docker run --bogus img", "no option --bogus"),
        ("docker build -t x", "1 argument"),
        ("docker ps -z", "no option -z"),
        ("kubectl get pods", "starts with docker"),
        ("docker run 'x", "quotes"),
    ):
        with pytest.raises(cmdline.CommandLineError, match=says):
            cmdline.docker(line)


def test_kubectl_lines_are_read_by_the_real_kubectl():
    scale = cmdline.kubectl("kubectl -n lab scale deployment/stats --replicas=2")
    assert scale.command == ("scale",) and scale.value("--namespace") == "lab"
    assert cmdline.target(scale) == ("deployment", "stats")
    logs = cmdline.kubectl("kubectl -n lab logs -f deployment/stats")
    assert logs.has("--follow") and cmdline.target(logs) == ("deployment", "stats")
    with pytest.raises(cmdline.CommandLineError, match="unknown flag: --replica"):
        cmdline.kubectl("kubectl -n lab scale deployment/stats --replica=2")
    with pytest.raises(cmdline.CommandLineError, match="required flag"):
        cmdline.kubectl("kubectl -n lab scale deployment/stats")
