#!/usr/bin/env bash
# Each time the dev container starts: the local stack (InfluxDB, NATS, the three services), then
# JupyterLab on port 8888 in the background, opened on the first notebook. Its port is
# forwarded privately by Codespaces (only you can open it), so it runs without a token.
set -euo pipefail
cd "$(dirname "$0")/.."
make stack-up
mkdir -p .lab
nohup .venv/bin/jupyter lab --ip=0.0.0.0 --port=8888 --no-browser \
  --ServerApp.token='' --ServerApp.password='' \
  notebooks/00_welcome_and_setup.ipynb > .lab/jupyterlab.log 2>&1 &
echo "JupyterLab starts on port 8888 (log: .lab/jupyterlab.log); \`make cluster\` adds a kind cluster"
