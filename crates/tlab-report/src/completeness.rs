//! How much of its planned matrix a results directory holds, and why the rest is missing.

use tlab_results::{Manifest, ManifestStatus, RunRecord, missing_cells};

/// Whether a results directory holds every planned cell (computed from `runs.jsonl`, which is written before the
/// manifest is updated, so a run killed between the two is counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completeness {
    /// Planned cells with a run (without a manifest: the runs in `runs.jsonl`).
    pub ran: usize,
    /// Planned cells; `None` when the manifest is missing.
    pub planned: Option<usize>,
    /// Why cells are missing; `None` when the directory is complete.
    pub gap: Option<Gap>,
}

/// Why a results directory is incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// Stopped by SIGINT or SIGTERM; the manifest lists the missing cells.
    Interrupted,
    /// The manifest says running and that `tlab run` process is still alive on this host.
    StillRunning {
        /// Its process id.
        pid: u32,
    },
    /// The manifest says running but its process is gone (killed, e.g. by SIGKILL or a crash).
    Killed,
    /// There is no `manifest.json`: the planned matrix is unknown; the report is reconstructed from `runs.jsonl`.
    NoManifest,
    /// The manifest says complete but planned cells have no run in `runs.jsonl`.
    RunsMissing,
}

impl Completeness {
    /// Compares the manifest's planned cells with the runs recorded.
    pub fn of(manifest: Option<&Manifest>, runs: &[RunRecord]) -> Self {
        let Some(manifest) = manifest else {
            return Self { ran: runs.len(), planned: None, gap: Some(Gap::NoManifest) };
        };
        let missing = missing_cells(&manifest.cells, runs).len();
        let planned = manifest.cells.len();
        let gap = match manifest.status {
            ManifestStatus::Interrupted => Some(Gap::Interrupted),
            ManifestStatus::Running => Some(match manifest.parts.last().and_then(running_pid) {
                Some(pid) => Gap::StillRunning { pid },
                None => Gap::Killed,
            }),
            ManifestStatus::Complete if missing > 0 => Some(Gap::RunsMissing),
            ManifestStatus::Complete => None,
        };
        Self { ran: planned - missing, planned: Some(planned), gap }
    }

    /// `incomplete: N of M cells — why`, or `None` when complete; `dir` is the directory as the reader names it.
    pub fn headline(&self, dir: &str) -> Option<String> {
        let gap = self.gap.as_ref()?;
        let count = match self.planned {
            Some(planned) => format!("{} of {planned} cells", self.ran),
            None => format!("{} cells ran, the number planned is unknown", self.ran),
        };
        let why = match gap {
            Gap::Interrupted => format!("the run was interrupted; `tlab run --resume {dir}` runs the missing cells"),
            Gap::StillRunning { pid } => format!("tlab run (pid {pid}) is still writing this directory"),
            Gap::Killed => format!("the run was killed (the manifest says running, its process is gone); `tlab run --resume {dir}` runs the missing cells"),
            Gap::NoManifest => "manifest.json is missing; this report is reconstructed from runs.jsonl".to_string(),
            Gap::RunsMissing => "runs.jsonl lacks runs the manifest planned".to_string(),
        };
        Some(format!("incomplete: {count} — {why}"))
    }
}

/// The pid of `part` when it names a live `tlab` process on this host.
pub fn running_pid(part: &tlab_results::ManifestPart) -> Option<u32> {
    let pid = part.pid?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    // The command name guards against a reused pid.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (host.trim() == part.host && comm.trim() == "tlab").then_some(pid)
}
