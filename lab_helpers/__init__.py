"""Helpers for the lab *Data Science powered by Kubernetes and microservices*.

The pieces, one module each:

- :mod:`lab_helpers.config`   the settings (mode, addresses, credentials), in one place
- :mod:`lab_helpers.stack`    start/stop the local InfluxDB and NATS servers
- :mod:`lab_helpers.influx`   write DataFrames to InfluxDB and query them back
- :mod:`lab_helpers.data`     the bundled real price history, as tidy DataFrames
- :mod:`lab_helpers.etl`      the cleaning rules (empty values, units, time zones, duplicates...)

In Jupyter, errors the lab raises on purpose show as one sentence saying what to do.
"""

from importlib import import_module

from .errors import LabError, install_notebook_handler

__version__ = "0.1.0"

# Imported on first use, so `python -m lab_helpers.stack` and the services start fast.
_LAZY = {
    "InfluxDB": "influx",
    "WriteReport": "influx",
    "LocalStack": "stack",
    "Settings": "config",
    "load_settings": "config",
}
__all__ = ["LabError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'lab_helpers' has no attribute {name!r}")


install_notebook_handler()
