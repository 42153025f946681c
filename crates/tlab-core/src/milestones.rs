//! Handshake milestones: when each step of a client's connection setup completed, on the monotonic clock of
//! [`crate::clock::monotonic_ns`] (the clock of `Message::sent_at`). A transport records what its protocol has and
//! its library lets it see; a step it cannot see, or that its protocol lacks, stays `None` ("unknown").
//!
//! The steps are those of the first network connection a [`crate::Connection`] makes: at `connect` for the
//! multiplexed modes, at the first `open_stream` for the modes that dial one connection per stream.

use std::sync::{Arc, Mutex};

use crate::clock::monotonic_ns;

/// Monotonic nanoseconds of each setup step of one connection; `None` = unknown or not part of this protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Milestones {
    /// The TCP three-way handshake completed (`connect` returned).
    pub tcp_connected: Option<u64>,
    /// The TLS handshake over TCP completed (the client sent its Finished; application data may follow).
    pub tls_done: Option<u64>,
    /// The QUIC handshake completed on the client (quinn's `Connecting` resolved: 1-RTT keys and the server's
    /// Finished; the client may send application data. RFC 9001 *confirmation*, the server's HANDSHAKE_DONE,
    /// arrives half a round trip later and blocks nothing).
    pub quic_handshake: Option<u64>,
    /// The first response of the layer above transport security: the HTTP response headers of the first request
    /// (SSE, HTTP/3, gRPC), the WebSocket `101`, the WebTransport CONNECT's `200`, the tcp-tls status byte.
    pub first_response: Option<u64>,
}

/// One step of [`Milestones`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// [`Milestones::tcp_connected`].
    TcpConnected,
    /// [`Milestones::tls_done`].
    TlsDone,
    /// [`Milestones::quic_handshake`].
    QuicHandshake,
    /// [`Milestones::first_response`].
    FirstResponse,
}

/// Where a client records its milestones, shared by the tasks that reach them; each step keeps its first time.
#[derive(Debug, Clone, Default)]
pub struct MilestoneLog(Arc<Mutex<Milestones>>);

impl MilestoneLog {
    /// Records `step` as reached now, unless it was reached before (a later connection of the same client does
    /// not move it).
    pub fn mark(&self, step: Step) {
        let now = monotonic_ns();
        let mut milestones = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match step {
            Step::TcpConnected => &mut milestones.tcp_connected,
            Step::TlsDone => &mut milestones.tls_done,
            Step::QuicHandshake => &mut milestones.quic_handshake,
            Step::FirstResponse => &mut milestones.first_response,
        };
        slot.get_or_insert(now);
    }

    /// What has been recorded so far.
    pub fn get(&self) -> Milestones {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_keeps_its_first_time_and_others_stay_unknown() {
        let log = MilestoneLog::default();
        assert_eq!(log.get(), Milestones::default());
        log.mark(Step::TcpConnected);
        let first = log.get().tcp_connected.expect("marked");
        log.clone().mark(Step::TlsDone);
        log.mark(Step::TcpConnected);
        let got = log.get();
        assert_eq!(got.tcp_connected, Some(first), "a second connection does not move the first one's time");
        assert!(got.tls_done.expect("marked by a clone") >= first);
        assert_eq!((got.quic_handshake, got.first_response), (None, None));
    }
}
