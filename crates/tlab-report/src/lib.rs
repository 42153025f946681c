//! `tlab-report` turns a results directory into what a reader cites: `summary.csv` (mean ± 95 % CI per cell and
//! metric), `report.md`, a self-contained `report.html` and `plots/*.svg` — latency CDFs, p99 latency vs loss, HOL
//! penalty, migration timelines, handshake times, wire overhead, datagram delivery, outage recovery. It reads files
//! only (`manifest.json`, `runs.jsonl`, optional `calibration.json`), so every figure can be regenerated from the
//! raw results alone. A directory a run did not finish (interrupted, killed, or without a manifest) is reported
//! too, with its [`Completeness`] at the top. Runs whose link missed its tolerance (`link_ok: false`) are flagged
//! and, unless [`Options::include_unhealthy`], left out of the summaries and figures.

mod completeness;
mod document;
mod figures;
mod health;
pub mod svg;

use std::path::{Path, PathBuf};

use tlab_results::{Manifest, RunRecord};

pub use completeness::{Completeness, Gap, running_pid};
pub use document::{Block, Document};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A results file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A results file is not what tlab writes.
    #[error("{path}:{line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 for whole-file documents).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The files a report consists of.
#[derive(Debug)]
pub struct Written {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `plots/*.svg`.
    pub plots: Vec<PathBuf>,
    /// `summary.csv`.
    pub summary: PathBuf,
    /// How much of the planned matrix the directory holds.
    pub completeness: Completeness,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_owned(), source }
}

/// Reads `runs.jsonl` of a results directory. A last line without its newline is a write cut short by a killed
/// run and is skipped when it does not parse; any other bad line is an error.
pub fn read_runs(dir: &Path) -> Result<Vec<RunRecord>, ReportError> {
    let path = dir.join("runs.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let cut_short = if text.ends_with('\n') { None } else { text.lines().count().checked_sub(1) };
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(run) => runs.push(run),
            Err(_) if Some(i) == cut_short => {}
            Err(e) => return Err(ReportError::Format { path: path.clone(), line: i + 1, message: e.to_string() }),
        }
    }
    Ok(runs)
}

/// Reads `manifest.json` of a results directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ReportError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| ReportError::Format { path, line: 0, message: e.to_string() })
}

/// What a report keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep runs whose link missed its tolerance in the summaries and figures (they are flagged either way).
    pub include_unhealthy: bool,
}

/// [`write_with`] the default [`Options`].
pub fn write(dir: &Path) -> Result<Written, ReportError> {
    write_with(dir, &Options::default())
}

/// Writes `summary.csv`, `plots/`, `report.md` and `report.html` into `dir` from its raw results; without a
/// `manifest.json`, from `runs.jsonl` alone.
pub fn write_with(dir: &Path, options: &Options) -> Result<Written, ReportError> {
    let manifest = match read_manifest(dir) {
        Ok(manifest) => Some(manifest),
        Err(ReportError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let runs = read_runs(dir)?;
    let completeness = Completeness::of(manifest.as_ref(), &runs);
    let calibration = std::fs::read_to_string(dir.join("calibration.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let included: Vec<RunRecord> = runs.iter().filter(|r| options.include_unhealthy || r.link_ok()).cloned().collect();
    let summary = tlab_results::summarize(&included);
    let summary_path = dir.join("summary.csv");
    std::fs::write(&summary_path, figures::summary_csv(&summary)).map_err(io(&summary_path))?;
    let calibration = health::calibration(&runs, calibration.as_ref());
    let mut document = figures::document(&dir.display().to_string(), manifest.as_ref(), &completeness, &included, &summary, calibration);
    if let Some(flag) = health::flag(&runs, options.include_unhealthy) {
        // Before the first section, after the title, the completeness headline and the run's facts.
        let first_section = document.blocks.iter().position(|b| matches!(b, Block::Heading(2, _))).unwrap_or(document.blocks.len());
        document.blocks.insert(first_section, flag);
    }
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir).map_err(io(&plots_dir))?;
    let mut plots = Vec::new();
    for (name, svg) in document.plots() {
        let path = plots_dir.join(name);
        std::fs::write(&path, svg).map_err(io(&path))?;
        plots.push(path);
    }
    let markdown = dir.join("report.md");
    std::fs::write(&markdown, document.to_markdown()).map_err(io(&markdown))?;
    let html = dir.join("report.html");
    std::fs::write(&html, document.to_html()).map_err(io(&html))?;
    Ok(Written { markdown, html, plots, summary: summary_path, completeness })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(repetition: u32) -> serde_json::Value {
        serde_json::json!({"suite": "s", "experiment": "handshake", "params": {}, "transport": "ws", "profile": "lan",
            "repetition": repetition, "seed": 100 + repetition, "status": "ok", "duration_s": 1.0,
            "metrics": {"handshake_ms": 2.0 + f64::from(repetition)}})
    }

    /// A results directory with `ran` of 3 planned runs and a manifest of `status` whose part has `pid`.
    fn directory(name: &str, status: &str, pid: u32, ran: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tlab-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cell = |r: u32| serde_json::json!({"experiment": "handshake", "params": {}, "transport": "ws", "profile": "lan", "repetition": r, "seed": 100 + r});
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let manifest = serde_json::json!({"tlab_version": "0", "git_commit": null, "git_dirty": null, "suite": "s",
            "suite_file": "s.toml", "suite_sha256": "00", "suite_text": "", "profiles": [], "seed": 1, "kernel": "Linux",
            "cpu_model": "x", "cores": 2, "emulator_backend": "tun", "congestion_control": "cubic",
            "parts": [{"shard": "all", "host": host.trim(), "started_utc": "t", "runs": ran, "pid": pid}],
            "status": status, "planned_cells": 3, "cells": [cell(0), cell(1), cell(2)], "completed_cells": ran, "missing_cells": []});
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let runs: String = (0..ran).map(|r| format!("{}\n", run(r))).collect();
        std::fs::write(dir.join("runs.jsonl"), runs).unwrap();
        dir
    }

    #[test]
    fn a_killed_run_is_reported_as_incomplete() {
        // Our own pid is alive but is not a `tlab` process: the run that wrote "running" is gone.
        let dir = directory("killed", "running", std::process::id(), 2);
        // A line cut short by the kill is skipped.
        let mut runs = std::fs::read_to_string(dir.join("runs.jsonl")).unwrap();
        runs.push_str(&run(2).to_string()[..40]);
        std::fs::write(dir.join("runs.jsonl"), runs).unwrap();
        let written = write(&dir).unwrap();
        assert_eq!(written.completeness, Completeness { ran: 2, planned: Some(3), gap: Some(Gap::Killed) });
        let report = std::fs::read_to_string(&written.markdown).unwrap();
        let headline = report.lines().find(|l| !l.is_empty() && !l.starts_with('#')).unwrap();
        assert!(headline.contains("incomplete: 2 of 3 cells") && headline.contains("killed") && headline.contains("--resume"), "{report}");
        assert!(std::fs::read_to_string(&written.html).unwrap().contains("incomplete: 2 of 3 cells"));
        assert!(std::fs::read_to_string(&written.summary).unwrap().contains(",ws,lan,handshake_ms,2.5,"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interrupted_complete_and_manifestless_directories() {
        let dir = directory("interrupted", "interrupted", 1, 1);
        assert_eq!(write(&dir).unwrap().completeness.gap, Some(Gap::Interrupted));
        std::fs::remove_dir_all(&dir).unwrap();

        let dir = directory("complete", "complete", 1, 3);
        let written = write(&dir).unwrap();
        assert_eq!(written.completeness, Completeness { ran: 3, planned: Some(3), gap: None });
        assert!(!std::fs::read_to_string(&written.markdown).unwrap().contains("incomplete"));

        std::fs::remove_file(dir.join("manifest.json")).unwrap();
        let written = write(&dir).unwrap();
        assert_eq!(written.completeness, Completeness { ran: 3, planned: None, gap: Some(Gap::NoManifest) });
        let report = std::fs::read_to_string(&written.markdown).unwrap();
        assert!(report.contains("# transport-lab report: s") && report.contains("incomplete: 3 cells ran") && report.contains("handshake"), "{report}");
        assert!(!dir.join("manifest.json").exists(), "the report does not invent a manifest");

        std::fs::write(dir.join("runs.jsonl"), format!("{}\nnot json\n{}\n", run(0), run(1))).unwrap();
        let err = write(&dir).unwrap_err().to_string();
        assert!(err.contains("runs.jsonl:2:"), "a bad line inside the file is still an error: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
