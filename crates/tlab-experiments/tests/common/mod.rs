//! What the end-to-end tests of this crate share: running a suite given as text through the real runner.

use std::path::Path;
use std::sync::Arc;

use tlab_experiments::Suite;
use tlab_experiments::runner::{Interrupt, RunOptions, run_suite};
use tlab_results::{BuildInfo, RunRecord};

/// The seed from TLAB_SEED (printed), else `default`.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    println!("TLAB_SEED={seed}");
    seed
}

/// Runs `text` as a suite file of experiments/ (so its `profiles/…` paths resolve there) in a temporary directory
/// and returns its records. Needs root: the runner creates namespaces and the emulator.
pub fn run_inline(name: &str, text: &str) -> Vec<RunRecord> {
    assert!(nix::unistd::Uid::effective().is_root(), "the emulator needs root (CI runs as root)");
    let experiments = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let suite = Suite::parse(text, &experiments.join(format!("{name}.toml")), &tlab_transports::catalogue()).unwrap();
    let out = std::env::temp_dir().join(format!("tlab-{name}-{}", std::process::id()));
    let options = RunOptions {
        out: out.clone(),
        shard: None,
        transports: Arc::new(|name: &str| tlab_transports::by_name(name).ok()),
        interrupt: Arc::new(Interrupt::default()),
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: None,
            git_dirty: None,
            rustc: String::new(),
            target: String::new(),
            profile: "test".into(),
            libraries: Default::default(),
        },
    };
    let run = run_suite(&suite, &options).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    run.records
}
