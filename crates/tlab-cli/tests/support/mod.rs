//! What the suite-running end-to-end tests share: the root check and `tlab run` on a suite written to a fresh
//! directory.

use std::path::PathBuf;
use std::process::Command;

/// Whether this process runs as root (the emulator's namespaces need it; CI runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Writes `suite.toml` and `files` (name, text) into a fresh temporary directory named after `name`, runs
/// `tlab run suite.toml --out <dir>/results --no-calibration <args>`, asserts that it succeeded and returns the
/// directory and the results directory inside it.
pub fn run_suite(name: &str, suite: &str, files: &[(&str, &str)], args: &[&str]) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tlab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("suite.toml"), suite).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let out = dir.join("results");
    let run = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .arg("run")
        .arg(dir.join("suite.toml"))
        .arg("--out")
        .arg(&out)
        .arg("--no-calibration")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tlab");
    assert!(run.status.success(), "tlab run: {}", String::from_utf8_lossy(&run.stderr));
    (dir, out)
}
