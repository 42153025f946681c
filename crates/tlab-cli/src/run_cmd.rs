//! `tlab run`, `tlab run --resume`, `tlab report`, `tlab merge`: suites through the emulator into a results
//! directory and its report. SIGINT or SIGTERM stops a run after the current cell (a second one abandons the cell),
//! marks the directory interrupted, writes its report and exits non-zero; `--resume` runs what is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tlab_experiments::Suite;
use tlab_experiments::runner::{Interrupt, RunOptions, Stop, SuiteRun, TransportFactory, resume_suite, run_suite};
use tlab_results::{Manifest, ManifestStatus};

fn factory() -> TransportFactory {
    Arc::new(|name: &str| tlab_transports::by_name(name).ok())
}

/// Expands transport names and groups (`all`, `reliable`, …) the way a suite's `transports` does.
pub fn resolve_transports(list: &[String]) -> anyhow::Result<Vec<String>> {
    tlab_experiments::suite::resolve_transports(list, &tlab_transports::catalogue()).context("--transports")
}

/// `results/<suite>-<UTC timestamp>`.
fn default_out(suite: &str) -> PathBuf {
    PathBuf::from(format!("results/{suite}-{}", crate::utc_stamp()))
}

/// Loads a suite, reporting every problem before anything runs.
pub fn load_suite(path: &Path) -> anyhow::Result<Suite> {
    Ok(Suite::load(path, &tlab_transports::catalogue())?)
}

/// Runs a suite (or one shard), optionally calibrates the emulator, writes the report; returns the directory.
/// `capture` captures every run as the suite setting `capture = true` does; `jobs` overrides the suite's
/// `concurrency`.
pub fn run(path: &Path, shard: Option<&str>, out: Option<PathBuf>, calibrate: bool, capture: bool, jobs: Option<usize>) -> anyhow::Result<PathBuf> {
    let mut suite = load_suite(path)?;
    suite.capture |= capture;
    suite.concurrency = jobs.or(suite.concurrency);
    let shard = shard.map(tlab_experiments::suite::parse_shard).transpose().map_err(anyhow::Error::msg)?;
    let out = out.unwrap_or_else(|| match shard {
        Some((i, n)) => PathBuf::from(format!("{}-shard{i}of{n}", default_out(&suite.name).display())),
        None => default_out(&suite.name),
    });
    let cells = shard.map_or(suite.cells.len(), |(i, n)| suite.shard(i, n).len());
    eprintln!("suite {} ({}): {cells} runs → {}", suite.name, suite.file, out.display());
    let options = RunOptions { out: out.clone(), shard, transports: factory(), interrupt: catch_signals()?, build: crate::version::build_info() };
    let finished = run_suite(&suite, &options)?;
    finish(&suite, &out, &finished, calibrate)?;
    Ok(out)
}

/// `tlab run --resume DIR`: runs the cells `dir` is missing with the seeds they were planned with. `suite` defaults
/// to the manifest's `suite_file`; either way its SHA-256 must match the manifest's. `jobs` overrides the suite's
/// `concurrency`.
pub fn resume(dir: &Path, suite: Option<&Path>, calibrate: bool, jobs: Option<usize>) -> anyhow::Result<PathBuf> {
    let manifest = tlab_report::read_manifest(dir)
        .with_context(|| format!("{} cannot be resumed without its manifest (the planned cells are unknown)", dir.display()))?;
    if manifest.status == ManifestStatus::Running
        && let Some(pid) = manifest.parts.last().and_then(tlab_report::running_pid)
    {
        anyhow::bail!("{} is still being written by tlab run (pid {pid})", dir.display());
    }
    let suite_path = suite.map_or_else(|| PathBuf::from(&manifest.suite_file), Path::to_path_buf);
    let mut suite = load_suite(&suite_path).with_context(|| format!("loading the suite of {} to resume it", dir.display()))?;
    suite.concurrency = jobs.or(suite.concurrency);
    let done = tlab_report::read_runs(dir)?;
    let missing = tlab_results::missing_cells(&manifest.cells, &done).len();
    eprintln!("resuming {}: {missing} of {} cells missing ({})", dir.display(), manifest.cells.len(), suite.file);
    let options = RunOptions { out: dir.to_path_buf(), shard: None, transports: factory(), interrupt: catch_signals()?, build: crate::version::build_info() };
    let finished = resume_suite(&suite, &options, manifest, done)?;
    finish(&suite, dir, &finished, calibrate)?;
    Ok(dir.to_path_buf())
}

/// Reports a finished or interrupted run; an interrupted one is an error that says how to resume.
fn finish(suite: &Suite, out: &Path, finished: &SuiteRun, calibrate: bool) -> anyhow::Result<()> {
    let failed = finished.records.iter().filter(|r| r.status != tlab_results::RunStatus::Ok).count();
    let complete = finished.manifest.status == ManifestStatus::Complete;
    if complete && calibrate {
        eprintln!("calibrating the emulator (tlab netem selftest) …");
        let calibration = tlab_netem::selftest::run(suite.seed, |step| eprintln!("  {step}"))?;
        std::fs::write(out.join("calibration.json"), serde_json::to_string_pretty(&calibration)?)?;
    }
    report(out, false)?;
    if let Some(c) = finished.manifest.parts.last().and_then(|p| p.concurrency.as_ref())
        && let Some(wall_s) = c.wall_s
    {
        let backed_off = if c.changes.is_empty() { String::new() } else { format!(", {} changes of it (manifest.json)", c.changes.len()) };
        eprintln!(
            "cells took {:.1} min, expected {:.1} min ({:+.0} %); {} at a time at the start, {} at the end{backed_off}",
            wall_s / 60.0,
            c.expected_s / 60.0,
            (wall_s / c.expected_s - 1.0) * 100.0,
            c.initial,
            c.last
        );
    }
    eprintln!("{} runs, {failed} failed or timed out; results in {}", finished.records.len(), out.display());
    anyhow::ensure!(
        complete,
        "interrupted: {} of {} cells ran; manifest.json lists the missing ones; resume with: tlab run --resume {}",
        finished.manifest.completed_cells,
        finished.manifest.planned_cells,
        out.display()
    );
    Ok(())
}

/// Turns SIGINT and SIGTERM into an [`Interrupt`]: the first stops after the current cell, the second abandons it,
/// a third exits at once. Needs the tokio runtime (a `spawn_blocking` thread has it).
fn catch_signals() -> anyhow::Result<Arc<Interrupt>> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Handle::try_current().context("catching signals needs the tokio runtime")?;
    let _entered = runtime.enter();
    let (mut int, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    let interrupt = Arc::new(Interrupt::default());
    let raised = interrupt.clone();
    runtime.spawn(async move {
        for _ in 0..3 {
            let name = tokio::select! {
                Some(()) = int.recv() => "SIGINT",
                Some(()) = term.recv() => "SIGTERM",
                else => return,
            };
            if raised.state() == Stop::Now {
                eprintln!("\n{name} again: exiting without writing the report");
                // Exiting skips destructors: put the host's allowed congestion controls back first.
                tlab_experiments::stack::restore_host_settings();
                std::process::exit(130);
            }
            match raised.raise() {
                Stop::AfterCell => eprintln!("\n{name}: stopping after the current cell (send it again to abandon the cell)"),
                _ => eprintln!("\n{name}: abandoning the current cell"),
            }
        }
    });
    Ok(interrupt)
}

/// (Re)writes summary.csv, plots and reports of a results directory from its raw files.
/// `include_unhealthy` keeps runs whose link missed its tolerance in the summaries.
pub fn report(dir: &Path, include_unhealthy: bool) -> anyhow::Result<()> {
    let options = tlab_report::Options { include_unhealthy };
    let written = tlab_report::write_with(dir, &options).with_context(|| format!("writing the report of {}", dir.display()))?;
    eprintln!("report: {} and {} ({} plots)", written.markdown.display(), written.html.display(), written.plots.len());
    if let Some(headline) = written.completeness.headline(&dir.display().to_string()) {
        eprintln!("{headline}");
    }
    Ok(())
}

/// Combines shard directories of one suite into `out` (runs concatenated, manifest listing every part).
pub fn merge(out: &Path, parts: &[PathBuf]) -> anyhow::Result<()> {
    anyhow::ensure!(!parts.is_empty(), "nothing to merge");
    let mut manifest: Option<Manifest> = None;
    let mut records = Vec::new();
    for dir in parts {
        let part = tlab_report::read_manifest(dir)?;
        match &mut manifest {
            None => manifest = Some(part),
            Some(m) => {
                anyhow::ensure!(
                    m.suite_sha256 == part.suite_sha256,
                    "{} ran a different suite file (SHA-256 {} vs {})",
                    dir.display(),
                    part.suite_sha256,
                    m.suite_sha256
                );
                if m.git_commit != part.git_commit {
                    eprintln!("warning: {} was produced by commit {:?}, others by {:?}", dir.display(), part.git_commit, m.git_commit);
                }
                m.parts.extend(part.parts);
                m.cells.extend(part.cells);
            }
        }
        // Validate every line before copying it.
        records.extend(tlab_report::read_runs(dir)?);
    }
    let mut manifest = manifest.expect("at least one part");
    // Merged parts that were interrupted or killed leave the merged directory interrupted.
    manifest.account(&records, ManifestStatus::Interrupted);
    let mut runs = String::new();
    for record in &records {
        runs.push_str(&serde_json::to_string(record)?);
        runs.push('\n');
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    std::fs::write(out.join("runs.jsonl"), runs)?;
    report(out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlab_core::Requirement;

    fn shipped(name: &str) -> Suite {
        load_suite(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments").join(name)).unwrap()
    }

    /// The transports of the cells of experiment kind `kind`, each once, in run order.
    fn transports_of(suite: &Suite, kind: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for cell in suite.cells.iter().filter(|c| c.spec.kind() == kind) {
            if !seen.contains(&cell.transport) {
                seen.push(cell.transport.clone());
            }
        }
        seen
    }

    #[test]
    fn shipped_reliable_groups_are_every_reliable_mode() {
        // These experiments echo, so suite expansion keeps the reliable modes that can send both ways.
        let reliable: Vec<String> = tlab_transports::select(Requirement::Reliable)
            .iter()
            .filter(|t| t.capabilities().satisfies(Requirement::Bidirectional))
            .map(|t| t.name().to_string())
            .collect();
        assert!(!reliable.contains(&"wt-datagram".to_string()), "{reliable:?}");
        assert!(!reliable.contains(&"grpc-web".to_string()), "{reliable:?}");
        for (suite, kind) in [("quick.toml", "hol"), ("standard.toml", "hol"), ("migration.toml", "migration"), ("seed-article.toml", "hol")] {
            assert_eq!(transports_of(&shipped(suite), kind), reliable, "{suite} {kind}");
        }
        assert_eq!(transports_of(&shipped("quick.toml"), "latency"), tlab_transports::names());
    }

    #[test]
    fn cli_transport_lists_expand_like_suites() {
        let list = |s: &[&str]| resolve_transports(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["datagram"]).unwrap(), ["wt-datagram"]);
        assert_eq!(list(&["quic", "ws"]).unwrap(), ["ws", "quic"]);
        let err = format!("{:#}", list(&["carrier-pigeon"]).unwrap_err());
        assert!(err.contains("--transports") && err.contains("`carrier-pigeon`"), "{err}");
    }
}
