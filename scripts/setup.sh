#!/usr/bin/env bash
# Installs everything transport-lab needs on a fresh Debian/Ubuntu machine (run as root):
# system packages via apt-get, the Python interop peers into a venv under target/py.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# ip, tc and ss (iproute2) and sysctl (procps) configure the emulator's namespaces.
command -v ip >/dev/null && command -v tc >/dev/null && command -v ss >/dev/null || need_apt+=(iproute2)
command -v sysctl >/dev/null || need_apt+=(procps)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v python3 >/dev/null || need_apt+=(python3)
# Headless Chromium is the browser client (crates/tlab-experiments/src/browser.rs and its e2e test).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need_apt+=(python3-venv); fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }
if ((${#need_apt[@]})); then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

venv=target/py
if [ ! -x "$venv/bin/python" ] || ! cmp -s scripts/requirements.txt "$venv/requirements.txt"; then
    echo "setup: Python interop peers into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
    cp scripts/requirements.txt "$venv/requirements.txt"
fi
