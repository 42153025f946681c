//! `tlab-experiments` turns transports and the link emulator into numbers: suite files ([`suite`]) describe a matrix
//! of experiments × transport modes × link profiles × repetitions; each experiment ([`workload`]) is a workload plus
//! its metrics (latency, head-of-line blocking as a controlled experiment ([`hol`]), ordering, migration, handshake, marginal wire overhead ([`overhead`]), outage); the [`runner`]
//! runs every cell with the client and the server in the emulator's two namespaces and writes a results directory, with the suite's congestion control on both sides' TCP and QUIC ([`stack`])
//! (schema in tlab-results, documented in docs/RESULTS.md). Transports are injected by name, so this crate depends
//! on no transport.

mod capture;
pub mod hol;
pub mod overhead;
pub mod browser;
pub mod runner;
pub mod schedule;
pub mod stack;
pub mod suite;
pub mod workload;

pub use suite::{Cell, ExperimentSpec, Suite, SuiteError};
