#!/usr/bin/env python3
"""Prints the adapter/raw ratios of the last `cargo bench -p tlab-benches --bench transports` as one markdown table.

Usage: bench-ratios.py [CRITERION_DIR]   (default: target/criterion of this workspace)

The modes are read from criterion's output directory: every <mode> with a throughput/<mode>/tlab result. A mode's
raw baseline is raw/<mode> if the bench measured one, else the raw result of the mode's family, its name up to the
last '-' (ws-mux -> ws: raw tokio-tungstenite has no multiplexing); modes with neither are listed below the table.
Values are criterion's median estimates (nanoseconds per iteration, new/estimates.json) with their 95 % confidence
interval in parentheses; throughput iterations are 1000 messages, so messages/s = 1e12 / median, and the latency
median is the p50 round trip. Ratios are of the medians.
"""
import json
import sys
from pathlib import Path

BATCH = 1000


def median_ns(root, kind, mode, side):
    """(median, CI lower bound, CI upper bound) in ns per iteration, or None without a result."""
    path = root / kind / mode / side / "new" / "estimates.json"
    if not path.exists():
        return None
    median = json.loads(path.read_text())["median"]
    ci = median["confidence_interval"]
    return median["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def rate(estimate):
    """Messages/s of a throughput estimate: median and its interval (the slower bound first)."""
    return tuple(BATCH * 1e9 / ns for ns in (estimate[0], estimate[2], estimate[1]))


def micros(estimate):
    return tuple(ns / 1e3 for ns in estimate)


def has_both(root, mode, side):
    return all(median_ns(root, kind, mode, side) is not None for kind in ("throughput", "latency"))


def baseline(root, mode):
    """The mode whose raw result `mode` is compared with, or None."""
    for candidate in (mode, mode.rsplit("-", 1)[0]):
        if has_both(root, candidate, "raw"):
            return candidate
    return None


def main():
    default = Path(__file__).resolve().parent.parent / "target" / "criterion"
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    modes = sorted(p.parent.name for p in (root / "throughput").glob("*/tlab") if has_both(root, p.parent.name, "tlab"))
    if not modes:
        sys.exit(f"no tlab results under {root}: run `cargo bench -p tlab-benches --bench transports` first")
    print("| mode | raw baseline | tlab msg/s | raw msg/s | throughput ours/raw | tlab p50 µs | raw p50 µs | p50 ours/raw |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    without = []
    for mode in modes:
        raw = baseline(root, mode)
        if raw is None:
            without.append(mode)
            continue
        ours_rate, raw_rate = (rate(median_ns(root, "throughput", m, s)) for m, s in ((mode, "tlab"), (raw, "raw")))
        ours_p50, raw_p50 = (micros(median_ns(root, "latency", m, s)) for m, s in ((mode, "tlab"), (raw, "raw")))
        print(
            f"| {mode} | {raw} | {ours_rate[0]:,.0f} ({ours_rate[1]:,.0f}–{ours_rate[2]:,.0f}) "
            f"| {raw_rate[0]:,.0f} ({raw_rate[1]:,.0f}–{raw_rate[2]:,.0f}) | {ours_rate[0] / raw_rate[0]:.2f}× "
            f"| {ours_p50[0]:.1f} ({ours_p50[1]:.1f}–{ours_p50[2]:.1f}) | {raw_p50[0]:.1f} ({raw_p50[1]:.1f}–{raw_p50[2]:.1f}) "
            f"| {ours_p50[0] / raw_p50[0]:.2f}× |"
        )
    if without:
        print(f"\nNo raw baseline: {', '.join(without)}.")


if __name__ == "__main__":
    main()
