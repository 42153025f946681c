//! What a transport can do, as data: printed by `tlab list` and consulted by experiments.

use serde::Serialize;

/// Capabilities of one transport mode. A transport never fakes one: asking for something it lacks is
/// [`crate::Error::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Both client→server and server→client messages on one stream.
    pub bidirectional: bool,
    /// Several logical streams share one connection.
    pub multiplexed: bool,
    /// Every message is delivered (or the connection fails).
    pub reliable: bool,
    /// Messages of one stream arrive in order.
    pub ordered: bool,
    /// Unreliable datagrams.
    pub datagrams: bool,
    /// The connection survives a client address change by itself.
    pub native_migration: bool,
    /// The protocol reconnects and resumes by itself (e.g. SSE's Last-Event-ID).
    pub native_reconnect: bool,
}
