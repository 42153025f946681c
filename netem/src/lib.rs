//! `tlab-netem` is transport-lab's link emulator: the I/O backends that carry real kernel TCP/UDP between a client
//! and a server network namespace through the sans-IO link model of `tlab-netem-model`. This crate does the I/O the
//! model leaves out — it creates namespaces ([`namespace`]), opens TUN devices ([`tun`]), spawns the forwarding and
//! control threads and reads the clock to drive the model ([`emulator`]), records how well the link kept its schedule
//! ([`health`]), captures both sides of the link to pcap files ([`capture`]), shapes a veth pair with `tc`
//! ([`kernel`]), picks one of the two ([`backend`]) and measures the emulator ([`bench`](mod@bench), [`selftest`]). It
//! re-exports the whole model, so `tlab_netem::Profile`, `tlab_netem::Link` and `tlab_netem::ipv4` keep working.

pub mod backend;
pub mod bench;
pub mod capture;
pub mod emulator;
pub mod health;
mod io_error;
pub mod kernel;
pub mod namespace;
pub mod selftest;
// The one place that needs `unsafe`: the TUNSETIFF ioctl (no safe wrapper exists in nix).
#[allow(unsafe_code)]
pub mod tun;

pub use backend::{Backend, RunningLink};
pub use emulator::{EmulatedLink, LinkCounters};
pub use io_error::IoError;
pub use kernel::KernelLink;
// The whole model (its modules `ipv4`, `stage`, `tc`, `trace` included), so that users need only this crate.
pub use tlab_netem_model::*;
