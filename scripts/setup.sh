#!/usr/bin/env bash
# Installs everything transport-lab needs on a fresh Debian/Ubuntu machine (run as root):
# system packages via apt-get, the Python interop peers into a venv under target/py, and the Node packages the
# docs/PROTOCOL.md examples use (crates/tlab-cli/tests/protocol_examples.rs) under target/node.
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
# tshark reads captured runs with their key logs (crates/tlab-cli/tests/capture.rs); the setuid question of
# wireshark-common is answered "no" below (root needs no capture group).
command -v tshark >/dev/null || need_apt+=(tshark)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need_apt+=(python3-venv); fi
# Node >= 18 (built-in fetch) runs the protocol examples; npm installs their `ws` package.
command -v node >/dev/null && command -v npm >/dev/null || need_apt+=(nodejs npm)
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }
if ((${#need_apt[@]})); then
    echo "setup: apt-get install ${need_apt[*]}"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
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

node_dir=target/node
if [ ! -d "$node_dir/node_modules/ws" ]; then
    echo "setup: Node packages for the protocol examples into $node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --silent ws@8
fi
