//! `tlab-results` is the shape of transport-lab's results and the statistics computed on them, with no I/O and no
//! transport dependency: the one vocabulary of metrics ([`Metric`], [`Distribution`]: name, unit, one-way or round
//! trip, what each counts), latency histograms ([`LatencyHistogram`], HdrHistogram in µs with 3 significant digits),
//! percentile summaries, mean ± 95 % confidence intervals over repetitions ([`MeanCi`]), the per-run record written
//! to `runs.jsonl` ([`RunRecord`]), the per-message and drop-log files beside it ([`MessageRecord`], [`DropRecord`],
//! gzip CSV), what each side's stacks ran with ([`StackInfo`]), the run manifest ([`Manifest`], with the planned cells and which of them ran: [`missing_cells`]) and
//! the per-cell summary rows of `summary.csv` ([`summarize`]), and provenance: each run's link health
//! ([`LinkHealth`]), the binary ([`BuildInfo`]) and the host ([`HostInfo`]); the files of a captured run
//! ([`CaptureRecord`]). docs/RESULTS.md documents the files.

mod capture;
mod histogram;
mod metrics;
mod provenance;
mod records;
mod schema;
mod stack;
mod stats;

pub use capture::CaptureRecord;
pub use histogram::{LatencyHistogram, Percentiles};
pub use metrics::{Descriptor, Distribution, Metric, Path, Stat, Unit, markdown_table};
pub use provenance::{BuildInfo, DEFAULT_LINK_TOLERANCE_US, DeviceRecord, HostInfo, LatenessSummary, LinkHealth};
pub use records::{CsvRecord, DropRecord, MessageRecord, RecordsError, decode_csv_gz, encode_csv_gz};
pub use schema::{CellId, ConcurrencyChange, ConcurrencyRecord, Manifest, ManifestPart, ManifestStatus, ProfileRecord, RunRecord, RunStatus, SummaryRow, missing_cells, summarize};
pub use stack::{Http2Windows, QuicStack, SideStack, StackInfo, TcpStack};
pub use stats::{MeanCi, student_t_975};
