//! `tlab-report` turns a results directory into what a reader cites: `summary.csv` (mean ± 95 % CI per cell and
//! metric), `report.md`, a self-contained `report.html` and `plots/*.svg` — latency CDFs, p99 latency vs loss, HOL
//! penalty, migration timelines, handshake times, wire overhead, datagram delivery, outage recovery. It reads files
//! only (`manifest.json`, `runs.jsonl`, optional `calibration.json`), so every figure can be regenerated from the
//! raw results alone.

mod document;
mod figures;
pub mod svg;

use std::path::{Path, PathBuf};

use tlab_results::{Manifest, RunRecord};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_owned(), source }
}

/// Reads `runs.jsonl` of a results directory.
pub fn read_runs(dir: &Path) -> Result<Vec<RunRecord>, ReportError> {
    let path = dir.join("runs.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| ReportError::Format { path: path.clone(), line: i + 1, message: e.to_string() })
        })
        .collect()
}

/// Reads `manifest.json` of a results directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ReportError> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| ReportError::Format { path, line: 0, message: e.to_string() })
}

/// Writes `summary.csv`, `plots/`, `report.md` and `report.html` into `dir` from its raw results.
pub fn write(dir: &Path) -> Result<Written, ReportError> {
    let manifest = read_manifest(dir)?;
    let mut runs = read_runs(dir)?;
    figures::derive_metrics(&mut runs);
    let calibration = std::fs::read_to_string(dir.join("calibration.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let summary = tlab_results::summarize(&runs);
    let summary_path = dir.join("summary.csv");
    std::fs::write(&summary_path, figures::summary_csv(&summary)).map_err(io(&summary_path))?;
    let document = figures::document(&manifest, &runs, &summary, calibration.as_ref());
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
    Ok(Written { markdown, html, plots, summary: summary_path })
}
