//! `tlab-netem` is transport-lab's link emulator model: a sans-IO description of what a network path does to each IP
//! packet — loss (Bernoulli, Gilbert-Elliott), duplication, corruption, a rate-limited drop-tail bottleneck or a
//! Mahimahi delivery trace, delay with jitter, blackhole windows — plus the TOML profile files that configure it.
//! Nothing here reads a clock, opens a socket or spawns a thread: the caller passes `now` (time since the link
//! started) to [`Link::push`] and [`Link::poll_release`], and sleeps until [`Link::next_wakeup`]. That keeps the
//! model deterministic for a given seed and testable on virtual time; the TUN and kernel backends are thin I/O loops
//! around it ([`emulator`] for TUN, [`kernel`] for `tc` netem, [`backend`] to start either). [`ipv4`] holds the pure packet rewriting used for address-change and NAT-rebinding events.

pub mod backend;
pub mod bench;
pub mod emulator;
mod io_error;
pub mod ipv4;
pub mod namespace;
mod impairments;
mod link;
mod pipeline;
mod profile;
mod seed;
pub mod kernel;
pub mod selftest;
pub mod stage;
pub mod tc;
pub mod trace;
// The one place that needs `unsafe`: the TUNSETIFF ioctl (no safe wrapper exists in nix).
#[allow(unsafe_code)]
pub mod tun;

pub use backend::{Backend, RunningLink};
pub use emulator::{EmulatedLink, LinkCounters};
pub use kernel::KernelLink;
pub use impairments::{Bottleneck, Impairments, ImpairmentsPatch, Jitter, JitterDistribution, LossModel};
pub use link::{Direction, EventKind, Link, LinkEvent, Target};
pub use pipeline::{Counters, Pipeline, Tally};
pub use profile::{Profile, ProfileError, ScheduleAction, ScheduleEntry};
pub use seed::derive_seed;
pub use io_error::IoError;
pub use trace::DeliveryTrace;

/// One IP packet as raw bytes; the model never parses it (see [`ipv4`] for the one place that does).
pub type Packet = Vec<u8>;
