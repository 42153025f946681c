//! `tlab run` end to end through the emulator (needs root, as CI runs): a small suite, its results directory,
//! shards and merge, and suite errors reported before anything runs.

use std::path::Path;
use std::process::Command;

use tlab_results::{Distribution, Metric};

const SUITE: &str = r#"
name = "e2e"
seed = 5
repetitions = 2
transports = ["ws-mux", "quic"]
profiles = ["lossy-2"]
cell_timeout_s = 30

[[experiment]]
kind = "latency"
messages = 100
size = 128
rate_hz = 500

[[experiment]]
kind = "overhead"
sizes = [256]
messages = 50
"#;

fn tlab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlab")).args(args).env("RUST_LOG", "error").output().expect("run tlab")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_small_suite_runs_shards_and_merges_into_a_report() {
    let dir = std::env::temp_dir().join(format!("tlab-run-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite = dir.join("e2e.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let out = dir.join("all");
    let run = tlab(&["run", suite.to_str().unwrap(), "--no-calibration", "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let runs = lines(&out.join("runs.jsonl"));
    assert_eq!(runs.len(), 8, "2 experiments × 2 transports × 1 profile × 2 repetitions");
    for r in &runs {
        assert_eq!(r["status"], "ok", "{r}");
        if r["experiment"] == "latency" {
            assert_eq!(r["metrics"][Metric::Missing.name()], 0.0, "reliable transports lose nothing at 2 % loss: {r}");
            assert_eq!(r["metrics"][Metric::OrderViolations.name()], 0.0, "{r}");
            assert!(r["metrics"][Metric::OneWayP50.name()].as_f64().unwrap() >= 20_000.0, "one-way latency below the 20 ms delay: {r}");
            assert!(!r["histograms"][Distribution::OneWay.name()].as_array().unwrap().is_empty());
        } else {
            // One more message costs its payload and then some, in each direction.
            let size = r["params"]["sizes"][0].as_f64().unwrap();
            for metric in [Metric::MarginalUplinkPaced, Metric::MarginalDownlinkPaced, Metric::MarginalUplinkSaturated, Metric::MarginalDownlinkSaturated] {
                assert!(r["metrics"][metric.name()].as_f64().unwrap() > size, "{metric}: {r}");
            }
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["suite"], "e2e");
    assert_eq!(manifest["suite_text"], SUITE);
    assert_eq!(manifest["profiles"][0]["name"], "lossy-2");
    assert_eq!(manifest["emulator_backend"], "tun");
    assert_eq!((&manifest["status"], &manifest["planned_cells"], &manifest["completed_cells"]), (&"complete".into(), &8.into(), &8.into()));
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.starts_with("experiment,params,transport,profile,metric,mean,ci95,n,failed"));
    assert!(summary.lines().any(|l| l.contains(&format!(",quic,lossy-2,{},", Metric::OneWayP99)) && l.ends_with(",2,0")), "{summary}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Experiment: latency") && report.contains("plots/overhead.svg"), "{report}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("src=\""), "the HTML report must be self-contained");

    // Shards are disjoint and merge back into the whole matrix.
    let mut parts = Vec::new();
    for shard in ["1/2", "2/2"] {
        let part = dir.join(format!("shard{}", &shard[..1]));
        let run = tlab(&["run", suite.to_str().unwrap(), "--no-calibration", "--shard", shard, "--out", part.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        parts.push(part);
    }
    let merged = dir.join("merged");
    let merge = tlab(&["merge", "--out", merged.to_str().unwrap(), parts[0].to_str().unwrap(), parts[1].to_str().unwrap()]);
    assert!(merge.status.success(), "{}", String::from_utf8_lossy(&merge.stderr));
    let merged_runs = lines(&merged.join("runs.jsonl"));
    assert_eq!(merged_runs.len(), 8);
    let mut seeds: Vec<u64> = merged_runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    let mut whole: Vec<u64> = runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    seeds.sort();
    whole.sort();
    assert_eq!(seeds, whole, "the shards ran exactly the cells of the whole suite");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["parts"].as_array().unwrap().len(), 2);
    assert_eq!((&manifest["status"], &manifest["planned_cells"]), (&"complete".into(), &8.into()), "the shards' cells make the whole plan");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_suites_are_refused_before_anything_runs() {
    let dir = std::env::temp_dir().join(format!("tlab-run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let suite = dir.join("bad.toml");
    std::fs::write(&suite, SUITE.replace("\"quic\"]", "\"smoke-signals\"]")).unwrap();
    let out = tlab(&["run", suite.to_str().unwrap(), "--out", dir.join("never").to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("transports") && stderr.contains("smoke-signals"), "{stderr}");
    assert!(!dir.join("never").exists(), "nothing may run for a bad suite");
    for shipped in ["quick", "standard", "migration", "handshake", "seed-article"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../experiments/{shipped}.toml"));
        let check = tlab(&["check", path.to_str().unwrap()]);
        assert!(check.status.success(), "{shipped}: {}", String::from_utf8_lossy(&check.stderr));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
