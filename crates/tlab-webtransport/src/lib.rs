//! WebTransport transport of transport-lab (wtransport, WebTransport over HTTP/3 on quinn): modes `wt-stream`
//! (each logical stream is one reliable WebTransport bidirectional stream of one session) and `wt-datagram` (every
//! message is one unreliable, unordered WebTransport datagram; streams are told apart by the frame's stream id).
//!
//! The session is an extended CONNECT (`:protocol = webtransport`) to `https://HOST:PORT/tlab/wt`; the token travels
//! as `authorization: Bearer <token>` or, for browsers, as `?token=<token>`; `?datagrams=1` makes a datagram session.
//! One server serves both modes. The certificate is our ECDSA P-256 identity valid 13 days, so a browser can pin it
//! with `serverCertificateHashes`; the Rust client pins it the same way (`with_server_certificate_hashes`).
//!
//! Connection migration: QUIC lets the connection survive a client address change (NAT rebinding) by itself, so
//! `native_migration` is true; [`tlab_core::Connection::rebind`] (moving the client socket on purpose) is
//! unsupported because wtransport 0.7 does not expose its client endpoint's `rebind`.

mod client;
mod datagram;
mod server;
mod stream;
mod wire;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The congestion controller of both ends' QUIC connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC (the default, like Linux TCP's default).
    #[default]
    Cubic,
    /// NewReno.
    NewReno,
    /// BBR (quinn's experimental implementation).
    Bbr,
}

/// The WebTransport transport in one of its two modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebTransport {
    datagrams: bool,
    congestion: Congestion,
}

impl WebTransport {
    /// Mode `wt-stream`: each logical stream is one WebTransport bidirectional stream of one session.
    pub fn streams() -> Self {
        Self { datagrams: false, congestion: Congestion::default() }
    }

    /// Mode `wt-datagram`: every message is one datagram of one session (echo streams only).
    pub fn datagrams() -> Self {
        Self { datagrams: true, congestion: Congestion::default() }
    }

    /// The same mode with another congestion controller (CUBIC by default).
    pub fn with_congestion(self, congestion: Congestion) -> Self {
        Self { congestion, ..self }
    }
}

#[async_trait]
impl Transport for WebTransport {
    fn name(&self) -> &'static str {
        if self.datagrams { "wt-datagram" } else { "wt-stream" }
    }

    fn description(&self) -> &'static str {
        if self.datagrams {
            "WebTransport over HTTP/3: every message one datagram of one session (unreliable, unordered)"
        } else {
            "WebTransport over HTTP/3: one bidirectional stream per logical stream, all in one session"
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: true,
            reliable: !self.datagrams,
            ordered: !self.datagrams,
            datagrams: self.datagrams,
            native_migration: true,
            native_reconnect: false,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        Ok(Box::new(server::WtServer::start(config, self.congestion)?))
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        Ok(Box::new(client::WtConnection::connect(config, self.datagrams, self.congestion).await?))
    }
}
