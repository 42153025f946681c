#!/usr/bin/env bash
# The main job: set up, build tlab (release), run the same exchanges on every transport mode over loopback and
# write results/compare-<UTC time>/{runs.jsonl,report.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p tlab-cli
target/release/tlab compare "$@"
