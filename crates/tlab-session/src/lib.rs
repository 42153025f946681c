//! `tlab-session` is transport-lab's session layer, independent of every transport: heartbeats detect a dead peer,
//! reconnects back off exponentially with jitter, and each stream resumes from the last position both sides
//! acknowledged, so a reliable stream survives a dropped connection with no loss and no duplicates.
//!
//! The protocol exists once, as the sans-IO [`machine::Session`] (both roles), tested on virtual time; the one async
//! [`driver`] runs it over a real stream for both ends; [`client::ResilientSession`] is the client as a
//! [`tlab_core::Connection`], and the server end is driven by `tlab-service`.

pub mod client;
pub mod driver;
pub mod machine;
pub mod reliable;

pub use client::{ResilientSession, SessionConfig};
pub use machine::{Event, Role, Session, Timing, Transmit};
