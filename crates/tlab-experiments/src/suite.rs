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
//!
//! [[experiment]]
//! kind = "latency"                   # latency | hol | ordering | migration | handshake | overhead | outage
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
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
    /// Not valid TOML, or a key the format does not have (serde names the key and the line).
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

// No deny_unknown_fields here: serde cannot combine it with `flatten`; the spec enum rejects unknown keys itself.
#[derive(Debug, Clone, Deserialize)]
struct RawExperiment {
    #[serde(flatten)]
    spec: ExperimentSpec,
    transports: Option<Vec<String>>,
    profiles: Option<Vec<String>>,
}

/// One experiment and its parameters. Each is a workload plus metrics; see docs/RESULTS.md for the definitions.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
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
    /// Head-of-line blocking: `streams` streams on one session vs one connection per stream, same link.
    Hol {
        /// Streams (K).
        #[serde(default = "eight")]
        streams: u32,
        /// Messages per stream.
        messages: u64,
        /// Payload bytes.
        size: usize,
        /// Messages per second per stream.
        rate_hz: u64,
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
    /// Connect start → first message delivered, in ms and in RTTs.
    Handshake {},
    /// IP bytes on the wire ÷ payload bytes, per payload size.
    Overhead {
        /// Payload sizes; each is its own cell.
        sizes: Vec<usize>,
        /// Echoed messages per cell.
        messages: u64,
    },
    /// Steady echo traffic through the profile's blackhole: time until traffic flows again, lost, duplicated.
    Outage {
        /// Run length, seconds.
        duration_s: f64,
        /// Messages per second.
        rate_hz: u64,
    },
}

fn source() -> String {
    "source".into()
}
fn eight() -> u32 {
    8
}
fn small() -> usize {
    64
}

impl ExperimentSpec {
    /// The experiment kind as written in suites and results.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Latency { .. } => "latency",
            Self::Hol { .. } => "hol",
            Self::Ordering { .. } => "ordering",
            Self::Migration { .. } => "migration",
            Self::Handshake {} => "handshake",
            Self::Overhead { .. } => "overhead",
            Self::Outage { .. } => "outage",
        }
    }

    /// Parameters as recorded with each run (the serialized spec without `kind`).
    pub fn params(&self) -> BTreeMap<String, serde_json::Value> {
        let mut value = serde_json::to_value(self).expect("spec serializes");
        let map = value.as_object_mut().expect("spec is an object");
        map.remove("kind");
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Cells of this spec: overhead expands one cell per size.
    fn expand(&self) -> Vec<ExperimentSpec> {
        match self {
            Self::Overhead { sizes, messages } => {
                sizes.iter().map(|&s| Self::Overhead { sizes: vec![s], messages: *messages }).collect()
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
            Self::Hol { streams, messages, rate_hz, size } | Self::Ordering { streams, messages, rate_hz, size } => {
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
            Self::Handshake {} => Ok(()),
            Self::Overhead { sizes, messages } => {
                positive("messages", *messages)?;
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
    /// The suite file's path as given and its text (recorded in the manifest).
    pub file: String,
    /// The suite file's contents.
    pub text: String,
    /// Every profile used, by the name written in the suite.
    pub profiles: BTreeMap<String, Profile>,
    /// The matrix, in run order.
    pub cells: Vec<Cell>,
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
        for (i, experiment) in raw.experiments.iter().enumerate() {
            let field = |name: &str| format!("experiment[{}].{name}", i + 1);
            experiment.spec.validate(&field).map_err(|(f, reason)| invalid(f, reason))?;
            let transports = match &experiment.transports {
                Some(list) => resolve_transports(list, field("transports"))?,
                None => default_transports.clone(),
            };
            let cell_profiles = match &experiment.profiles {
                Some(list) => load_profiles(list, field("profiles"))?,
                None => default_profiles.clone(),
            };
            for spec in experiment.spec.expand() {
                for profile in &cell_profiles {
                    for transport in &transports {
                        for repetition in 0..raw.repetitions {
                            let identity = format!("{}|{}|{transport}|{profile}|{repetition}", spec.kind(), serde_json::to_string(&spec.params()).expect("json"));
                            cells.push(Cell {
                                index: cells.len(),
                                seed: tlab_netem::derive_seed(raw.seed, &identity),
                                spec: spec.clone(),
                                transport: transport.clone(),
                                profile: profile.clone(),
                                repetition,
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
            file,
            text: text.to_string(),
            profiles,
            cells,
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
        // latency: 2 profiles × 2 transports × 2 reps = 8; overhead: 3 sizes × 1 profile × 4 transports × 2 reps = 24.
        assert_eq!(suite.cells.len(), 32);
        assert_eq!(suite.profiles.len(), 2);
        let seeds: std::collections::HashSet<u64> = suite.cells.iter().map(|c| c.seed).collect();
        assert_eq!(seeds.len(), suite.cells.len(), "every cell and repetition has its own seed");
        assert_eq!(parse(GOOD).unwrap().cells[5].seed, suite.cells[5].seed, "seeds are reproducible");
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
            (GOOD.replace("size = 64", "size = 64\nwobble = 3"), "wobble", "test.toml"),
        ];
        for (text, needle_a, needle_b) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("test.toml") && err.contains(needle_a) && err.contains(needle_b), "{err}");
        }
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
        let text = GOOD.replace("[\"ws\", \"grpc\"]", "[\"reliable\"]").replace("transports = [\"all\"]", "transports = [\"datagram\"]");
        let suite = parse(&text).unwrap();
        let of = |kind: &str| {
            let mut t: Vec<_> = suite.cells.iter().filter(|c| c.spec.kind() == kind).map(|c| c.transport.as_str()).collect();
            t.dedup();
            t
        };
        assert_eq!(of("overhead"), ["wt-datagram"]);
        let latency: std::collections::BTreeSet<_> = of("latency").into_iter().collect();
        assert_eq!(latency, ["grpc", "quic", "ws"].into_iter().collect());
    }
}
