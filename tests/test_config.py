"""Settings: precedence, validation and secrets kept out of repr."""

import json

import pytest

from lab_helpers.config import Credentials, load_settings
from lab_helpers.errors import ConfigError


def test_defaults_without_stack(tmp_path):
    s = load_settings(env={}, lab_dir=tmp_path)
    assert s.mode == "local" and s.influx_database == "prices"
    assert s.influx_url is None and s.nats_url is None
    with pytest.raises(ConfigError, match="stack up"):
        s.require_influx_url()
    with pytest.raises(ConfigError, match="LAB_INFLUX_READER_USER"):
        s.credentials("reader")


def test_stack_files_then_environment_override(tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {"influxdb": {"url": "http://127.0.0.1:1111"}, "nats": {"url": "nats://127.0.0.1:2"}}
        )
    )
    (tmp_path / "credentials.json").write_text(
        json.dumps(
            {
                "admin": {"username": "a", "password": "pa"},
                "reader": {"username": "r", "password": "pr"},
            }
        )
    )
    s = load_settings(env={}, lab_dir=tmp_path)
    assert s.influx_url == "http://127.0.0.1:1111" and s.nats_url == "nats://127.0.0.1:2"
    assert s.credentials("reader") == Credentials("r", "pr")
    env = {"LAB_INFLUX_URL": "http://db:8086", "LAB_INFLUX_READER_PASSWORD": "other"}
    s = load_settings(env=env, lab_dir=tmp_path)
    assert s.influx_url == "http://db:8086"
    assert s.credentials("reader") == Credentials("r", "other")


def test_a_service_identity_stands_in_for_every_role(tmp_path):
    env = {"LAB_MODE": "cluster", "LAB_INFLUX_USER": "svc", "LAB_INFLUX_PASSWORD": "pw"}
    s = load_settings(env=env, lab_dir=tmp_path)
    assert s.mode == "cluster"
    assert s.credentials("ingest") == Credentials("svc", "pw")


def test_bad_values_are_refused_with_a_sentence(tmp_path):
    with pytest.raises(ConfigError, match="use 'local' or 'cluster'"):
        load_settings(env={"LAB_MODE": "cloud"}, lab_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown InfluxDB role"):
        load_settings(env={}, lab_dir=tmp_path).credentials("root")
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        load_settings(env={}, lab_dir=tmp_path)


def test_passwords_never_show_in_repr(tmp_path):
    env = {"LAB_INFLUX_ADMIN_USER": "a", "LAB_INFLUX_ADMIN_PASSWORD": "s3cret-value"}
    s = load_settings(env=env, lab_dir=tmp_path)
    assert "s3cret-value" not in repr(s)
    assert "s3cret-value" not in repr(s.credentials("admin"))


def test_a_service_identity_wins_over_the_stack_file(tmp_path):
    (tmp_path / "credentials.json").write_text(
        json.dumps({"reader": {"username": "lab_reader", "password": "from-file"}})
    )
    env = {"LAB_INFLUX_USER": "svc", "LAB_INFLUX_PASSWORD": "from-env"}
    assert load_settings(env=env, lab_dir=tmp_path).credentials("reader") == Credentials(
        "svc", "from-env"
    )
    env["LAB_INFLUX_READER_PASSWORD"] = "role-specific"
    assert load_settings(env=env, lab_dir=tmp_path).credentials("reader").password == (
        "role-specific"
    )
