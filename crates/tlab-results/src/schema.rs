//! The records of a results directory (see docs/RESULTS.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::LatencyHistogram;
use crate::stack::StackInfo;
use crate::metrics::{Distribution, Metric};
use crate::provenance::{BuildInfo, HostInfo, LinkHealth};
use crate::stats::MeanCi;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Completed; its metrics are valid.
    Ok,
    /// Failed with an error (recorded); the suite went on.
    Failed,
    /// Exceeded the per-cell timeout (recorded); the suite went on.
    Timeout,
}

/// One line of `runs.jsonl`: one repetition of one cell of the suite's matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Suite name.
    pub suite: String,
    /// Experiment kind (latency, hol, ordering, migration, handshake, overhead, outage).
    pub experiment: String,
    /// Experiment parameters of this cell (streams, size, rate…).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Transport mode.
    pub transport: String,
    /// Who ran the client side: `native` (our client crates) or `chromium` (the browser's own APIs); older files
    /// without the field are native.
    #[serde(default = "native")]
    pub client: String,
    /// Link profile name.
    pub profile: String,
    /// Repetition index, from 0.
    pub repetition: u32,
    /// The seed this repetition ran with (derived from the suite seed).
    pub seed: u64,
    /// How it ended.
    pub status: RunStatus,
    /// The error, for failed and timed-out runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// Scalar metrics by [`Metric`] name (read and written with [`RunRecord::get`] and [`RunRecord::set`]; a name
    /// this version does not describe is kept as it is).
    pub metrics: BTreeMap<String, f64>,
    /// Raw latency histograms by [`Distribution`] name (µs buckets), from which every latency figure is recomputed.
    #[serde(default)]
    pub histograms: BTreeMap<String, LatencyHistogram>,
    /// Time series by name, e.g. message arrivals around a migration: `(t_ms, value)` points.
    #[serde(default)]
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    /// The run's per-message file, relative to the results directory (`messages/<run>.csv.gz`), when it kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    /// The link's drop log of the run, relative to the results directory (`drops/<run>.csv.gz`), when the emulator
    /// provided one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops: Option<String>,
    /// What the client's and the server's stacks ran with (congestion control read back, pacing, windows); absent
    /// when the cell failed before its link was set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackInfo>,
    /// How well the link kept its schedule during the run (absent for runs without one and in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkHealth>,
    /// The run's packet capture, key log and qlog traces, when it was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<crate::CaptureRecord>,
}

impl RunRecord {
    /// A run of `cell` in `suite` with status ok and nothing measured yet.
    pub fn new(suite: String, cell: CellId) -> Self {
        let CellId { experiment, params, transport, profile, repetition, seed } = cell;
        Self {
            suite,
            experiment,
            params,
            transport,
            client: native(),
            profile,
            repetition,
            seed,
            status: RunStatus::Ok,
            error: None,
            duration_s: 0.0,
            metrics: BTreeMap::new(),
            histograms: BTreeMap::new(),
            series: BTreeMap::new(),
            messages: None,
            drops: None,
            stack: None,
            link: None,
            capture: None,
        }
    }

    /// False only when the run's link was measured and missed its tolerance.
    pub fn link_ok(&self) -> bool {
        self.link.as_ref().is_none_or(|l| l.link_ok)
    }

    /// The value of `metric`, if the run recorded it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics.get(metric.name()).copied()
    }

    /// Records `value` for `metric`.
    pub fn set(&mut self, metric: Metric, value: f64) {
        self.metrics.insert(metric.name().to_string(), value);
    }

    /// The distribution `which`, if the run recorded it.
    pub fn histogram(&self, which: Distribution) -> Option<&LatencyHistogram> {
        self.histograms.get(which.name())
    }

    /// The file name (without extension) of this run's per-run files: experiment, transport, profile, repetition
    /// and seed, unique within a results directory and safe as a file name.
    pub fn file_stem(&self) -> String {
        let profile = self.profile.rsplit('/').next().unwrap_or(&self.profile).trim_end_matches(".toml");
        let raw = format!("{}-{}-{}-r{}-{:016x}", self.experiment, self.transport, profile, self.repetition, self.seed);
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
    }

    /// The cell this run belongs to: everything but the repetition and seed. Its transport is the mode, labelled
    /// `<mode> (<client>)` for a client other than the native one, so that browser runs are cells of their own.
    pub fn cell_key(&self) -> (String, String, String, String) {
        let params = serde_json::to_string(&self.params).expect("params serialize");
        let transport = if self.client == native() { self.transport.clone() } else { format!("{} ({})", self.transport, self.client) };
        (self.experiment.clone(), params, transport, self.profile.clone())
    }

    /// The planned cell this run is: its identity including repetition and seed.
    pub fn cell_id(&self) -> CellId {
        CellId {
            experiment: self.experiment.clone(),
            params: self.params.clone(),
            transport: self.transport.clone(),
            profile: self.profile.clone(),
            repetition: self.repetition,
            seed: self.seed,
        }
    }
}

fn native() -> String {
    "native".into()
}

/// The identity of one planned cell of a suite's matrix (one repetition: one line of `runs.jsonl` once it ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellId {
    /// Experiment kind.
    pub experiment: String,
    /// Experiment parameters.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Transport mode.
    pub transport: String,
    /// Link profile name.
    pub profile: String,
    /// Repetition index, from 0.
    pub repetition: u32,
    /// The seed it runs with (derived from the suite seed and the rest of the identity).
    pub seed: u64,
}

/// The positions in `planned` of the cells no run in `runs` accounts for. Each run accounts for one planned cell
/// with its identity, so a cell planned twice needs two runs and a run recorded twice counts once.
pub fn missing_cells(planned: &[CellId], runs: &[RunRecord]) -> Vec<usize> {
    let mut ran: Vec<CellId> = runs.iter().map(RunRecord::cell_id).collect();
    planned
        .iter()
        .enumerate()
        .filter(|(_, cell)| match ran.iter().position(|r| r == *cell) {
            Some(i) => {
                ran.swap_remove(i);
                false
            }
            None => true,
        })
        .map(|(i, _)| i)
        .collect()
}

/// One row of `summary.csv`: one metric of one cell, over its successful repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Experiment kind.
    pub experiment: String,
    /// Parameters, as compact JSON.
    pub params: String,
    /// Transport mode (`<mode> (<client>)` for runs of a browser client, see [`RunRecord::cell_key`]).
    pub transport: String,
    /// Profile.
    pub profile: String,
    /// Metric name.
    pub metric: String,
    /// Mean over repetitions.
    pub mean: f64,
    /// Half-width of the 95 % CI over repetitions; `None` with a single repetition (written as an empty field).
    pub ci95: Option<f64>,
    /// Successful repetitions.
    pub n: usize,
    /// Repetitions that failed or timed out.
    pub failed: usize,
}

/// Groups runs into cells and summarizes every metric as mean ± 95 % CI, in first-seen cell order.
pub fn summarize(records: &[RunRecord]) -> Vec<SummaryRow> {
    let mut order = Vec::new();
    let mut cells: BTreeMap<(String, String, String, String), Vec<&RunRecord>> = BTreeMap::new();
    for record in records {
        let key = record.cell_key();
        if !cells.contains_key(&key) {
            order.push(key.clone());
        }
        cells.entry(key).or_default().push(record);
    }
    let mut rows = Vec::new();
    for key in order {
        let runs = &cells[&key];
        let ok: Vec<_> = runs.iter().filter(|r| r.status == RunStatus::Ok).collect();
        let failed = runs.len() - ok.len();
        let mut metrics: Vec<&String> = ok.iter().flat_map(|r| r.metrics.keys()).collect();
        metrics.sort();
        metrics.dedup();
        for metric in metrics {
            let values: Vec<f64> = ok.iter().filter_map(|r| r.metrics.get(metric).copied()).filter(|v| v.is_finite()).collect();
            if let Some(ci) = MeanCi::of(&values) {
                rows.push(SummaryRow {
                    experiment: key.0.clone(),
                    params: key.1.clone(),
                    transport: key.2.clone(),
                    profile: key.3.clone(),
                    metric: metric.clone(),
                    mean: ci.mean,
                    ci95: ci.ci95,
                    n: ci.n,
                    failed,
                });
            }
        }
    }
    rows
}

/// A profile as it ran: name, where it came from, its text and the text's SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Profile name.
    pub name: String,
    /// File path or `builtin:NAME`.
    pub origin: String,
    /// SHA-256 of `text`, hex.
    pub sha256: String,
    /// The profile file's contents.
    pub text: String,
}

/// One run of `tlab run` that contributed to a (possibly merged) results directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestPart {
    /// `I/N` shard, or `all`.
    pub shard: String,
    /// Host name of the machine.
    pub host: String,
    /// When it started (UTC, ISO 8601).
    pub started_utc: String,
    /// Runs it produced.
    pub runs: usize,
    /// Process id of the `tlab run` (with `host`, tells a run in progress from a killed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many cells it ran at once, and how long it was expected to take and took (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyRecord>,
}

/// How many cells one `tlab run` ran at once: where it started, every change link health made, what it reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyRecord {
    /// Cells allowed at once at the start (`--jobs`, the suite's `concurrency`, or one per core), also the most
    /// ever allowed.
    pub initial: usize,
    /// Most cells that actually ran at once.
    pub peak: usize,
    /// Cells allowed at once when the part ended (or was last written).
    pub last: usize,
    /// Every change of the limit, in order.
    pub changes: Vec<ConcurrencyChange>,
    /// The wall time the part's cells were expected to take at `initial` cells at once, seconds.
    pub expected_s: f64,
    /// The wall time they took, seconds (absent while the part runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
}

/// One change of the number of cells allowed at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrencyChange {
    /// Runs the part had recorded when the limit changed.
    pub after_runs: usize,
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// For a back-off: the cell whose link missed its tolerance while other cells ran (its run was dropped and the
    /// cell ran again); absent when healthy cells raised the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<CellId>,
    /// That run's p99 release lateness, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_p99_us: Option<f64>,
}

/// Whether a results directory holds every planned cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestStatus {
    /// A `tlab run` is writing the directory, or was killed while it did (see [`ManifestPart::pid`]).
    Running,
    /// The run was stopped by a signal; `missing_cells` lists what did not run (`tlab run --resume` runs it).
    Interrupted,
    /// Every planned cell ran.
    Complete,
}

/// `manifest.json`: everything needed to cite and reproduce a results directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// tlab version.
    pub tlab_version: String,
    /// Git commit of the source tree, if known.
    pub git_commit: Option<String>,
    /// True when the tree had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// Suite name.
    pub suite: String,
    /// Suite file path as given.
    pub suite_file: String,
    /// SHA-256 of the suite file, hex.
    pub suite_sha256: String,
    /// The suite file's contents.
    pub suite_text: String,
    /// Every profile the suite used.
    pub profiles: Vec<ProfileRecord>,
    /// The suite seed (repetitions derive theirs from it).
    pub seed: u64,
    /// `uname -sr`.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPU cores.
    pub cores: usize,
    /// The binary that ran (its commit is the one above), as compiled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildInfo>,
    /// CPU governor, steal, TCP sysctls and link devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostInfo>,
    /// Link emulator backend that ran (tun, kernel, or none for loopback).
    pub emulator_backend: String,
    /// The suite's congestion control (`cubic`, `newreno`, `bbr`): kernel TCP in both namespaces and quinn on both
    /// ends of every QUIC mode run it (each run's [`RunRecord::stack`] has what each side read back).
    pub congestion_control: String,
    /// What the stacks of the last run that set up its link ran with (each run records its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackInfo>,
    /// The runs that produced this directory (several after `tlab merge` or `tlab run --resume`).
    pub parts: Vec<ManifestPart>,
    /// Whether every planned cell ran (manifests older than this field were written only when complete).
    #[serde(default = "complete")]
    pub status: ManifestStatus,
    /// How many cells were planned (`cells.len()`).
    #[serde(default)]
    pub planned_cells: usize,
    /// The planned cells, in run order.
    #[serde(default)]
    pub cells: Vec<CellId>,
    /// How many planned cells have a run in `runs.jsonl` (updated as each one ends).
    #[serde(default)]
    pub completed_cells: usize,
    /// The planned cells that have not run (empty when complete).
    #[serde(default)]
    pub missing_cells: Vec<CellId>,
}

fn complete() -> ManifestStatus {
    ManifestStatus::Complete
}

impl Manifest {
    /// Sets `completed_cells`, `missing_cells` and `status` from the runs recorded so far; `status` becomes
    /// `Complete` when nothing is missing and `unfinished` otherwise.
    pub fn account(&mut self, runs: &[RunRecord], unfinished: ManifestStatus) {
        let missing = missing_cells(&self.cells, runs);
        self.planned_cells = self.cells.len();
        self.completed_cells = self.cells.len() - missing.len();
        self.missing_cells = missing.into_iter().map(|i| self.cells[i].clone()).collect();
        self.status = if self.missing_cells.is_empty() { ManifestStatus::Complete } else { unfinished };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(transport: &str, repetition: u32, p99: f64, status: RunStatus) -> RunRecord {
        let mut histogram = LatencyHistogram::new();
        histogram.record_ns(1_000_000);
        RunRecord {
            suite: "t".into(),
            experiment: "latency".into(),
            params: BTreeMap::from([("size".to_string(), serde_json::json!(256))]),
            transport: transport.into(),
            client: "native".into(),
            profile: "clean".into(),
            repetition,
            seed: 7 + repetition as u64,
            status,
            error: (status != RunStatus::Ok).then(|| "boom".to_string()),
            duration_s: 1.0,
            metrics: BTreeMap::from([(Metric::OneWayP99.name().to_string(), p99)]),
            histograms: BTreeMap::from([(Distribution::OneWay.name().to_string(), histogram)]),
            series: BTreeMap::from([("arrivals".to_string(), vec![(0.0, 1.0), (2.5, 2.0)])]),
            messages: Some("messages/x.csv.gz".into()),
            drops: None,
            stack: None,
            link: None,
            capture: None,
        }
    }

    #[test]
    fn run_record_round_trips_through_json() {
        let original = record("ws", 0, 1234.0, RunStatus::Failed);
        let line = serde_json::to_string(&original).unwrap();
        let back: RunRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), line);
        assert_eq!(back.status, RunStatus::Failed);
        assert_eq!(back.histogram(Distribution::OneWay).map(LatencyHistogram::len), Some(1));
        assert_eq!((back.get(Metric::OneWayP99), back.messages.as_deref()), (Some(1234.0), Some("messages/x.csv.gz")));
        assert!(line.contains("\"status\":\"failed\"") && !line.contains("\"drops\""), "{line}");
        assert_eq!(back.file_stem(), "latency-ws-clean-r0-0000000000000007");
    }

    #[test]
    fn missing_cells_pairs_each_run_with_one_planned_cell() {
        let runs = vec![record("ws", 0, 1.0, RunStatus::Ok), record("ws", 2, 1.0, RunStatus::Failed), record("ws", 2, 1.0, RunStatus::Ok)];
        let mut planned: Vec<CellId> = (0..4).map(|rep| record("ws", rep, 0.0, RunStatus::Ok).cell_id()).collect();
        assert_eq!(missing_cells(&planned, &runs), [1, 3], "a failed run ran; a duplicate run counts once");
        planned.push(planned[0].clone());
        assert_eq!(missing_cells(&planned, &runs), [1, 3, 4], "a cell planned twice needs two runs");
        let mut other_seed = runs[0].clone();
        other_seed.seed += 1;
        assert_eq!(missing_cells(&planned[..1], &[other_seed]), [0], "a run with another seed is another cell");
    }

    #[test]
    fn manifest_accounting_and_old_manifests() {
        let old = r#"{"tlab_version":"0.1.0","git_commit":null,"git_dirty":null,"suite":"s","suite_file":"s.toml",
            "suite_sha256":"ab","suite_text":"","profiles":[],"seed":1,"kernel":"Linux","cpu_model":"x","cores":2,
            "emulator_backend":"tun","congestion_control":"cubic","parts":[{"shard":"all","host":"h","started_utc":"t","runs":1}]}"#;
        let mut manifest: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(manifest.status, ManifestStatus::Complete, "manifests before the status field were written at the end");
        assert_eq!(manifest.parts[0].pid, None);
        manifest.cells = (0..3).map(|rep| record("ws", rep, 0.0, RunStatus::Ok).cell_id()).collect();
        let runs = [record("ws", 1, 1.0, RunStatus::Ok)];
        manifest.account(&runs, ManifestStatus::Interrupted);
        assert_eq!((manifest.status, manifest.planned_cells, manifest.completed_cells), (ManifestStatus::Interrupted, 3, 1));
        assert_eq!(manifest.missing_cells.iter().map(|c| c.repetition).collect::<Vec<_>>(), [0, 2]);
        let json = serde_json::to_string(&manifest).unwrap();
        assert!(json.contains("\"status\":\"interrupted\""), "{json}");
        let all: Vec<RunRecord> = (0..3).map(|rep| record("ws", rep, 1.0, RunStatus::Ok)).collect();
        manifest.account(&all, ManifestStatus::Running);
        assert_eq!((manifest.status, manifest.completed_cells, manifest.missing_cells.len()), (ManifestStatus::Complete, 3, 0));
    }

    #[test]
    fn summary_groups_cells_and_excludes_failures() {
        let records = vec![
            record("ws", 0, 10.0, RunStatus::Ok),
            record("ws", 1, 12.0, RunStatus::Ok),
            record("ws", 2, 14.0, RunStatus::Ok),
            record("ws", 3, 999.0, RunStatus::Timeout),
            record("grpc", 0, 5.0, RunStatus::Ok),
        ];
        let rows = summarize(&records);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].transport.as_str(), rows[0].mean, rows[0].n, rows[0].failed), ("ws", 12.0, 3, 1));
        assert!((rows[0].ci95.unwrap() - 4.9687).abs() < 1e-3);
        assert_eq!((rows[1].transport.as_str(), rows[1].mean, rows[1].ci95, rows[1].n), ("grpc", 5.0, None, 1), "n = 1 has no CI");
    }

    #[test]
    fn browser_runs_are_cells_of_their_own_and_older_lines_are_native() {
        let mut browser = record("ws", 0, 40.0, RunStatus::Ok);
        browser.client = "chromium".into();
        let rows = summarize(&[record("ws", 0, 10.0, RunStatus::Ok), browser.clone()]);
        let cells: Vec<(&str, f64)> = rows.iter().map(|r| (r.transport.as_str(), r.mean)).collect();
        assert_eq!(cells, [("ws", 10.0), ("ws (chromium)", 40.0)]);
        assert!(serde_json::to_string(&browser).unwrap().contains("\"client\":\"chromium\""));
        let line = serde_json::to_string(&record("ws", 0, 1.0, RunStatus::Ok)).unwrap().replace("\"client\":\"native\",", "");
        assert_eq!(serde_json::from_str::<RunRecord>(&line).unwrap().client, "native");
    }
}
