//! Profile files: one TOML document describing both directions of a link and its schedule.
//!
//! ```toml
//! name = "lossy-2"
//! description = "2 % random loss each way, 20 ms one-way delay"
//! [link]                 # both directions
//! delay_ms = 20          # fixed one-way delay, the minimum
//! jitter = { ms = 2, distribution = "normal", reorder = false }   # mean extra delay; uniform | normal | pareto
//! loss = { model = "bernoulli", p = 0.02 }   # or "none", or "gilbert-elliott" with p, r, loss_good, loss_bad
//! rate_mbit = 50         # bottleneck rate …
//! # trace = "../traces/lte-down.trace"       # … or a Mahimahi trace, relative to this file (not both)
//! queue_bytes = 150000   # drop-tail bound of the bottleneck queue (default: unbounded)
//! duplicate = 0.0
//! corrupt = 0.0
//! [uplink]               # overrides for client → server, same keys
//! [downlink]             # overrides for server → client, same keys
//! [[schedule]]
//! at_s = 5
//! direction = "both"     # or "uplink" / "downlink"
//! set = { loss = { model = "bernoulli", p = 0.05 } }   # same keys as [link], applied on top of current settings
//! [[schedule]]
//! at_s = 8
//! blackhole_s = 2        # drop everything entering the link during [8 s, 10 s)
//! [[schedule]]
//! at_s = 10
//! event = "address-change"   # reported to the I/O layer by `Link::poll_event`
//! tcp = "abort"              # abort the client's TCP connections at once (default), or "silent"
//! [[schedule]]
//! at_s = 12
//! event = "nat-rebind"       # the client's flows get a new public address and port
//! old_mapping_s = 0          # how long packets to the old mapping still arrive (default 0: gone at once)
//! ```
//! Each `[[schedule]]` entry has exactly one of `set`, `blackhole_s`, `event`; `tcp` goes only with an address
//! change, `old_mapping_s` only with a NAT rebinding.
//!
//! Jitter: with `reorder = true` every packet draws its extra delay independently (packets overtake each other).
//! With `reorder = false` (the default) the extra delay is one process of time — a value per slot of 20 × the
//! mean, its steps down smoothed so the delay never shrinks faster than time passes — so every packet's extra
//! delay has the configured distribution at any packet rate, and order is kept; packets within a slot see nearly
//! the same delay (see [`crate::jitter`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::impairments::{Bottleneck, ImpairmentsPatch, Impairments, Jitter, JitterDistribution, LossModel};
use crate::link::{EventKind, Target, TcpOnMove};
use crate::trace::{DeliveryTrace, TraceError};

/// Why a profile could not be loaded. Every variant names where the profile came from.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profile file could not be read.
    #[error("{}: cannot read profile: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not TOML or does not fit the schema: unknown key, wrong type, missing field (the message names
    /// the key and its line).
    #[error("{origin}: {source}")]
    Syntax {
        /// Where the profile came from.
        origin: String,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// A field's value is out of range or conflicts with another field.
    #[error("{origin}: field `{field}`: {reason}")]
    Invalid {
        /// Where the profile came from.
        origin: String,
        /// Dotted path of the field, e.g. `downlink.loss.p` or `schedule#2.at_s` (entries count from 1).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trace file named by the profile could not be read.
    #[error("{origin}: field `{field}`: cannot read trace {}: {source}", path.display())]
    TraceRead {
        /// Where the profile came from.
        origin: String,
        /// Dotted path of the `trace` field.
        field: String,
        /// The trace file as resolved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A trace file named by the profile is not a valid Mahimahi trace.
    #[error("{origin}: field `{field}`: trace {}: {source}", path.display())]
    TraceFormat {
        /// Where the profile came from.
        origin: String,
        /// Dotted path of the `trace` field.
        field: String,
        /// The trace file as resolved.
        path: PathBuf,
        /// What is wrong with the trace.
        source: TraceError,
    },
    /// No shipped profile has this name.
    #[error("no built-in profile named `{name}` (available: {})", builtin_list())]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
    },
}

/// A validated link profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Short name, e.g. `lossy-2`.
    pub name: String,
    /// One line for humans.
    pub description: String,
    /// Client → server settings at time zero (`[link]` with `[uplink]` on top).
    pub uplink: Impairments,
    /// Server → client settings at time zero (`[link]` with `[downlink]` on top).
    pub downlink: Impairments,
    /// Timed changes and events, sorted by time.
    pub schedule: Vec<ScheduleEntry>,
    /// Where it came from: a file path or `builtin:<name>`.
    pub origin: String,
    /// The TOML text it was parsed from, for run manifests.
    pub source: String,
}

/// One entry of a profile's schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleEntry {
    /// Time since the link started.
    pub at: Duration,
    /// What happens then.
    pub action: ScheduleAction,
}

/// What a schedule entry does.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleAction {
    /// Apply a partial change to the impairments of `target`.
    Change {
        /// Affected directions.
        target: Target,
        /// The fields that change.
        patch: ImpairmentsPatch,
    },
    /// Drop every packet entering `target` for `duration`.
    Blackhole {
        /// Affected directions.
        target: Target,
        /// Length of the outage.
        duration: Duration,
    },
    /// Report an event to the I/O layer.
    Event(EventKind),
}

/// Profiles shipped in `netem/profiles/`, embedded so they work wherever the binary runs.
const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("clean", include_str!("../../profiles/clean.toml")),
    ("lan", include_str!("../../profiles/lan.toml")),
    ("wan-50ms", include_str!("../../profiles/wan-50ms.toml")),
    ("lossy-1", include_str!("../../profiles/lossy-1.toml")),
    ("lossy-2", include_str!("../../profiles/lossy-2.toml")),
    ("lossy-5", include_str!("../../profiles/lossy-5.toml")),
    ("lossy-10", include_str!("../../profiles/lossy-10.toml")),
    ("bursty", include_str!("../../profiles/bursty.toml")),
    ("jittery-reorder", include_str!("../../profiles/jittery-reorder.toml")),
    ("3g", include_str!("../../profiles/3g.toml")),
    ("lte", include_str!("../../profiles/lte.toml")),
    ("satellite", include_str!("../../profiles/satellite.toml")),
    ("blackhole-2s", include_str!("../../profiles/blackhole-2s.toml")),
    ("address-change", include_str!("../../profiles/address-change.toml")),
    ("nat-rebind", include_str!("../../profiles/nat-rebind.toml")),
];

fn builtin_list() -> String {
    Profile::builtin_names().collect::<Vec<_>>().join(", ")
}

/// Traces shipped in `netem/traces/`, keyed by the path the shipped profiles use (relative to `profiles/`).
const BUILTIN_TRACES: &[(&str, &str)] = &[
    ("../traces/const-12mbit.trace", include_str!("../../traces/const-12mbit.trace")),
    ("../traces/lte-down.trace", include_str!("../../traces/lte-down.trace")),
    ("../traces/lte-up.trace", include_str!("../../traces/lte-up.trace")),
];

impl Profile {
    /// Loads a profile file; `trace` paths are relative to the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
        Self::from_str(&text, path)
    }

    /// Parses profile text; `origin` names it in errors and its directory anchors relative `trace` paths.
    pub fn from_str(text: &str, origin: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let origin = origin.as_ref();
        let base = origin.parent().unwrap_or(Path::new("")).to_owned();
        Parser { origin: origin.display().to_string(), traces: TraceSource::Dir(base) }.parse(text)
    }

    /// A profile shipped with the crate (see [`Profile::builtin_names`]).
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        let (_, text) = BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::UnknownBuiltin { name: name.to_owned() })?;
        Parser { origin: format!("builtin:{name}"), traces: TraceSource::Builtin }.parse(text)
    }

    /// Names of the shipped profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN_PROFILES.iter().map(|(n, _)| *n)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    link: RawLink,
    #[serde(default)]
    uplink: RawLink,
    #[serde(default)]
    downlink: RawLink,
    #[serde(default)]
    schedule: Vec<RawScheduleEntry>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    delay_ms: Option<f64>,
    jitter: Option<RawJitter>,
    loss: Option<RawLoss>,
    rate_mbit: Option<f64>,
    trace: Option<String>,
    queue_bytes: Option<i64>,
    duplicate: Option<f64>,
    corrupt: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJitter {
    ms: f64,
    #[serde(default)]
    distribution: JitterDistribution,
    #[serde(default)]
    reorder: bool,
}

#[derive(Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
enum RawLoss {
    None,
    Bernoulli {
        p: f64,
    },
    GilbertElliott {
        p: f64,
        r: f64,
        #[serde(default)]
        loss_good: f64,
        #[serde(default = "one")]
        loss_bad: f64,
    },
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduleEntry {
    at_s: f64,
    direction: Option<Target>,
    set: Option<RawLink>,
    blackhole_s: Option<f64>,
    event: Option<RawEvent>,
    tcp: Option<TcpOnMove>,
    old_mapping_s: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawEvent {
    AddressChange,
    NatRebind,
}

/// Where `trace = "…"` paths are looked up.
enum TraceSource {
    Dir(PathBuf),
    Builtin,
}

/// Validation context: turns raw fields into typed settings, naming the field on error.
struct Parser {
    origin: String,
    traces: TraceSource,
}

impl Parser {
    fn parse(&self, text: &str) -> Result<Profile, ProfileError> {
        let raw: RawProfile = toml::from_str(text)
            .map_err(|e| ProfileError::Syntax { origin: self.origin.clone(), source: Box::new(e) })?;
        let link = self.patch("link", &raw.link)?;
        let base = link.apply_to(&Impairments::default());
        let uplink = self.patch("uplink", &raw.uplink)?.apply_to(&base);
        let downlink = self.patch("downlink", &raw.downlink)?.apply_to(&base);
        let mut schedule = raw
            .schedule
            .iter()
            .enumerate()
            .map(|(i, entry)| self.schedule_entry(&format!("schedule#{}", i + 1), entry))
            .collect::<Result<Vec<_>, _>>()?;
        schedule.sort_by_key(|e| e.at); // stable: equal times keep file order
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            uplink,
            downlink,
            schedule,
            origin: self.origin.clone(),
            source: text.to_owned(),
        })
    }

    fn invalid(&self, field: &str, reason: impl Into<String>) -> ProfileError {
        ProfileError::Invalid { origin: self.origin.clone(), field: field.to_owned(), reason: reason.into() }
    }

    fn probability(&self, field: &str, p: f64) -> Result<f64, ProfileError> {
        if (0.0..=1.0).contains(&p) {
            Ok(p)
        } else {
            Err(self.invalid(field, format!("must be between 0 and 1, got {p}")))
        }
    }

    /// A non-negative, finite number of `unit`s (seconds per unit given) as a duration.
    fn duration(&self, field: &str, value: f64, seconds_per_unit: f64) -> Result<Duration, ProfileError> {
        if !value.is_finite() || value < 0.0 {
            return Err(self.invalid(field, format!("must be a finite number ≥ 0, got {value}")));
        }
        Duration::try_from_secs_f64(value * seconds_per_unit)
            .map_err(|_| self.invalid(field, format!("{value} is too large for a duration")))
    }

    fn patch(&self, section: &str, raw: &RawLink) -> Result<ImpairmentsPatch, ProfileError> {
        let field = |name: &str| format!("{section}.{name}");
        let mut patch = ImpairmentsPatch::default();
        if let Some(ms) = raw.delay_ms {
            patch.delay = Some(self.duration(&field("delay_ms"), ms, 1e-3)?);
        }
        if let Some(j) = &raw.jitter {
            let mean = self.duration(&field("jitter.ms"), j.ms, 1e-3)?;
            patch.jitter =
                Some((!mean.is_zero()).then_some(Jitter { mean, distribution: j.distribution, reorder: j.reorder }));
        }
        if let Some(loss) = &raw.loss {
            patch.loss = Some(match *loss {
                RawLoss::None => LossModel::None,
                RawLoss::Bernoulli { p } => LossModel::Bernoulli { p: self.probability(&field("loss.p"), p)? },
                RawLoss::GilbertElliott { p, r, loss_good, loss_bad } => LossModel::GilbertElliott {
                    p: self.probability(&field("loss.p"), p)?,
                    r: self.probability(&field("loss.r"), r)?,
                    loss_good: self.probability(&field("loss.loss_good"), loss_good)?,
                    loss_bad: self.probability(&field("loss.loss_bad"), loss_bad)?,
                },
            });
        }
        if let Some(d) = raw.duplicate {
            patch.duplicate = Some(self.probability(&field("duplicate"), d)?);
        }
        if let Some(c) = raw.corrupt {
            patch.corrupt = Some(self.probability(&field("corrupt"), c)?);
        }
        match (raw.rate_mbit, &raw.trace) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(&field("trace"), "conflicts with `rate_mbit`: a direction has one bottleneck"));
            }
            (Some(mbit), None) => {
                let bits = mbit * 1e6;
                if !bits.is_finite() || bits < 1.0 || bits > u64::MAX as f64 {
                    return Err(self.invalid(&field("rate_mbit"), format!("must be a positive rate, got {mbit}")));
                }
                patch.bottleneck = Some(Bottleneck::Rate { bits_per_second: bits.round() as u64 });
            }
            (None, Some(path)) => patch.bottleneck = Some(Bottleneck::Trace(self.trace(&field("trace"), path)?)),
            (None, None) => {}
        }
        if let Some(q) = raw.queue_bytes {
            let min = i64::from(DeliveryTrace::BYTES_PER_OPPORTUNITY);
            if q < min {
                let reason = format!("must be at least {min} so a full-size packet fits, got {q}");
                return Err(self.invalid(&field("queue_bytes"), reason));
            }
            patch.queue_bytes = Some(Some(q as u64));
        }
        Ok(patch)
    }

    fn trace(&self, field: &str, path: &str) -> Result<Arc<DeliveryTrace>, ProfileError> {
        let (resolved, text) = match &self.traces {
            TraceSource::Dir(base) => {
                let resolved = base.join(path);
                let text = std::fs::read_to_string(&resolved);
                (resolved, text)
            }
            TraceSource::Builtin => {
                let text = BUILTIN_TRACES.iter().find(|(p, _)| *p == path).map(|(_, t)| (*t).to_owned());
                (PathBuf::from(path), text.ok_or_else(|| std::io::ErrorKind::NotFound.into()))
            }
        };
        let text = text.map_err(|source| ProfileError::TraceRead {
            origin: self.origin.clone(),
            field: field.to_owned(),
            path: resolved.clone(),
            source,
        })?;
        let trace = DeliveryTrace::parse(&text).map_err(|source| ProfileError::TraceFormat {
            origin: self.origin.clone(),
            field: field.to_owned(),
            path: resolved,
            source,
        })?;
        Ok(Arc::new(trace))
    }

    fn event(&self, name: &str, kind: RawEvent, raw: &RawScheduleEntry) -> Result<EventKind, ProfileError> {
        Ok(match kind {
            RawEvent::AddressChange => EventKind::AddressChange { tcp: raw.tcp.unwrap_or_default() },
            RawEvent::NatRebind => EventKind::NatRebind {
                old_mapping: match raw.old_mapping_s {
                    Some(secs) => self.duration(&format!("{name}.old_mapping_s"), secs, 1.0)?,
                    None => Duration::ZERO,
                },
            },
        })
    }

    fn schedule_entry(&self, name: &str, raw: &RawScheduleEntry) -> Result<ScheduleEntry, ProfileError> {
        let at = self.duration(&format!("{name}.at_s"), raw.at_s, 1.0)?;
        let target = raw.direction.unwrap_or_default();
        let action = match (&raw.set, raw.blackhole_s, raw.event) {
            (Some(set), None, None) => {
                ScheduleAction::Change { target, patch: self.patch(&format!("{name}.set"), set)? }
            }
            (None, Some(secs), None) => {
                let duration = self.duration(&format!("{name}.blackhole_s"), secs, 1.0)?;
                if duration.is_zero() {
                    return Err(self.invalid(&format!("{name}.blackhole_s"), "must be greater than 0"));
                }
                ScheduleAction::Blackhole { target, duration }
            }
            (None, None, Some(kind)) => {
                if raw.direction.is_some() {
                    let reason = "events concern the client, not a direction";
                    return Err(self.invalid(&format!("{name}.direction"), reason));
                }
                ScheduleAction::Event(self.event(name, kind, raw)?)
            }
            _ => return Err(self.invalid(name, "needs exactly one of `set`, `blackhole_s`, `event`")),
        };
        if !matches!(raw.event, Some(RawEvent::AddressChange)) && raw.tcp.is_some() {
            return Err(self.invalid(&format!("{name}.tcp"), "goes only with `event = \"address-change\"`"));
        }
        if !matches!(raw.event, Some(RawEvent::NatRebind)) && raw.old_mapping_s.is_some() {
            return Err(self.invalid(&format!("{name}.old_mapping_s"), "goes only with `event = \"nat-rebind\"`"));
        }
        Ok(ScheduleEntry { at, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Profile::from_str(text, "dir/bad.toml").unwrap_err().to_string()
    }

    fn assert_mentions(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "`{message}` should mention `{part}`");
        }
    }

    #[test]
    fn full_example_parses_with_overrides_and_schedule() {
        let p = Profile::from_str(
            r#"
            name = "demo"
            description = "d"
            [link]
            delay_ms = 20
            jitter = { ms = 2, distribution = "pareto", reorder = true }
            loss = { model = "gilbert-elliott", p = 0.01, r = 0.3 }
            rate_mbit = 50
            queue_bytes = 150000
            [downlink]
            delay_ms = 30
            loss = { model = "none" }
            [[schedule]]
            at_s = 8
            blackhole_s = 2
            direction = "uplink"
            [[schedule]]
            at_s = 5.5
            set = { loss = { model = "bernoulli", p = 0.05 }, jitter = { ms = 0 } }
            "#,
            "demo.toml",
        )
        .unwrap();
        assert_eq!(p.uplink.delay, Duration::from_millis(20));
        assert_eq!(p.downlink.delay, Duration::from_millis(30));
        assert_eq!(p.uplink.loss, LossModel::GilbertElliott { p: 0.01, r: 0.3, loss_good: 0.0, loss_bad: 1.0 });
        assert_eq!(p.downlink.loss, LossModel::None);
        assert_eq!(p.downlink.bottleneck, Bottleneck::Rate { bits_per_second: 50_000_000 });
        assert_eq!(p.uplink.jitter.map(|j| (j.distribution, j.reorder)), Some((JitterDistribution::Pareto, true)));
        // Sorted by time; `jitter = { ms = 0 }` removes jitter.
        assert_eq!(p.schedule[0].at, Duration::from_millis(5500));
        let ScheduleAction::Change { target: Target::Both, patch } = &p.schedule[0].action else { panic!() };
        assert_eq!(patch.jitter, Some(None));
        assert_eq!(
            p.schedule[1].action,
            ScheduleAction::Blackhole { target: Target::Uplink, duration: Duration::from_secs(2) }
        );
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_reason() {
        assert_mentions(&error("name = \"x\"\n[link]\ndelay = 5\n"), &["dir/bad.toml", "unknown field `delay`"]);
        assert_mentions(&error("name = \"x\"\n[link]\ndelay_ms = -5\n"), &["dir/bad.toml", "`link.delay_ms`", "≥ 0"]);
        assert_mentions(
            &error("name = \"x\"\n[uplink]\nloss = { model = \"bernoulli\", p = 1.5 }\n"),
            &["dir/bad.toml", "`uplink.loss.p`", "between 0 and 1, got 1.5"],
        );
        assert_mentions(
            &error("name = \"x\"\n[link]\nloss = { model = \"bernoulli\", q = 0.1 }\n"),
            &["unknown field `q`"],
        );
        assert_mentions(&error("name = \"x\"\n[[schedule]]\nat_s = \"5s\"\nblackhole_s = 1\n"), &["at_s"]);
        assert_mentions(
            &error("name = \"x\"\n[[schedule]]\nat_s = -1\nblackhole_s = 1\n"),
            &["`schedule#1.at_s`", "≥ 0"],
        );
        assert_mentions(
            &error("name = \"x\"\n[[schedule]]\nat_s = 1\nblackhole_s = 1\nevent = \"nat-rebind\"\n"),
            &["`schedule#1`", "exactly one of"],
        );
        assert_mentions(&error("name = \"x\"\n[link]\nrate_mbit = 0\n"), &["`link.rate_mbit`"]);
        assert_mentions(&error("name = \"x\"\n[link]\nqueue_bytes = 100\n"), &["`link.queue_bytes`", "1500"]);
        assert_mentions(
            &error("name = \"x\"\n[link]\nrate_mbit = 5\ntrace = \"t.trace\"\n"),
            &["`link.trace`", "conflicts with `rate_mbit`"],
        );
        assert_mentions(
            &error("name = \"x\"\n[downlink]\ntrace = \"missing.trace\"\n"),
            &["`downlink.trace`", "dir/missing.trace"],
        );
    }

    #[test]
    fn events_carry_their_tcp_behaviour_and_old_mapping_time() {
        let p = Profile::from_str(
            "name = \"e\"\n[[schedule]]\nat_s = 1\nevent = \"address-change\"\ntcp = \"silent\"\n\
             [[schedule]]\nat_s = 2\nevent = \"nat-rebind\"\nold_mapping_s = 2.5\n\
             [[schedule]]\nat_s = 3\nevent = \"address-change\"\n[[schedule]]\nat_s = 4\nevent = \"nat-rebind\"\n",
            "e.toml",
        )
        .unwrap();
        let events: Vec<EventKind> = p
            .schedule
            .iter()
            .map(|e| match e.action {
                ScheduleAction::Event(kind) => kind,
                _ => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(
            events,
            [
                EventKind::AddressChange { tcp: TcpOnMove::Silent },
                EventKind::NatRebind { old_mapping: Duration::from_millis(2500) },
                EventKind::AddressChange { tcp: TcpOnMove::Abort },
                EventKind::NatRebind { old_mapping: Duration::ZERO },
            ]
        );
        let entry = |extra: &str| format!("name = \"x\"\n[[schedule]]\nat_s = 1\n{extra}\n");
        assert_mentions(&error(&entry("event = \"nat-rebind\"\ntcp = \"silent\"")), &["`schedule#1.tcp`", "address-change"]);
        assert_mentions(
            &error(&entry("event = \"address-change\"\nold_mapping_s = 1")),
            &["`schedule#1.old_mapping_s`", "nat-rebind"],
        );
        assert_mentions(&error(&entry("event = \"nat-rebind\"\nold_mapping_s = -1")), &["`schedule#1.old_mapping_s`", "≥ 0"]);
        assert_mentions(&error(&entry("event = \"address-change\"\ntcp = \"reset\"")), &["unknown variant `reset`"]);
    }

    #[test]
    fn traces_resolve_relative_to_the_profile_file() {
        let dir = std::env::temp_dir().join(format!("tlab-netem-profile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("traces")).unwrap();
        std::fs::write(dir.join("traces/t.trace"), "1\n2\n").unwrap();
        std::fs::write(dir.join("bad.trace"), "3\n1\n").unwrap();
        std::fs::write(dir.join("p.toml"), "name = \"p\"\n[link]\ntrace = \"traces/t.trace\"\n").unwrap();
        let p = Profile::load(dir.join("p.toml")).unwrap();
        let Bottleneck::Trace(t) = &p.uplink.bottleneck else { panic!("trace expected") };
        assert_eq!(t.timestamps_ms(), &[1, 2]);
        let err = Profile::from_str("name = \"p\"\n[link]\ntrace = \"bad.trace\"\n", dir.join("q.toml")).unwrap_err();
        assert!(matches!(err, ProfileError::TraceFormat { source: TraceError::Decreasing { line: 2, value: 1 }, .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_builtin_lists_the_available_ones() {
        assert_mentions(&Profile::builtin("nope").unwrap_err().to_string(), &["`nope`", "lossy-2", "satellite"]);
    }
}
