"""The stats service's settings, read once from environment variables.

The same names in every service: `Settings` and `read_settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab_helpers.config import SERVICE_PORTS, ConfigError, env_value

SERVICE = "stats"
DEFAULT_PORT = SERVICE_PORTS[SERVICE]
DEFAULT_API_URL = f"http://127.0.0.1:{SERVICE_PORTS['api']}"


@dataclass(frozen=True)
class Settings:
    """What the stats service needs to know.

    - `api_url`: where the api answers (`STATS_API_URL`; in a cluster `http://api:8000`);
    - `timeout`: seconds to wait for the api's answer (`STATS_TIMEOUT`);
    - `max_days`: the longest window a request may ask for (`STATS_MAX_DAYS`).
    """

    api_url: str = DEFAULT_API_URL
    timeout: float = 5.0
    max_days: int = 3650


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) < 10:
        raise ValueError(text)
    return text.rstrip("/")


_url.__name__ = "an http:// or https:// address"


def read_settings(env: dict[str, str] | None = None) -> Settings:
    """Read `STATS_*` from `env` (default: the environment); a `ConfigError` (one sentence
    naming the variable) when a value is not valid."""
    return Settings(
        api_url=env_value("STATS_API_URL", DEFAULT_API_URL, _url, env=env),
        timeout=env_value("STATS_TIMEOUT", 5.0, float, env=env, minimum=0.1, maximum=60),
        max_days=env_value("STATS_MAX_DAYS", 3650, int, env=env, minimum=2, maximum=36_500),
    )


__all__ = ["ConfigError", "DEFAULT_PORT", "SERVICE", "Settings", "read_settings"]
