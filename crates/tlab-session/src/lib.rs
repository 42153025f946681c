//! `tlab-session` is transport-lab's session layer, independent of every transport: heartbeats detect a dead peer,
//! reconnects back off exponentially with jitter, and each stream resumes from the last position both sides
//! acknowledged, so a reliable stream survives a dropped connection with no loss and no duplicates.

pub mod client;
pub mod reliable;

pub use client::{ResilientSession, SessionConfig};
