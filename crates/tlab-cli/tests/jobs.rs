//! `tlab run --jobs N` (needs root, as CI runs): cells run side by side give the same cells, seeds and results as
//! one at a time, the directory keeps them in the planned order, and the manifest records the concurrency.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use support::{is_root, run_suite};

/// Six short cells whose counts do not depend on timing: reliable modes deliver every message exactly once.
const SUITE: &str = r#"
name = "jobs"
seed = 21
repetitions = 3
transports = ["ws", "quic"]
profiles = ["lossy-2"]
cell_timeout_s = 30

[[experiment]]
kind = "latency"
messages = 200
size = 128
rate_hz = 500
"#;

/// The metrics that must come out the same whatever runs beside a cell.
const EXACT: [&str; 5] = ["delivered", "missing", "duplicates", "link_loss", "link_delay_ms"];

/// Runs the suite with `--jobs jobs`: its directory, runs (in file order) and manifest.
fn run(jobs: &str) -> (PathBuf, Vec<serde_json::Value>, serde_json::Value) {
    let (dir, out) = run_suite(&format!("jobs{jobs}"), SUITE, &[], &["--jobs", jobs]);
    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let manifest = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    (dir, runs, manifest)
}

/// Each run's cell identity (with its seed) and its exact metrics, in file order.
fn cells(runs: &[serde_json::Value]) -> Vec<(String, BTreeMap<&'static str, f64>)> {
    runs.iter()
        .map(|r| {
            assert_eq!(r["status"], "ok", "{r}");
            let id = serde_json::json!([r["experiment"], r["params"], r["transport"], r["profile"], r["repetition"], r["seed"]]).to_string();
            (id, EXACT.iter().map(|m| (*m, r["metrics"][m].as_f64().unwrap_or_else(|| panic!("{m} in {r}")))).collect())
        })
        .collect()
}

#[test]
fn two_jobs_give_the_cells_seeds_and_results_of_one() {
    assert!(is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    let (serial_dir, serial, serial_manifest) = run("1");
    let (dir, parallel, manifest) = run("2");
    assert_eq!(serial.len(), 6);
    assert_eq!(cells(&parallel), cells(&serial), "same cells, same seeds, same counts, and in the planned order");
    let planned: Vec<serde_json::Value> = manifest["cells"].as_array().unwrap().iter().map(|c| c["seed"].clone()).collect();
    assert_eq!(parallel.iter().map(|r| r["seed"].clone()).collect::<Vec<_>>(), planned, "runs.jsonl is in the planned order");
    assert_eq!(manifest["status"], "complete");

    let concurrency = &manifest["parts"][0]["concurrency"];
    assert_eq!(concurrency["initial"], 2, "{concurrency}");
    assert_eq!(concurrency["peak"], 2, "two cells ran side by side: {concurrency}");
    assert!(concurrency["wall_s"].as_f64().unwrap() > 0.0 && concurrency["expected_s"].as_f64().unwrap() > 0.0, "{concurrency}");
    for change in concurrency["changes"].as_array().unwrap() {
        assert!(change["unhealthy"].is_object(), "a back-off names the cell it ran again: {change}");
    }
    assert_eq!(serial_manifest["parts"][0]["concurrency"]["peak"], 1);

    let summary = |dir: &PathBuf| std::fs::read_to_string(dir.join("results/summary.csv")).unwrap();
    // Everything but mean and ci95 (timing), n and failed: experiment, params, transport, profile, metric.
    let rows = |text: String| text.lines().map(|l| l.rsplitn(5, ',').nth(4).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(rows(summary(&dir)), rows(summary(&serial_dir)), "the same summary rows in the same order");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&serial_dir).unwrap();
}
