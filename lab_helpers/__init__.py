"""Helpers for the lab *Data Science powered by Kubernetes and microservices*.

One module, one job. `services/<name>/` holds what only that service runs; this package holds
what the notebooks or two services share (`docs/architecture.md`). The modules, by who uses
them:

**The learner** (the notebooks import them):

- `config`: the settings (mode, addresses, credentials), in one place
- `stack`: start, stop and inspect the local InfluxDB, NATS and services (`make stack-up`)
- `influx`: write DataFrames to InfluxDB and query them back
- `data`: the bundled real price history, as tidy DataFrames
- `catalogue`: the asset catalogue `data/assets.yaml`, and adding an asset of your own
- `etl`: the cleaning rules (empty values, units, time zones, duplicates...)
- `replay`: the price history as a stream of ticks, bad records mixed in (notebook 03)
- `live`: live prices from public REST APIs (notebook 03)
- `sensors`: an IoT-style source, temperature sensors sending JSON readings (notebook 03)
- `stores`: the same readings in SQLite and in InfluxDB, measured (notebook 03)
- `practice`: a practice data folder to add an asset to, `data/` untouched (notebook 03)
- `pipeline_watch`: watch the ingest workers take in, store and quarantine (notebook 03)
- `analysis`: the stored history, honest charts, calendars (notebook 04)
- `dashboard`: the price dashboard, inside JupyterLab or in a browser tab
- `exercises`: step checks and exercise checkers: ✅ when right, ⛔ with what to try
- `answers`: the exercises of each notebook (`exercises.yaml`) and how they are checked
- `shell`: `%%cluster` cells, the commands you type (`docker`, `kubectl`, `helm`, `az`)
- `dockerfiles`: a Dockerfile checked the way the lab's own images are (notebook 01)
- `probes`: ask a running service over HTTP: what a call costs (notebooks 01, 02)
- `manifests`: the Kubernetes manifests, rendered offline (notebook 02)
- `policy`: the lab's rules for a workload, as code (notebook 02, the manifest tests)
- `cluster`: connect to a cluster, the InfluxDB Secret (notebook 02)
- `pods`: are the pods ready, and if not why; how fast a deleted pod comes back
- `forward`: `kubectl port-forward` in the background
- `helm`: install NATS from its official chart
- `scaling`: the scaling experiment on the local stack (notebook 02)
- `delivery`: polling or push, measured (notebook 05)
- `azure`: the registry, the AKS cluster and the teardown, through `az` (notebooks 02, 06)
- `costs`: what the lab costs on Azure, from one dated price table (notebooks 02, 06)
- `errors`: the lab's errors, each one sentence that says what to do

**The services** (`services/<name>/` import them; `config`, `influx`, `catalogue`, `etl`,
`replay` and `live` above too):

- `service`: what every service shares: health, readiness, metrics, JSON logs, graceful stop
- `broker`: the NATS JetStream subjects, the tick stream and the tick wire format
- `ingest`: what happens to a batch of ticks: decoded, cleaned, written (also the tests,
  the benchmarks and notebook 03)
- `lineprotocol`: InfluxDB line protocol from DataFrames and points

**The teacher** (a class lab, a cluster of one's own):

- `classlab`: one shared Kubernetes cluster, one namespace per student
- `kind`: the lab on a kind cluster on this machine (`make cluster`)
- `images`: the three service images: built, loaded, pushed to a registry

**The maintainer** (tests, benchmarks, CI):

- `workbook`: run the notebooks headless, refresh their outputs, make the student edition
- `wait`: the one polling loop of the stack, the cluster code, the tests and the benchmarks
- `commands`: run `kubectl`, `docker`, `kind`, `helm` and `az` the same way everywhere
- `cmdline`: `docker` and `kubectl` command lines read the way the tools read them

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
