#!/usr/bin/env bash
# The whole test suite: sets up what it needs, then runs every test of the workspace (summary line at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TLAB_PYTHON="$PWD/target/py/bin/python"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --failure-output final
else
    cargo test --workspace --no-fail-fast
fi
