//! Suite files: `experiments/*.toml`.
//!
//! ```toml
//! name = "quick"
//! description = "…"
//! seed = 1
//! repetitions = 1
//! transports = ["reliable", "wt-datagram"]  # names and groups, see below
//! profiles = ["clean", "lossy-2"]    # shipped names or paths relative to the suite file
//! cell_timeout_s = 30
//! backend = "auto"                   # auto | tun | kernel (link emulator)
//! link_tolerance_us = 1000            # p99 release lateness above which a run's link is marked unhealthy
//! congestion_control = "cubic"       # cubic | newreno | bbr: kernel TCP in both namespaces and quinn on both ends
//! capture = false                    # per run: pcap of both sides of the link, TLS key log, qlog (TUN backend)
//! concurrency = 2                    # cells at once (default: one per core; `tlab run --jobs` overrides), see `crate::schedule`
//! client = "native"                  # native | chromium (the browser's own APIs, see `crate::browser`)
//!
//! [[experiment]]
//! kind = "latency"                   # latency | hol | ordering | migration | handshake | overhead | outage | connection-limit
//! messages = 500
//! size = 256
//! rate_hz = 500
//! profiles = ["lossy-2"]             # optional per-experiment override (also `transports`)
//! ```
//!
//! ## Transport lists
//! `transports` (top level or per experiment) lists transport names (`tlab list`) and groups, mixed freely:
//! - `"all"`: every registered mode;
//! - a capability group, every mode whose capabilities have it: `"reliable"`, `"multiplexed"`, `"datagram"`,
//!   `"bidirectional"`, `"ordered"`, `"native-migration"`, `"native-reconnect"` (the names of
//!   [`tlab_core::Requirement`]).
//!
//! The list expands to the union of its entries, each mode once, in registry order (the order of `tlab list`), so
//! `["reliable"]` picks up a new reliable mode without editing the suite. An unknown entry, an empty list and a group
//! that matches no mode are errors naming the field. The caller passes the catalogue of known modes (name and
//! [`Capabilities`], `tlab_transports::catalogue()`), so this crate depends on no transport.
//!
//! ## Applicability
//! Each experiment kind needs capabilities of the mode ([`ExperimentSpec::requirements`]: everything that echoes
//! needs [`Requirement::Bidirectional`], a source stream needs nothing), and a `chromium` cell needs a page workload
//! for its mode and kind (`crate::browser::page_workload`). Expansion drops the modes of a list that cannot run an
//! experiment and lists them in [`Suite::not_applicable`] (`tlab check` prints them) instead of planning cells that
//! can only fail; an experiment that no mode of its list can run is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tlab_core::config::CongestionControl;
use tlab_core::{Capabilities, Requirement};
use tlab_netem::{Backend, Profile};

/// What is wrong with a suite file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The suite file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a suite-level key or value the format does not have (serde names the key and the line).
    #[error("{file}: {message}")]
    Syntax {
        /// The suite file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A value that cannot run.
    #[error("{file}: field `{field}`: {reason}")]
    Invalid {
        /// The suite file.
        file: String,
        /// The offending field, e.g. `experiment[2].streams`.
        field: String,
        /// Why.
        reason: String,
    },
    /// A profile that does not load.
    #[error("{file}: profile `{name}`: {source}")]
    Profile {
        /// The suite file.
        file: String,
        /// The profile as written.
        name: String,
        /// The profile's own error.
        source: tlab_netem::ProfileError,
    },
}

/// What is wrong with a transport list (a suite's `transports`, `tlab compare --transports`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportListError {
    /// The list has no entry.
    #[error("is empty")]
    Empty,
    /// An entry that is neither a transport name nor a group.
    #[error("unknown transport or group `{entry}`; transports: {}; groups: all, {}", .transports.join(", "), group_names().join(", "))]
    Unknown {
        /// The entry as written.
        entry: String,
        /// Every known transport name.
        transports: Vec<String>,
    },
    /// A capability group that no known transport belongs to.
    #[error("group `{0}` matches no transport")]
    EmptyGroup(Requirement),
}

fn group_names() -> Vec<&'static str> {
    Requirement::ALL.iter().map(|r| r.name()).collect()
}

/// Expands a transport list (names, `"all"`, capability groups) against `catalogue` (every known mode's name and
/// capabilities, in registry order): the union of the entries, each mode once, in catalogue order.
pub fn resolve_transports(list: &[String], catalogue: &[(&str, Capabilities)]) -> Result<Vec<String>, TransportListError> {
    if list.is_empty() {
        return Err(TransportListError::Empty);
    }
    let mut chosen = vec![false; catalogue.len()];
    for entry in list {
        if entry == "all" {
            chosen.fill(true);
        } else if let Some(i) = catalogue.iter().position(|(name, _)| name == entry) {
            chosen[i] = true;
        } else {
            let group = entry.parse::<Requirement>().map_err(|_| TransportListError::Unknown {
                entry: entry.clone(),
                transports: catalogue.iter().map(|(name, _)| name.to_string()).collect(),
            })?;
            let mut matched = false;
            for (chosen, (_, caps)) in chosen.iter_mut().zip(catalogue) {
                if caps.satisfies(group) {
                    *chosen = true;
                    matched = true;
                }
            }
            if !matched {
                return Err(TransportListError::EmptyGroup(group));
            }
        }
    }
    Ok(catalogue.iter().zip(chosen).filter(|(_, c)| *c).map(|((name, _), _)| name.to_string()).collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    seed: u64,
    #[serde(default = "one_u32")]
    repetitions: u32,
    transports: Vec<String>,
    profiles: Vec<String>,
    #[serde(default = "default_timeout")]
    cell_timeout_s: f64,
    #[serde(default)]
    backend: Backend,
    #[serde(default = "default_link_tolerance")]
    link_tolerance_us: u64,
    #[serde(default)]
    congestion_control: Option<String>,
    #[serde(default)]
    capture: bool,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    client: Client,
    #[serde(rename = "experiment")]
    experiments: Vec<RawExperiment>,
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_timeout() -> f64 {
    60.0
}
fn default_link_tolerance() -> u64 {
    tlab_results::DEFAULT_LINK_TOLERANCE_US
}

// No deny_unknown_fields here: serde cannot combine it with `flatten`; `spec_of` rejects unknown keys.
#[derive(Debug, Clone, Deserialize)]
struct RawExperiment {
    /// `kind` and the kind's parameters, as written: [`spec_of`] makes the [`ExperimentSpec`]. (Flattening the spec
    /// itself buffered its keys and lost the name of a key whose value has the wrong type.)
    #[serde(flatten)]
    spec: toml::Table,
    transports: Option<Vec<String>>,
    profiles: Option<Vec<String>>,
    client: Option<Client>,
}

/// Who runs a cell's client side: our native client crates, or headless Chromium through the browser's own APIs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// The transport's client crate (and the session layer where the experiment uses it).
    #[default]
    Native,
    /// Headless Chromium in the client namespace (`crate::browser`).
    Chromium,
}

impl Client {
    /// The name in suites and in `runs.jsonl`'s `client` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Chromium => "chromium",
        }
    }
}

/// The spec of experiment `index` (1-based) from its own keys. An error is `(field, reason)` with the field's path,
/// e.g. `experiment[2].rate_hz`.
fn spec_of(keys: &toml::Table, index: usize) -> Result<ExperimentSpec, (String, String)> {
    let at = |path: &str| format!("experiment[{index}]{path}");
    let mut params = keys.clone();
    let kind = match params.remove("kind") {
        Some(toml::Value::String(kind)) => kind,
        Some(other) => return Err((at(".kind"), format!("must be a string, got a {}", other.type_str()))),
        None => return Err((at(".kind"), "is missing".into())),
    };
    // The externally tagged form, `{ <kind> = { params } }`, which serde reads key by key.
    let tagged = toml::Value::Table(toml::Table::from_iter([(kind.clone(), toml::Value::Table(params))]));
    serde_path_to_error::deserialize(tagged).map_err(|e| {
        let mut path = String::new();
        for segment in e.path() {
            match segment {
                serde_path_to_error::Segment::Map { key } => path += &format!(".{key}"),
                serde_path_to_error::Segment::Seq { index } => path += &format!("[{index}]"),
                serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
            }
        }
        let message = e.into_inner().message().trim_end().to_string();
        // Nothing below the tag: the kind itself is unknown.
        let path = if path.is_empty() && message.starts_with("unknown variant") { ".kind".into() } else { path };
        (at(&path), format!("{message} (a `{kind}` experiment)"))
    })
}

/// One experiment and its parameters. Each is a workload plus metrics; see docs/RESULTS.md for the definitions.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
// Externally tagged (`{"latency": {...}}`): `spec_of` reads the suite's `kind` key into that form.
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ExperimentSpec {
    /// One-way (source) or round-trip (echo) latency and goodput on `streams` streams of one session.
    Latency {
        /// Messages per stream.
        messages: u64,
        /// Payload bytes.
        size: usize,
        /// Messages per second per stream; 0 = as fast as possible.
        #[serde(default)]
        rate_hz: u64,
        /// Concurrent streams.
        #[serde(default = "one_u32")]
        streams: u32,
        /// `source` (one-way, server → client) or `echo` (round trip).
        #[serde(default = "source")]
        pattern: String,
    },
    /// Head-of-line blocking as a controlled experiment: targeted drops of stream 0's markers, HOL index ρ per
    /// epoch (see `crate::hol`).
    Hol {
        /// Streams (K).
        #[serde(default = "four")]
        streams: u32,
        /// Payload bytes of the ordinary messages.
        #[serde(default = "hol_size")]
        size: usize,
        /// Payload bytes of stream 0's markers (their packets are the only ones this large).
        #[serde(default = "marker_size")]
        marker_size: usize,
        /// Messages per second per stream.
        #[serde(default = "fifty")]
        rate_hz: u64,
        /// Epochs whose marker is dropped.
        #[serde(default = "thirty")]
        epochs: u64,
        /// Epochs whose rule is armed on a size that never occurs, spread among the others: the reference that
        /// ρ is corrected by (at least 1).
        #[serde(default = "ten")]
        null_epochs: u64,
        /// `shared` (K streams on one connection) or `per-stream` (one connection per stream: the K = 1 control).
        #[serde(default = "shared")]
        connections: String,
        /// `staggered` (stream j offset by j·T/K: one message per packet) or `in-phase` (co-packetisation).
        #[serde(default = "staggered")]
        phase: String,
        /// Also drop the marker's first retransmission (the retransmission-timeout path).
        #[serde(default)]
        drop_retransmission: bool,
        /// Warm-up before the first epoch, in RTTs.
        #[serde(default = "twenty")]
        warmup_rtts: u32,
    },
    /// Per-stream order violations, duplicates, missing; datagram delivery ratio and reorder depth.
    Ordering {
        /// Streams.
        #[serde(default = "one_u32")]
        streams: u32,
        /// Messages per stream.
        messages: u64,
        /// Payload bytes.
        size: usize,
        /// Messages per second per stream.
        rate_hz: u64,
    },
    /// Steady echo traffic while the profile's address-change / NAT-rebind event fires.
    Migration {
        /// Run length, seconds.
        duration_s: f64,
        /// Messages per second.
        rate_hz: u64,
        /// Payload bytes.
        #[serde(default = "small")]
        size: usize,
    },
    /// Connect start → each setup milestone and the first message delivered, in ms and in RTTs, over `connections`
    /// fresh connections one after the other (median, p90 and the share above 1 s).
    Handshake {
        /// Connections per run.
        #[serde(default = "one_u32")]
        connections: u32,
    },
    /// Marginal IP bytes per message per direction, paced and saturated, per payload size (see `crate::overhead`).
    Overhead {
        /// Payload sizes; each is its own cell.
        sizes: Vec<usize>,
        /// Echoed messages of the longer batch (N₂; the shorter has N₂/2).
        messages: u64,
        /// Messages per second of the paced batches (one message per packet).
        #[serde(default = "fifty")]
        rate_hz: u64,
    },
    /// Steady echo traffic through the profile's blackhole: time until traffic flows again, lost, duplicated. With
    /// `client = "chromium"`: a source stream at `rate_hz`, kept alive by the browser's own means (see
    /// `crate::browser`), not by our session layer.
    Outage {
        /// Run length, seconds.
        duration_s: f64,
        /// Messages per second.
        rate_hz: u64,
    },
    /// A browser page opens `streams` source streams of one origin at once: how many stall behind the browser's
    /// per-origin connection limit, and for how long (`client = "chromium"` only).
    #[serde(rename = "connection-limit")]
    ConnectionLimit {
        /// Streams opened at once.
        #[serde(default = "eight")]
        streams: u32,
        /// Messages per stream.
        messages: u64,
        /// Messages per second per stream.
        rate_hz: u64,
        /// Payload bytes.
        #[serde(default = "small")]
        size: usize,
    },
}

fn source() -> String {
    "source".into()
}
fn four() -> u32 {
    4
}
fn twenty() -> u32 {
    20
}
fn fifty() -> u64 {
    50
}
fn thirty() -> u64 {
    30
}
fn ten() -> u64 {
    10
}
fn hol_size() -> usize {
    100
}
fn marker_size() -> usize {
    800
}
fn shared() -> String {
    "shared".into()
}
fn staggered() -> String {
    "staggered".into()
}
fn small() -> usize {
    64
}
fn eight() -> u32 {
    8
}

impl ExperimentSpec {
    /// The experiment kind as written in suites and results.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Latency { .. } => "latency",
            Self::Hol { .. } => "hol",
            Self::Ordering { .. } => "ordering",
            Self::Migration { .. } => "migration",
            Self::Handshake { .. } => "handshake",
            Self::Overhead { .. } => "overhead",
            Self::Outage { .. } => "outage",
            Self::ConnectionLimit { .. } => "connection-limit",
        }
    }

    /// Parameters as recorded with each run (the serialized spec without its kind).
    pub fn params(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self).expect("spec serializes") {
            // `{"<kind>": {params}}`
            serde_json::Value::Object(tagged) => match tagged.into_iter().next() {
                Some((_, serde_json::Value::Object(params))) => params.into_iter().collect(),
                _ => BTreeMap::new(),
            },
            _ => BTreeMap::new(),
        }
    }

    /// The capabilities a mode needs to run this experiment with the native client: every workload that echoes needs
    /// a client → server direction; a source stream needs nothing.
    pub fn requirements(&self) -> &'static [Requirement] {
        match self {
            Self::Latency { pattern, .. } if pattern == "source" => &[],
            Self::ConnectionLimit { .. } => &[],
            // Marginal bytes need every echo to arrive (crate::overhead).
            Self::Overhead { .. } => &[Requirement::Bidirectional, Requirement::Reliable],
            _ => &[Requirement::Bidirectional],
        }
    }

    /// Why `client` cannot run this experiment on a mode with `caps` (`None`: it can).
    fn not_applicable(&self, client: Client, transport: &str, caps: Capabilities) -> Option<String> {
        match client {
            Client::Native if matches!(self, Self::ConnectionLimit { .. }) => Some("a browser's connection limit needs client = \"chromium\"".into()),
            Client::Native => {
                let lacking: Vec<&str> = self.requirements().iter().filter(|r| !caps.satisfies(**r)).map(|r| r.name()).collect();
                (!lacking.is_empty()).then(|| format!("lacks {}", lacking.join(", ")))
            }
            Client::Chromium => crate::browser::page_workload(self, transport)
                .is_none()
                .then(|| format!("the browser page has no {} workload for {transport}", self.kind())),
        }
    }

    /// Cells of this spec: overhead expands one cell per size.
    fn expand(&self) -> Vec<ExperimentSpec> {
        match self {
            Self::Overhead { sizes, messages, rate_hz } => {
                sizes.iter().map(|&s| Self::Overhead { sizes: vec![s], messages: *messages, rate_hz: *rate_hz }).collect()
            }
            other => vec![other.clone()],
        }
    }

    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<(), (String, String)> {
        let positive = |name: &str, v: u64| if v == 0 { Err((field(name), "must be at least 1".to_string())) } else { Ok(()) };
        let seconds = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 { Ok(()) } else { Err((field(name), format!("must be between 0 and 3600 s, got {v}"))) }
        };
        match self {
            Self::Latency { messages, streams, pattern, size, .. } => {
                positive("messages", *messages)?;
                positive("streams", *streams as u64)?;
                if pattern != "source" && pattern != "echo" {
                    return Err((field("pattern"), format!("must be `source` or `echo`, got `{pattern}`")));
                }
                check_size(field, *size)
            }
            Self::Hol { streams, size, marker_size, rate_hz, epochs, null_epochs, connections, phase, .. } => {
                if *streams < 2 {
                    return Err((field("streams"), "needs at least 2 (stream 0 carries the markers)".into()));
                }
                positive("epochs", *epochs)?;
                positive("null_epochs", *null_epochs)?;
                if !(1..=1000).contains(rate_hz) {
                    return Err((field("rate_hz"), format!("must be between 1 and 1000, got {rate_hz}")));
                }
                if marker_size <= size || *marker_size > 1200 {
                    return Err((field("marker_size"), format!("must exceed size ({size}) and fit one packet (≤ 1200), got {marker_size}")));
                }
                if connections != "shared" && connections != "per-stream" {
                    return Err((field("connections"), format!("must be `shared` or `per-stream`, got `{connections}`")));
                }
                if phase != "staggered" && phase != "in-phase" {
                    return Err((field("phase"), format!("must be `staggered` or `in-phase`, got `{phase}`")));
                }
                check_size(field, *size)
            }
            Self::Ordering { streams, messages, rate_hz, size } => {
                positive("streams", *streams as u64)?;
                positive("messages", *messages)?;
                positive("rate_hz", *rate_hz)?;
                check_size(field, *size)
            }
            Self::Migration { duration_s, rate_hz, size } => {
                seconds("duration_s", *duration_s)?;
                positive("rate_hz", *rate_hz)?;
                check_size(field, *size)
            }
            Self::Outage { duration_s, rate_hz } => {
                seconds("duration_s", *duration_s)?;
                positive("rate_hz", *rate_hz)
            }
            Self::Handshake { connections } => positive("connections", *connections as u64),
            Self::ConnectionLimit { streams, messages, rate_hz, size } => {
                positive("streams", *streams as u64)?;
                positive("messages", *messages)?;
                positive("rate_hz", *rate_hz)?;
                check_size(field, *size)
            }
            Self::Overhead { sizes, messages, rate_hz } => {
                if *messages < 2 {
                    return Err((field("messages"), "must be at least 2 (two batches of N and N/2)".into()));
                }
                positive("rate_hz", *rate_hz)?;
                if sizes.is_empty() {
                    return Err((field("sizes"), "needs at least one size".into()));
                }
                sizes.iter().try_for_each(|&s| check_size(field, s))
            }
        }
    }
}

fn check_size(field: &dyn Fn(&str) -> String, size: usize) -> Result<(), (String, String)> {
    if size > 4 << 20 {
        return Err((field("size"), format!("{size} bytes exceeds the 4 MiB message limit")));
    }
    Ok(())
}

/// A loaded, validated suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Suite name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The seed every repetition derives its own from.
    pub seed: u64,
    /// Repetitions per cell.
    pub repetitions: u32,
    /// Per-cell timeout.
    pub cell_timeout: Duration,
    /// Link emulator backend: `auto` (kernel netem where present and the profile allows, else TUN), `tun`, `kernel`.
    pub backend: Backend,
    /// The p99 release lateness (µs) a run's link may show and still be `link_ok` (default 1,000).
    pub link_tolerance_us: u64,
    /// The congestion control of kernel TCP in both namespaces and of quinn on both ends of every QUIC mode.
    pub congestion_control: CongestionControl,
    /// Whether every run keeps a packet capture of both sides of its link, a TLS key log and qlog traces (files in
    /// `captures/`, listed in its record; off by default for their size). `tlab run --capture` turns it on.
    pub capture: bool,
    /// Cells run at once at the start (`None`: one per core); link health may lower it (`crate::schedule`).
    /// `tlab run --jobs N` sets it.
    pub concurrency: Option<usize>,
    /// The suite file's path as given and its text (recorded in the manifest).
    pub file: String,
    /// The suite file's contents.
    pub text: String,
    /// Every profile used, by the name written in the suite.
    pub profiles: BTreeMap<String, Profile>,
    /// The matrix, in run order.
    pub cells: Vec<Cell>,
    /// The modes of each experiment's list that cannot run it (dropped from the matrix), with the reason.
    pub not_applicable: Vec<NotApplicable>,
}

/// A mode an experiment's transport list named (or a group brought in) that cannot run that experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotApplicable {
    /// The experiment, 1-based as in errors (`experiment[2]`).
    pub experiment: usize,
    /// Its kind.
    pub kind: &'static str,
    /// The mode.
    pub transport: String,
    /// The client the experiment runs with.
    pub client: Client,
    /// Why not.
    pub reason: String,
}

/// One cell × repetition of the matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Position in the full matrix (shards split on it).
    pub index: usize,
    /// The experiment and parameters.
    pub spec: ExperimentSpec,
    /// Transport mode.
    pub transport: String,
    /// Profile name (key of [`Suite::profiles`]).
    pub profile: String,
    /// Repetition, from 0.
    pub repetition: u32,
    /// Who runs the client side.
    pub client: Client,
    /// Seed derived from the suite seed and the cell's identity.
    pub seed: u64,
}

impl Suite {
    /// Loads and validates `path`. `catalogue` is every known transport's name and capabilities, in registry order
    /// (see [the module docs](self) for how transport lists expand).
    pub fn load(path: &Path, catalogue: &[(&str, Capabilities)]) -> Result<Self, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path, catalogue)
    }

    /// Parses suite text; `origin` names it in errors and anchors relative profile paths.
    pub fn parse(text: &str, origin: &Path, catalogue: &[(&str, Capabilities)]) -> Result<Self, SuiteError> {
        let file = origin.display().to_string();
        let raw: RawSuite = toml::from_str(text).map_err(|e| SuiteError::Syntax { file: file.clone(), message: e.to_string() })?;
        let invalid = |field: String, reason: String| SuiteError::Invalid { file: file.clone(), field, reason };
        if raw.repetitions == 0 {
            return Err(invalid("repetitions".into(), "must be at least 1".into()));
        }
        if !(raw.cell_timeout_s.is_finite() && raw.cell_timeout_s > 0.0) {
            return Err(invalid("cell_timeout_s".into(), format!("must be positive, got {}", raw.cell_timeout_s)));
        }
        if raw.experiments.is_empty() {
            return Err(invalid("experiment".into(), "the suite has no [[experiment]]".into()));
        }
        if raw.concurrency == Some(0) {
            return Err(invalid("concurrency".into(), "must be at least 1 (leave it out for one cell per core)".into()));
        }
        let congestion_control = match &raw.congestion_control {
            None => CongestionControl::default(),
            Some(name) => name.parse().map_err(|e: tlab_core::Error| invalid("congestion_control".into(), e.to_string()))?,
        };
        let resolve_transports = |list: &[String], field: String| -> Result<Vec<String>, SuiteError> {
            resolve_transports(list, catalogue).map_err(|e| invalid(field, e.to_string()))
        };
        let base_dir = origin.parent().unwrap_or(Path::new(""));
        let mut profiles = BTreeMap::new();
        let mut load_profiles = |list: &[String], field: String| -> Result<Vec<String>, SuiteError> {
            if list.is_empty() {
                return Err(invalid(field, "is empty".into()));
            }
            for name in list {
                if !profiles.contains_key(name) {
                    let profile = if Profile::builtin_names().any(|n| n == name) {
                        Profile::builtin(name)
                    } else {
                        Profile::load(base_dir.join(name))
                    }
                    .map_err(|source| SuiteError::Profile { file: file.clone(), name: name.clone(), source })?;
                    profiles.insert(name.clone(), profile);
                }
            }
            Ok(list.to_vec())
        };
        let default_transports = resolve_transports(&raw.transports, "transports".into())?;
        let default_profiles = load_profiles(&raw.profiles, "profiles".into())?;
        let mut cells = Vec::new();
        let mut not_applicable = Vec::new();
        for (i, experiment) in raw.experiments.iter().enumerate() {
            let field = |name: &str| format!("experiment[{}].{name}", i + 1);
            let spec = spec_of(&experiment.spec, i + 1).map_err(|(f, reason)| invalid(f, reason))?;
            spec.validate(&field).map_err(|(f, reason)| invalid(f, reason))?;
            let listed = match &experiment.transports {
                Some(list) => resolve_transports(list, field("transports"))?,
                None => default_transports.clone(),
            };
            let client = experiment.client.unwrap_or(raw.client);
            let mut transports = Vec::new();
            for transport in listed {
                let caps = catalogue.iter().find(|(name, _)| *name == transport).map(|(_, caps)| *caps).expect("resolved from the catalogue");
                match spec.not_applicable(client, &transport, caps) {
                    None => transports.push(transport),
                    Some(reason) => not_applicable.push(NotApplicable { experiment: i + 1, kind: spec.kind(), transport, client, reason }),
                }
            }
            if transports.is_empty() {
                let field = if experiment.transports.is_some() { field("transports") } else { "transports".into() };
                return Err(invalid(field, format!("no mode of the list can run a `{}` experiment with client {}", spec.kind(), client.name())));
            }
            let cell_profiles = match &experiment.profiles {
                Some(list) => load_profiles(list, field("profiles"))?,
                None => default_profiles.clone(),
            };
            for spec in spec.expand() {
                for profile in &cell_profiles {
                    for transport in &transports {
                        for repetition in 0..raw.repetitions {
                            let mut identity = format!("{}|{}|{transport}|{profile}|{repetition}", spec.kind(), serde_json::to_string(&spec.params()).expect("json"));
                            // Native cells keep the identity (and seeds) they had before clients could differ.
                            if client != Client::Native {
                                identity += &format!("|{}", client.name());
                            }
                            cells.push(Cell {
                                index: cells.len(),
                                seed: tlab_netem::derive_seed(raw.seed, &identity),
                                spec: spec.clone(),
                                transport: transport.clone(),
                                profile: profile.clone(),
                                repetition,
                                client,
                            });
                        }
                    }
                }
            }
        }
        Ok(Self {
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            repetitions: raw.repetitions,
            cell_timeout: Duration::from_secs_f64(raw.cell_timeout_s),
            backend: raw.backend,
            link_tolerance_us: raw.link_tolerance_us,
            congestion_control,
            capture: raw.capture,
            concurrency: raw.concurrency,
            file,
            text: text.to_string(),
            profiles,
            cells,
            not_applicable,
        })
    }

    /// The cells of shard `index` of `count` (1-based): every `count`-th cell, so shards are disjoint, cover the
    /// matrix, and each gets a mix of experiments.
    pub fn shard(&self, index: u32, count: u32) -> Vec<Cell> {
        self.cells.iter().filter(|c| c.index % count as usize == (index - 1) as usize).cloned().collect()
    }
}

/// Parses `I/N` (1 ≤ I ≤ N).
pub fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let (i, n) = text.split_once('/').ok_or_else(|| format!("shard `{text}` is not I/N"))?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| format!("shard index `{i}`"))?, n.parse().map_err(|_| format!("shard count `{n}`"))?);
    if n == 0 || i == 0 || i > n {
        return Err(format!("shard {i}/{n}: need 1 ≤ I ≤ N"));
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bidirectional and nothing else: what each mode below adds to.
    const BASE: Capabilities = Capabilities { bidirectional: true, ..Capabilities::NONE };

    /// A registry in miniature: one connection per stream, a multiplexed mode, a migrating one, a datagram one.
    const KNOWN: &[(&str, Capabilities)] = &[
        ("ws", Capabilities { reliable: true, ordered: true, ..BASE }),
        ("grpc", Capabilities { reliable: true, ordered: true, multiplexed: true, ..BASE }),
        ("quic", Capabilities { reliable: true, ordered: true, multiplexed: true, native_migration: true, ..BASE }),
        ("wt-datagram", Capabilities { multiplexed: true, datagrams: true, ..BASE }),
    ];

    fn parse(text: &str) -> Result<Suite, SuiteError> {
        Suite::parse(text, Path::new("experiments/test.toml"), KNOWN)
    }

    fn resolve(list: &[&str]) -> Result<Vec<String>, TransportListError> {
        resolve_transports(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), KNOWN)
    }

    const GOOD: &str = r#"
name = "t"
seed = 9
repetitions = 2
transports = ["ws", "grpc"]
profiles = ["clean", "lossy-2"]
[[experiment]]
kind = "latency"
messages = 100
size = 64
[[experiment]]
kind = "overhead"
sizes = [16, 256, 4096]
messages = 10
profiles = ["clean"]
transports = ["all"]
"#;

    #[test]
    fn matrix_expands_experiments_profiles_transports_repetitions() {
        let suite = parse(GOOD).unwrap();
        // latency: 2 profiles × 2 transports × 2 reps = 8; overhead: 3 sizes × 1 profile × 3 transports (not the
        // datagram mode: overhead needs reliable delivery) × 2 reps = 18.
        assert_eq!(suite.cells.len(), 26);
        assert_eq!(suite.profiles.len(), 2);
        let seeds: std::collections::HashSet<u64> = suite.cells.iter().map(|c| c.seed).collect();
        assert_eq!(seeds.len(), suite.cells.len(), "every cell and repetition has its own seed");
        assert_eq!(parse(GOOD).unwrap().cells[5].seed, suite.cells[5].seed, "seeds are reproducible");
    }

    #[test]
    fn congestion_control_defaults_to_cubic_and_names_the_algorithm() {
        assert_eq!(parse(GOOD).unwrap().congestion_control, CongestionControl::Cubic);
        for cc in CongestionControl::ALL {
            let text = GOOD.replace("seed = 9", &format!("seed = 9\ncongestion_control = \"{cc}\""));
            assert_eq!(parse(&text).unwrap().congestion_control, cc);
        }
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_matrix() {
        let suite = parse(GOOD).unwrap();
        let mut all: Vec<usize> = (1..=3).flat_map(|i| suite.shard(i, 3)).map(|c| c.index).collect();
        all.sort();
        assert_eq!(all, (0..suite.cells.len()).collect::<Vec<_>>());
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        for bad in ["0/3", "4/3", "x/3", "3", "1/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let cases = [
            (GOOD.replace("[\"ws\", \"grpc\"]", "[\"ws\", \"carrier-pigeon\"]"), "transports", "unknown transport or group `carrier-pigeon`"),
            (GOOD.replace("transports = [\"all\"]", "transports = [\"reliabel\"]"), "experiment[2].transports", "`reliabel`"),
            (GOOD.replace("transports = [\"all\"]", "transports = [\"native-reconnect\"]"), "experiment[2].transports", "matches no transport"),
            (GOOD.replace("[\"ws\", \"grpc\"]", "[]"), "field `transports`", "is empty"),
            (GOOD.replace("\"lossy-2\"]", "\"no-such-profile\"]"), "no-such-profile", "experiments"),
            (GOOD.replace("messages = 100", "messages = 0"), "experiment[1].messages", "at least 1"),
            (GOOD.replace("size = 64", "size = 99999999"), "experiment[1].size", "exceeds"),
            (GOOD.replace("seed = 9", "seed = 9\ncolour = \"red\""), "unknown field `colour`", "test.toml"),
            (GOOD.replace("kind = \"latency\"", "kind = \"telepathy\""), "telepathy", "test.toml"),
            (GOOD.replace("repetitions = 2", "repetitions = 0"), "repetitions", "at least 1"),
            (GOOD.replace("seed = 9", "seed = 9\ncongestion_control = \"vegas\""), "congestion_control", "expected cubic, newreno or bbr"),
            (GOOD.replace("size = 64", "size = 64\nwobble = 3"), "wobble", "test.toml"),
        ];
        for (text, needle_a, needle_b) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("test.toml") && err.contains(needle_a) && err.contains(needle_b), "{err}");
        }
    }

    #[test]
    fn type_errors_inside_an_experiment_name_the_experiment_and_the_key() {
        let cases = [
            (GOOD.replace("size = 64", "size = 64\nrate_hz = -5"), "experiment[1].rate_hz", "-5"),
            (GOOD.replace("size = 64", "size = \"big\""), "experiment[1].size", "\"big\""),
            (GOOD.replace("messages = 10\n", "messages = 1.5\n"), "experiment[2].messages", "1.5"),
            (GOOD.replace("sizes = [16, 256, 4096]", "sizes = [16, -1]"), "experiment[2].sizes[1]", "-1"),
            (GOOD.replace("kind = \"latency\"", "kind = 7"), "experiment[1].kind", "string"),
            (GOOD.replace("kind = \"latency\"", "kind = \"telepathy\""), "experiment[1].kind", "telepathy"),
            (GOOD.replace("size = 64", "size = 64\nwobble = 3"), "experiment[1].wobble", "unknown field"),
        ];
        for (text, field, detail) in cases {
            let err = parse(&text).unwrap_err();
            let message = err.to_string();
            assert!(matches!(&err, SuiteError::Invalid { field: f, .. } if f == field), "{field}: {message}");
            assert!(message.contains("test.toml") && message.contains(detail), "{message}");
        }
        let message = parse(&GOOD.replace("size = 64", "size = 64\nrate_hz = -5")).unwrap_err().to_string();
        assert!(message.contains("`experiment[1].rate_hz`") && message.contains("`latency` experiment"), "{message}");
    }

    #[test]
    fn params_are_the_spec_without_its_kind() {
        let suite = parse(GOOD).unwrap();
        let params = suite.cells[0].spec.params();
        assert_eq!(params.keys().map(String::as_str).collect::<Vec<_>>(), ["messages", "pattern", "rate_hz", "size", "streams"]);
        assert_eq!(params["messages"], serde_json::json!(100));
    }

    #[test]
    fn groups_expand_to_the_modes_with_that_capability() {
        assert_eq!(resolve(&["reliable"]).unwrap(), ["ws", "grpc", "quic"]);
        assert_eq!(resolve(&["multiplexed"]).unwrap(), ["grpc", "quic", "wt-datagram"]);
        assert_eq!(resolve(&["datagram"]).unwrap(), ["wt-datagram"]);
        assert_eq!(resolve(&["native-migration"]).unwrap(), ["quic"]);
        assert_eq!(resolve(&["all"]).unwrap(), ["ws", "grpc", "quic", "wt-datagram"]);
    }

    #[test]
    fn mixed_lists_are_deduplicated_in_registry_order() {
        assert_eq!(resolve(&["quic", "datagram", "ws"]).unwrap(), ["ws", "quic", "wt-datagram"]);
        assert_eq!(resolve(&["grpc", "reliable", "multiplexed", "grpc"]).unwrap(), ["ws", "grpc", "quic", "wt-datagram"]);
        assert_eq!(resolve(&["wt-datagram", "all"]).unwrap(), ["ws", "grpc", "quic", "wt-datagram"]);
    }

    #[test]
    fn bad_lists_are_typed_errors() {
        assert_eq!(resolve(&[]), Err(TransportListError::Empty));
        assert_eq!(resolve(&["native-reconnect"]), Err(TransportListError::EmptyGroup(Requirement::NativeReconnect)));
        let unknown = resolve(&["ws", "Reliable"]).unwrap_err();
        let names = KNOWN.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(unknown, TransportListError::Unknown { entry: "Reliable".into(), transports: names });
        let text = unknown.to_string();
        assert!(text.contains("ws, grpc, quic, wt-datagram") && text.contains("groups: all, bidirectional"), "{text}");
    }

    #[test]
    fn suite_groups_reach_the_cells() {
        let text = GOOD.replace("[\"ws\", \"grpc\"]", "[\"reliable\"]").replace("transports = [\"all\"]", "transports = [\"ordered\"]");
        let suite = parse(&text).unwrap();
        let of = |kind: &str| {
            let mut t: Vec<_> = suite.cells.iter().filter(|c| c.spec.kind() == kind).map(|c| c.transport.as_str()).collect();
            t.dedup();
            t
        };
        let overhead: std::collections::BTreeSet<_> = of("overhead").into_iter().collect();
        assert_eq!(overhead, ["grpc", "quic", "ws"].into_iter().collect());
        // A group that leaves an experiment no mode that can run it is refused, naming the field.
        let datagram_only = GOOD.replace("transports = [\"all\"]", "transports = [\"datagram\"]");
        let refused = parse(&datagram_only).unwrap_err().to_string();
        assert!(refused.contains("experiment[2].transports") && refused.contains("overhead"), "{refused}");
        let latency: std::collections::BTreeSet<_> = of("latency").into_iter().collect();
        assert_eq!(latency, ["grpc", "quic", "ws"].into_iter().collect());
    }

    /// `KNOWN` plus a one-way mode (gRPC-Web: server streaming only) and an SSE mode.
    const WITH_ONE_WAY: &[(&str, Capabilities)] = &[
        KNOWN[0],
        KNOWN[1],
        ("grpc-web", Capabilities { reliable: true, ordered: true, multiplexed: true, ..Capabilities::NONE }),
        ("sse-h1", Capabilities { reliable: true, ordered: true, ..BASE }),
    ];

    #[test]
    fn modes_that_cannot_run_an_experiment_are_dropped_and_listed() {
        let text = GOOD.replace("[\"ws\", \"grpc\"]", "[\"all\"]").replace("size = 64", "size = 64\npattern = \"echo\"")
            + "[[experiment]]\nkind = \"latency\"\nmessages = 5\nsize = 8\n";
        let suite = Suite::parse(&text, Path::new("experiments/test.toml"), WITH_ONE_WAY).unwrap();
        let of = |experiment: &str| -> std::collections::BTreeSet<&str> {
            let echo = experiment == "echo";
            suite.cells.iter().filter(|c| matches!(&c.spec, ExperimentSpec::Latency { pattern, .. } if (pattern == "echo") == echo)).map(|c| c.transport.as_str()).collect()
        };
        assert_eq!(of("echo"), ["grpc", "sse-h1", "ws"].into_iter().collect(), "echo needs both directions");
        assert_eq!(of("source"), ["grpc", "grpc-web", "sse-h1", "ws"].into_iter().collect(), "a source runs on a one-way mode");
        assert!(suite.cells.iter().all(|c| c.spec.kind() != "overhead" || c.transport != "grpc-web"));
        let dropped: Vec<(usize, &str, &str)> = suite.not_applicable.iter().map(|n| (n.experiment, n.kind, n.transport.as_str())).collect();
        assert_eq!(dropped, [(1, "latency", "grpc-web"), (2, "overhead", "grpc-web")]);
        assert!(suite.not_applicable.iter().all(|n| n.reason == "lacks bidirectional" && n.client == Client::Native));
    }

    #[test]
    fn the_client_is_chosen_per_suite_or_experiment_and_changes_only_browser_seeds() {
        let limit = "[[experiment]]\nkind = \"connection-limit\"\nmessages = 100\nrate_hz = 50\ntransports = [\"sse-h1\", \"grpc\"]\nclient = \"chromium\"\n";
        let text = GOOD.to_string() + limit;
        let suite = Suite::parse(&text, Path::new("experiments/test.toml"), WITH_ONE_WAY).unwrap();
        let browser: Vec<_> = suite.cells.iter().filter(|c| c.client == Client::Chromium).map(|c| (c.spec.kind(), c.transport.as_str())).collect();
        assert_eq!(browser, [("connection-limit", "sse-h1"); 4], "2 profiles × 2 repetitions, grpc has no page workload");
        assert!(suite.not_applicable.iter().any(|n| n.transport == "grpc" && n.client == Client::Chromium && n.reason.contains("no connection-limit workload")));
        let native = Suite::parse(GOOD, Path::new("experiments/test.toml"), WITH_ONE_WAY).unwrap();
        assert_eq!(native.cells[0].seed, suite.cells[0].seed, "native cells keep their seeds");
        // Suite-wide chromium: the page has a source workload for ws (not grpc), but no overhead workload at all.
        let everywhere = Suite::parse(&GOOD.replace("seed = 9", "seed = 9\nclient = \"chromium\""), Path::new("t.toml"), WITH_ONE_WAY);
        let everywhere = everywhere.unwrap_err().to_string();
        assert!(everywhere.contains("experiment[2].transports") && everywhere.contains("client chromium"), "{everywhere}");
        let err = Suite::parse(&(GOOD.to_string() + &limit.replace("client = \"chromium\"\n", "")), Path::new("t.toml"), WITH_ONE_WAY).unwrap_err();
        assert!(err.to_string().contains("experiment[3].transports"), "{err}");
    }
}
