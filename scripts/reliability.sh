#!/usr/bin/env bash
# Bulk resilient echo on every reliable mode (issue 12): `tlab client --resilient` with STREAMS × MESSAGES echoes,
# once on loopback and once through an emulated PROFILE (server in its namespace at 10.77.0.2), printing one
# Markdown row per mode and setting. Needs root (namespaces) and a release build of tlab.
# usage: [TLAB_BIN=path] scripts/reliability.sh [LOOPBACK_MESSAGES] [PROFILE] [PROFILE_MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
tlab=${TLAB_BIN:-target/release/tlab}
loopback_messages=${1:-1000000}
profile=${2:-lossy-2}
profile_messages=${3:-20000}
streams=2
export RUST_BACKTRACE=0
[ -x "$tlab" ] || cargo build --release -p tlab-cli

modes=$("$tlab" list --json | python3 -c 'import json,sys; print(" ".join(t["name"] for t in json.load(sys.stdin) if t["capabilities"]["reliable"]))')
row() { # mode setting json
    python3 - "$@" <<'PY'
import json, sys
r = json.loads(sys.argv[3])
cells = [sys.argv[1], sys.argv[2], f"{r['delivered']:,}", r["lost"], r["duplicated"], r["out_of_order"], r["reconnects"], f"{r['elapsed_s']:.1f}"]
print("| " + " | ".join(str(c) for c in cells) + " |")
PY
}
echo "| mode | setting | delivered | lost | duplicated | out of order | reconnects | data phase (s) |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $modes; do
    out=$(mktemp)
    "$tlab" serve --transport "$mode" --listen 127.0.0.1:0 --token rel >"$out" 2>/dev/null &
    server=$!
    # End the server (by its PID) however this iteration ends.
    trap 'kill "$server" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
    url=$(head -1 "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
    if report=$(timeout 600 "$tlab" client --transport "$mode" --connect "$url" --token rel --insecure --resilient \
        --json --streams $streams --messages "$loopback_messages" 2>/dev/null); then
        row "$mode" "loopback, $streams × $loopback_messages" "$report"
    else
        echo "| $mode | loopback, $streams × $loopback_messages | FAILED | | | | | |"
    fi
    kill "$server"; wait "$server" 2>/dev/null || true; rm -f "$out"

    # The same URL with the server namespace's address in place of the loopback one.
    url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(netloc="10.77.0.2:4433")))' "$url")
    if report=$(timeout 900 "$tlab" netem run --profile "$profile" \
        --server "$tlab serve --transport $mode --listen 10.77.0.2:4433 --token rel" -- \
        "$tlab" client --transport "$mode" --connect "$url" --token rel --insecure --resilient --json \
        --streams $streams --messages "$profile_messages" 2>/dev/null | grep '"delivered"'); then
        row "$mode" "$profile, $streams × $profile_messages" "$report"
    else
        echo "| $mode | $profile, $streams × $profile_messages | FAILED | | | | | |"
    fi
done
