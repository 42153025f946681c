//! `tlab-netem-model` is transport-lab's sans-IO link model: a description of what a network path does to each IP
//! packet — loss (Bernoulli, Gilbert-Elliott), duplication, corruption, a rate-limited drop-tail bottleneck or a
//! Mahimahi delivery trace, delay with jitter, blackhole windows, targeted drops of chosen packets ([`targeted`]), timed schedules — plus the TOML profiles that
//! configure it ([`Profile`]), the pure profile → `tc` netem arguments mapping ([`tc`]), the IPv4 parsing and
//! rewriting behind address-change and NAT-rebinding events ([`ipv4`]), the NAT itself with its expiring mappings
//! ([`nat`]), the order-keeping jitter process ([`jitter`]) and seed derivation ([`derive_seed`]).
//! No nix, no libc, no threads, no clock reads, no sockets: the caller passes `now` (time since the link started) to
//! [`Link::push`] and [`Link::poll_release`] and sleeps until [`Link::next_wakeup`], so a link is deterministic for a
//! given seed and testable on virtual time. The only I/O is reading a profile or trace file when asked to
//! ([`Profile::load`], or a profile whose `trace` names a file). The I/O backends that drive this model over TUN
//! devices or kernel qdiscs live in `tlab-netem`.

mod impairments;
pub mod ipv4;
pub mod jitter;
mod link;
pub mod nat;
mod pipeline;
mod profile;
mod seed;
pub mod stage;
pub mod targeted;
pub mod tc;
pub mod trace;

pub use impairments::{Bottleneck, Impairments, ImpairmentsPatch, Jitter, JitterDistribution, LossModel};
pub use link::{Direction, EventKind, Link, LinkEvent, Target, TcpOnMove};
pub use pipeline::{Counters, Pipeline, Tally};
pub use stage::Release;
pub use targeted::{DropRule, RuleId, RuleStatus, TargetedDrop};
pub use profile::{Profile, ProfileError, ScheduleAction, ScheduleEntry};
pub use seed::derive_seed;
pub use trace::DeliveryTrace;

/// One IP packet as raw bytes; the model never parses it (see [`ipv4`] for the one place that does).
pub type Packet = Vec<u8>;
