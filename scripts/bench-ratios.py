#!/usr/bin/env python3
"""Prints the adapter/raw ratios of the last `cargo bench -p tlab-benches --bench transports` as a markdown table.

Reads target/criterion/{throughput,latency}/<transport>/{tlab,raw}/new/estimates.json (criterion's median
estimate, nanoseconds per iteration). Throughput iterations are 1000 messages, so messages/s = 1e12 / median.
ws-mux has no raw baseline of its own and is compared with ws/raw.
"""
import json
import sys
from pathlib import Path

BATCH = 1000
TRANSPORTS = ["ws", "ws-mux", "grpc", "sse-h1", "sse-h2", "quic", "h3", "wt-stream"]
RAW_BASELINE = {"ws-mux": "ws"}


def median_ns(root, kind, transport, side):
    path = root / kind / transport / side / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "target" / "criterion"
    print("| transport | tlab msg/s | raw msg/s | throughput ours/raw | tlab p50 µs | raw p50 µs | p50 latency ours/raw |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for transport in TRANSPORTS:
        raw = RAW_BASELINE.get(transport, transport)
        tput = [median_ns(root, "throughput", t, side) for t, side in ((transport, "tlab"), (raw, "raw"))]
        lat = [median_ns(root, "latency", t, side) for t, side in ((transport, "tlab"), (raw, "raw"))]
        if None in tput or None in lat:
            print(f"| {transport} | missing results under {root} | | | | | |")
            continue
        rates = [BATCH * 1e9 / ns for ns in tput]
        ours_rate, raw_rate = rates
        print(
            f"| {transport} | {ours_rate:,.0f} | {raw_rate:,.0f} | {ours_rate / raw_rate:.2f}× "
            f"| {lat[0] / 1e3:.1f} | {lat[1] / 1e3:.1f} | {lat[0] / lat[1]:.2f}× |"
        )


if __name__ == "__main__":
    main()
