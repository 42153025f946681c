//! Per-message records end to end (needs root, as CI runs): a tiny suite through `tlab run` and the emulator, then a
//! notebook-style reanalysis — read a run's `messages/*.csv.gz` as pandas would and find the summary's figures again.
//! Also checks that `wt-datagram` measures one-way latency with pattern "source" (its server sends on the schedule)
//! instead of a round trip, and that the report says n/a for a CI of one repetition.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use tlab_results::{Distribution, MessageRecord, Metric, Stat, decode_csv_gz};

const SUITE: &str = r#"
name = "records"
seed = 11
repetitions = 1
transports = ["wt-datagram", "ws-mux"]
profiles = ["lossy-2"]
cell_timeout_s = 30

[[experiment]]
kind = "latency"
messages = 100
size = 128
rate_hz = 200

[[experiment]]
kind = "latency"
pattern = "echo"
messages = 100
size = 128
rate_hz = 200
"#;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The `mean` of `metric` for `transport` in the cell whose params contain `param`, read from summary.csv.
fn summary_mean(summary: &str, transport: &str, param: &str, metric: Metric) -> f64 {
    let row = summary
        .lines()
        .find(|l| l.contains(param) && l.contains(&format!(",{transport},lossy-2,{metric},")))
        .unwrap_or_else(|| panic!("no {transport} {metric} row: {summary}"));
    row.rsplit(',').nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_runs_message_file_recomputes_its_summary() {
    let dir = std::env::temp_dir().join(format!("tlab-records-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite = dir.join("records.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let out = dir.join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["run", suite.to_str().unwrap(), "--no-calibration", "--out", out.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .output()
        .expect("run tlab");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();

    let runs = lines(&out.join("runs.jsonl"));
    assert_eq!(runs.len(), 4);
    let mut p50 = std::collections::BTreeMap::new();
    for r in &runs {
        assert_eq!(r["status"], "ok", "{r}");
        let (transport, echo) = (r["transport"].as_str().unwrap(), r["params"]["pattern"] == "echo");
        let which = if echo { Distribution::RoundTrip } else { Distribution::OneWay };
        // The notebook: one call to read the file the run names, then plain arithmetic on its columns.
        let file = r["messages"].as_str().unwrap_or_else(|| panic!("the run names its message file: {r}"));
        let messages: Vec<MessageRecord> = decode_csv_gz(&std::fs::read(out.join(file)).unwrap()).unwrap();
        let delivered = messages.iter().map(|m| (m.stream, m.seq)).filter(|(_, seq)| *seq < 100).collect::<HashSet<_>>().len();
        let param = if echo { "echo" } else { "source" };
        assert_eq!(delivered as f64, summary_mean(&summary, transport, param, Metric::Delivered), "{transport} {param}: delivered");
        let mut latencies: Vec<u64> = messages.iter().map(|m| m.received_ns - m.scheduled_ns).collect();
        latencies.sort_unstable();
        let median_us = latencies[(latencies.len() - 1) / 2] as f64 / 1e3;
        let recorded = summary_mean(&summary, transport, param, which.metric(Stat::P50));
        assert!((median_us - recorded).abs() <= recorded * 2e-3 + 1.0, "{transport} {param}: p50 {median_us} µs from the file, {recorded} µs in the summary");
        assert!(messages.iter().all(|m| m.scheduled_ns <= m.sent_ns && m.sent_ns < m.received_ns && m.size == 128), "{transport} {param}");
        assert!(r["metrics"][which.metric(Stat::P50).name()].is_number() && r["metrics"][which.metric(Stat::P50).name()] == recorded, "{r}");
        // Goodput over the data phase: at most the offered load over the schedule's span (99 intervals).
        let offered_mbit_s = delivered as f64 * 128.0 * 8.0 / (99.0 / 200.0) / 1e6;
        let goodput = r["metrics"][Metric::Goodput.name()].as_f64().unwrap();
        assert!(goodput <= offered_mbit_s && goodput > 0.5 * offered_mbit_s, "{transport} {param}: goodput {goodput} vs offered {offered_mbit_s}");
        p50.insert((transport.to_string(), echo), recorded);
    }
    // lossy-2 has 20 ms each way: a one-way figure is near 20 ms, a round trip near 40 ms — for datagrams too.
    for transport in ["wt-datagram", "ws-mux"] {
        let (one_way, round_trip) = (p50[&(transport.to_string(), false)], p50[&(transport.to_string(), true)]);
        assert!((20_000.0..30_000.0).contains(&one_way), "{transport}: one-way p50 {one_way} µs");
        assert!(round_trip >= 40_000.0 && round_trip > one_way * 1.5, "{transport}: round trip {round_trip} µs vs one-way {one_way} µs");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("± n/a") && report.contains("one_way_latency-ccdf-lossy-2.svg"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
