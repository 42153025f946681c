#!/usr/bin/env bash
# The main job: set up, build tlab (release), run the default quick suite (experiments/quick.toml) through the link
# emulator and write results/quick-<UTC time>/ with report.md, report.html and plots/. Extra arguments go to
# `tlab run` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p tlab-cli
target/release/tlab run experiments/quick.toml "$@"
