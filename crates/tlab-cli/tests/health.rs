//! Link health and provenance through `tlab run` (needs root, as CI runs): an artificial stall of the forwarder
//! (`TLAB_NETEM_TEST_STALL_MS`, once per process, so only the first cell's link stalls) marks that run
//! `link_ok: false`, the report flags it and leaves it out of the summaries unless `--include-unhealthy`; run from
//! a directory outside any checkout, the manifest records the commit the binary was built from.

use std::path::Path;
use std::process::Command;

const SUITE: &str = r#"
name = "health"
seed = 9
repetitions = 2
transports = ["ws-mux"]
profiles = ["wan-50ms"]
cell_timeout_s = 30
link_tolerance_us = 1000
# One cell at a time: beside another cell, an unhealthy cell would be run again (crate::schedule), healthy.
concurrency = 1

[[experiment]]
kind = "latency"
messages = 300
size = 128
rate_hz = 500
"#;

const STALL_MS: u64 = 300;

fn tlab(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "error")
        .env("TLAB_NETEM_TEST_STALL_MS", STALL_MS.to_string())
        .output()
        .expect("run tlab")
}

/// The `n` of every `delivered` row of summary.csv.
fn delivered_n(summary: &str) -> Vec<u64> {
    summary.lines().filter(|l| l.split(',').rev().nth(4) == Some("delivered")).map(|l| l.split(',').rev().nth(1).unwrap().parse().unwrap()).collect()
}

#[test]
fn a_stalled_forwarder_marks_its_run_unhealthy_and_the_manifest_names_the_binary_commit() {
    let dir = std::env::temp_dir().join(format!("tlab-health-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outside = Command::new("git").arg("-C").arg(&dir).args(["rev-parse", "HEAD"]).output().unwrap();
    assert!(!outside.status.success(), "{} must not be inside a git checkout for this test", dir.display());
    std::fs::write(dir.join("health.toml"), SUITE).unwrap();
    let run = tlab(&dir, &["run", "health.toml", "--no-calibration", "--out", "out"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = dir.join("out");

    let runs: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("runs.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(runs.len(), 2);
    let (stalled, other) = (&runs[0]["link"], &runs[1]["link"]);
    assert_eq!((&stalled["backend"], &stalled["tolerance_us"]), (&"tun".into(), &1000.into()), "{stalled}");
    assert_eq!(stalled["link_ok"], false, "the stalled link must be unhealthy: {stalled}");
    // Packets inside the 25 ms delay line when the stall began leave at least STALL_MS − 25 ms late.
    assert!(stalled["lateness_max_us"].as_f64().unwrap() >= ((STALL_MS - 25) * 1000) as f64, "{stalled}");
    assert!(stalled["lateness_p99_us"].as_f64().unwrap() > 1000.0 && stalled["late_packets"].as_u64().unwrap() > 0, "{stalled}");
    assert!(other["released"].as_u64().unwrap() > 0 && other["realtime"].is_boolean(), "the second cell has its own health: {other}");
    let healthy = runs.iter().filter(|r| r["link"]["link_ok"] == true).count() as u64;

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("link unhealthy in {} of 2 runs", 2 - healthy)), "{report}");
    assert!(report.contains("## Emulator calibration") && report.contains("lateness p99 (µs)") && report.contains("ws-mux wan-50ms rep 0"), "{report}");
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(delivered_n(&summary), if healthy == 0 { vec![] } else { vec![healthy] }, "unhealthy runs are left out: {summary}");
    let again = tlab(&dir, &["report", "out", "--include-unhealthy"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(delivered_n(&std::fs::read_to_string(out.join("summary.csv")).unwrap()), [2], "--include-unhealthy keeps them");

    // Provenance: the binary's own commit (not the current directory's: there is none), build facts, host facts.
    let version = tlab(&dir, &["--version", "--verbose"]);
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let commit = version.split(['(', ' ', ')']).find(|w| w.len() == 40 && w.chars().all(|c| c.is_ascii_hexdigit())).expect(&version);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((manifest["git_commit"].as_str(), manifest["build"]["git_commit"].as_str()), (Some(commit), Some(commit)), "{manifest}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let known = Command::new("git").arg("-C").arg(repo).args(["cat-file", "-e", &format!("{commit}^{{commit}}")]).status().unwrap();
    assert!(known.success(), "{commit} is a commit of this repository");
    let build = &manifest["build"];
    assert!(build["rustc"].as_str().unwrap().starts_with("rustc ") && build["libraries"]["quinn"].is_string(), "{build}");
    assert!(version.contains(&format!("quinn: {}", build["libraries"]["quinn"].as_str().unwrap())), "{version}");
    let host = &manifest["host"];
    assert!(host["tcp_sysctls"]["net.ipv4.tcp_wmem"].as_str().unwrap().split(' ').count() == 3, "{host}");
    let device = host["devices"]["client"]["link"].as_str().unwrap();
    assert!(device.contains("mtu 1500") && device.contains("qlen 10000") && device.contains("tun type tun pi off"), "{device}");
    assert!(host["steal"].is_number(), "{host}");
    std::fs::remove_dir_all(&dir).unwrap();
}
