"""The source service's settings, read once from environment variables.

The same names in every service: `Settings` and `read_settings(env)`. The variables and their
meaning are listed in `services/source/README.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab_helpers import catalogue, live, replay
from lab_helpers.config import (
    SERVICE_PORTS,
    ConfigError,
    as_bool,
    csv_list,
    env_value,
    load_settings,
    number,
)
from lab_helpers.data import FREQUENCIES

SERVICE = "source"
DEFAULT_PORT = SERVICE_PORTS[SERVICE]


@dataclass(frozen=True)
class Settings:
    """Everything the source reads from the environment (`read_settings` reads it; the
    variables are listed in `services/source/README.md`)."""

    nats_url: str
    mode: str
    replay: replay.ReplayConfig
    speedup: float
    rate: float | None
    limit: int | None
    buffer: int
    live_assets: tuple[str, ...]
    live_apis: tuple[str, ...]
    live_interval: float
    live_endpoints: tuple[live.Endpoint, ...]

    def describe(self) -> dict:
        """The settings that matter in this mode, for `/stats`."""
        common = {"mode": self.mode, "limit": self.limit, "buffer": self.buffer}
        if self.mode == "live":
            return common | {
                "live_assets": list(self.live_assets),
                "live_apis": list(self.live_apis),
                "live_interval": self.live_interval,
            }
        config = self.replay
        return common | {
            "dataset": config.dataset,
            "assets": list(config.assets),
            "frequency": config.frequency if config.dataset is None else None,
            "start": config.start,
            "loop": config.loop,
            "speedup": self.speedup,
            "rate": self.rate,
            "bad_share": config.bad_share,
            "bad_kinds": list(config.bad_kinds),
            "seed": config.seed,
            "backfill": config.backfill,
        }


def _assets(name: str, text_default: str, env) -> tuple[str, ...]:
    """A comma-separated list of asset names in `name`, as the lab's names."""
    names = env_value(name, csv_list(text_default), csv_list, env=env)
    known = catalogue.load()
    assets = []
    for item in names:
        asset = known.normalize(item)
        if asset is None:
            raise ConfigError(
                f"{name}={','.join(names)!r} is not valid: {item!r} is not an asset of the lab "
                f"({', '.join(known)}; add it to the catalogue {catalogue.FILE_NAME})"
            )
        assets.append(asset)
    return tuple(dict.fromkeys(assets))


def read_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and check every setting from `env` (default: the environment); a `ConfigError`
    (one sentence naming the variable) for the first bad one."""
    nats_url = load_settings(env).require_nats_url()
    mode = env_value("SOURCE_MODE", "replay", str.lower, env=env, choices=("replay", "live"))

    dataset = env_value("SOURCE_DATASET", None, str.lower, env=env)
    datasets = catalogue.load().datasets
    if dataset is not None and dataset not in datasets:
        raise ConfigError(
            f"SOURCE_DATASET={dataset!r} is not valid: use one of {', '.join(datasets)}"
        )
    assets = _assets("SOURCE_ASSETS", "", env)
    if dataset and assets:
        raise ConfigError("SOURCE_DATASET and SOURCE_ASSETS are both set: keep only one")
    start = env_value("SOURCE_START", None, env=env)
    if start is not None:
        try:
            replay.parse_start(start)
        except ConfigError:
            raise ConfigError(
                f"SOURCE_START={start!r} is not a time: use ISO 8601, e.g. 2021-04-01T00:00:00Z"
            ) from None
    kinds = env_value("SOURCE_BAD_KINDS", replay.BAD_KINDS, csv_list, env=env)
    unknown = [k for k in kinds if k not in replay.BAD_KINDS]
    if unknown:
        raise ConfigError(
            f"SOURCE_BAD_KINDS is not valid: {unknown[0]!r} is not a kind of bad record "
            f"(use some of {', '.join(replay.BAD_KINDS)})"
        )
    config = replay.ReplayConfig(
        # SOURCE_ASSETS, else SOURCE_DATASET, else the 1-minute BTC bars.
        dataset=None if assets else dataset or "btc_usd_1min",
        assets=assets,
        frequency=env_value("SOURCE_FREQUENCY", "daily", str.lower, env=env, choices=FREQUENCIES),
        start=start,
        loop=env_value("SOURCE_LOOP", False, as_bool, env=env),
        bad_share=env_value("SOURCE_BAD_SHARE", 0.0, number, env=env, minimum=0, maximum=1),
        bad_kinds=tuple(kinds),
        seed=env_value("SOURCE_SEED", 0, int, env=env),
        # The default replay first sends every asset's history, so that no chart is empty;
        # a replay chosen with SOURCE_DATASET, SOURCE_ASSETS or SOURCE_START is just that.
        backfill=env_value("SOURCE_BACKFILL", True, as_bool, env=env)
        and not (dataset or assets or start),
    )
    live_assets = _assets("SOURCE_LIVE_ASSETS", "btc,eth,gold", env)
    live_apis = env_value("SOURCE_LIVE_APIS", live.DEFAULT_APIS, csv_list, env=env)
    try:  # checked in replay mode too: a typo should not wait for the day live mode is used
        endpoints = tuple(live.plan(live_assets, live_apis))
    except ConfigError as err:
        raise ConfigError(f"SOURCE_LIVE_ASSETS / SOURCE_LIVE_APIS: {err}") from None
    return Settings(
        nats_url=nats_url,
        mode=mode,
        replay=config,
        # By default one row of data a second: 60x for 1-minute bars, 86400x for daily data.
        speedup=env_value(
            "SOURCE_SPEEDUP", config.natural_step, number, env=env, minimum=1e-3, maximum=1e9
        ),
        rate=env_value("SOURCE_RATE", None, number, env=env, minimum=1e-3, maximum=1e6),
        limit=env_value("SOURCE_LIMIT", None, int, env=env, minimum=1),
        buffer=env_value("SOURCE_BUFFER", 10_000, int, env=env, minimum=1, maximum=1_000_000),
        live_assets=live_assets,
        live_apis=live_apis,
        live_interval=env_value(
            "SOURCE_LIVE_INTERVAL", 10.0, number, env=env, minimum=1, maximum=86_400
        ),
        live_endpoints=endpoints,
    )
