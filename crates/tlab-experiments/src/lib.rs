//! `tlab-experiments` turns transports and the link emulator into numbers: suite files ([`suite`]) describe a matrix
//! of experiments × transport modes × link profiles × repetitions; each experiment ([`workload`]) is a workload plus
//! its metrics (latency, head-of-line blocking, ordering, migration, handshake, overhead, outage); the [`runner`]
//! runs every cell with the client and the server in the emulator's two namespaces and writes a results directory
//! (schema in tlab-results, documented in docs/RESULTS.md). Transports are injected by name, so this crate depends
//! on no transport.

pub mod browser;
pub mod runner;
pub mod suite;
pub mod workload;

pub use suite::{Cell, ExperimentSpec, Suite, SuiteError};
