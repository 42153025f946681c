//! `tlab-results` is the shape of transport-lab's results and the statistics computed on them, with no I/O and no
//! transport dependency: one-way latency histograms ([`LatencyHistogram`], HdrHistogram in µs with 3 significant
//! digits), percentile summaries, mean ± 95 % confidence intervals over repetitions ([`MeanCi`]), the per-run record
//! written to `runs.jsonl` ([`RunRecord`]), the run manifest ([`Manifest`], with the planned cells and which of them ran: [`missing_cells`]) and the per-cell summary rows of
//! `summary.csv` ([`summarize`]). docs/RESULTS.md documents the files.

mod histogram;
mod schema;
mod stats;

pub use histogram::{LatencyHistogram, Percentiles};
pub use schema::{CellId, Manifest, ManifestPart, ManifestStatus, ProfileRecord, RunRecord, RunStatus, SummaryRow, missing_cells, summarize};
pub use stats::{MeanCi, student_t_975};
