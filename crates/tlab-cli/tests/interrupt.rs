//! Interrupted `tlab run`s are kept (needs root, as CI runs): SIGINT stops after the current cell and leaves an
//! `interrupted` directory with its report, a second SIGTERM abandons the current cell, a SIGKILLed directory is
//! still reported (as incomplete), and `tlab run --resume` runs exactly the missing cells with the seeds a fresh run
//! uses — and refuses a changed suite file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Eight short cells (well under a second each).
const HANDSHAKES: &str = r#"
name = "interrupt"
seed = 11
repetitions = 4
transports = ["ws", "quic"]
profiles = ["lan"]
cell_timeout_s = 20

[[experiment]]
kind = "handshake"
"#;

/// Upper bound for anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(60);

fn tlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlab")).args(args).env("RUST_LOG", "error").output().expect("run tlab")
}

/// `tlab run` of `suite` into a fresh directory, waited for until it has recorded its first cell. Returns the
/// directory, the suite file, the results directory and the process.
fn started(name: &str, suite: &str) -> (PathBuf, PathBuf, PathBuf, Child) {
    let dir = std::env::temp_dir().join(format!("tlab-interrupt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let suite_path = dir.join("suite.toml");
    std::fs::write(&suite_path, suite).unwrap();
    let out = dir.join("out");
    // stderr goes to out.stderr.
    let stderr = File::create(out.with_extension("stderr")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["run", suite_path.to_str().unwrap(), "--no-calibration", "--out", out.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start tlab run");
    wait_for_first_cell(&mut child, &out);
    (dir, suite_path, out, child)
}

fn run_lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("runs.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the run has recorded at least one cell.
fn wait_for_first_cell(child: &mut Child, out: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while run_lines(out).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "tlab run ended early: {}", stderr_of(out));
        assert!(Instant::now() < deadline, "no cell finished: {}", stderr_of(out));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits for the child to exit (ending it by its pid if it does not) and returns its exit status.
fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tlab run did not exit after the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(out: &Path) -> String {
    std::fs::read_to_string(out.with_extension("stderr")).unwrap_or_default()
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

/// A cell's identity as a run records it.
fn identity(v: &serde_json::Value) -> String {
    serde_json::json!([v["experiment"], v["params"], v["transport"], v["profile"], v["repetition"], v["seed"]]).to_string()
}

/// The cells, with their seeds, that a fresh run of `suite_path` plans.
fn fresh_cells(suite_path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(suite_path).unwrap();
    let suite = tlab_experiments::Suite::parse(&text, suite_path, &tlab_transports::catalogue()).unwrap();
    let mut cells: Vec<String> =
        suite.cells.iter().map(|c| identity(&serde_json::to_value(tlab_experiments::runner::cell_id(c)).unwrap())).collect();
    cells.sort();
    cells
}

/// Resumes `out` and checks that it is now complete: every planned cell exactly once, with a fresh run's seed.
fn resume_completes(out: &Path, suite_path: &Path, before: usize) {
    let resumed = tlab(&["run", "--resume", out.to_str().unwrap(), "--no-calibration"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    let planned = fresh_cells(suite_path);
    assert!(stderr.contains(&format!("{} of {} cells missing", planned.len() - before, planned.len())), "{stderr}");
    let mut ran: Vec<String> = run_lines(out).iter().map(identity).collect();
    ran.sort();
    assert_eq!(ran, planned, "the runs are the planned cells, each once, with the seeds of a fresh run");
    let manifest = manifest(out);
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["completed_cells"], planned.len());
    assert_eq!(manifest["missing_cells"].as_array().unwrap().len(), 0);
    let parts = manifest["parts"].as_array().unwrap();
    assert_eq!((parts.len(), parts[0]["runs"].as_u64().unwrap() as usize), (2, before));
    assert_eq!(parts[1]["runs"].as_u64().unwrap() as usize, planned.len() - before);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!report.contains("incomplete"), "{report}");
}

#[test]
fn sigint_keeps_an_interrupted_run_that_resume_completes() {
    let (dir, suite_path, out, mut child) = started("sigint", HANDSHAKES);
    let running = manifest(&out);
    assert_eq!((&running["status"], &running["planned_cells"]), (&"running".into(), &8.into()), "{running}");
    signal(&child, "INT");
    let status = wait(&mut child);
    let stderr = stderr_of(&out);
    assert!(!status.success(), "an interrupted run fails: {stderr}");
    assert!(stderr.contains("interrupted:") && stderr.contains(&format!("tlab run --resume {}", out.display())), "{stderr}");

    let manifest = manifest(&out);
    let ran = run_lines(&out).len();
    assert_eq!(manifest["status"], "interrupted", "{manifest}");
    assert!((1..8).contains(&ran), "the current cell finishes, the rest do not run: {ran} of 8");
    assert_eq!(manifest["completed_cells"], ran);
    assert_eq!(manifest["missing_cells"].as_array().unwrap().len(), 8 - ran);
    assert_eq!(manifest["cells"].as_array().unwrap().len(), 8);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("incomplete: {ran} of 8 cells")) && report.contains("interrupted"), "{report}");
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.lines().any(|l| l.contains(",ws,lan,handshake_ms,")), "{summary}");

    // A changed suite file is refused and nothing runs.
    std::fs::write(&suite_path, HANDSHAKES.replace("repetitions = 4", "repetitions = 5")).unwrap();
    let refused = tlab(&["run", "--resume", out.to_str().unwrap(), "--no-calibration"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("SHA-256") && stderr.contains("suite.toml") && stderr.contains("mix two suites"), "{stderr}");
    assert_eq!(run_lines(&out).len(), ran);

    std::fs::write(&suite_path, HANDSHAKES).unwrap();
    resume_completes(&out, &suite_path, ran);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_run_is_reported_incomplete_and_resumed() {
    let (dir, suite_path, out, mut child) = started("sigkill", HANDSHAKES);
    signal(&child, "KILL");
    wait(&mut child);
    assert_eq!(manifest(&out)["status"], "running", "nothing ran after the kill to update the manifest");
    let ran = run_lines(&out).len();

    let report = tlab(&["report", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert!(report.status.success(), "{stderr}");
    let headline = format!("incomplete: {ran} of 8 cells");
    assert!(stderr.contains(&headline) && stderr.contains("killed"), "{stderr}");
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.lines().take(5).any(|l| l.contains(&headline)), "the report says so at the top: {markdown}");

    resume_completes(&out, &suite_path, ran);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_signal_abandons_the_current_cell() {
    // Cells of about three seconds, one at a time, so the second signal lands inside the second cell.
    let suite = r#"
name = "abandon"
seed = 12
repetitions = 3
transports = ["ws"]
profiles = ["lan"]
cell_timeout_s = 30
concurrency = 1

[[experiment]]
kind = "latency"
messages = 1500
size = 64
rate_hz = 500
"#;
    let (dir, _, out, mut child) = started("abandon", suite);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    let status = wait(&mut child);
    let stderr = stderr_of(&out);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("SIGTERM: abandoning the current cell") && stderr.contains("abandoned"), "{stderr}");
    let manifest = manifest(&out);
    assert_eq!(manifest["status"], "interrupted");
    assert_eq!(run_lines(&out).len(), 1, "the abandoned cell is not recorded");
    let missing: Vec<u64> = manifest["missing_cells"].as_array().unwrap().iter().map(|c| c["repetition"].as_u64().unwrap()).collect();
    assert_eq!(missing, [1, 2], "the abandoned cell stays missing");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("incomplete: 1 of 3 cells"));
    std::fs::remove_dir_all(&dir).unwrap();
}
