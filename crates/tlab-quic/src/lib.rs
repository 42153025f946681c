//! Raw QUIC baseline transport of transport-lab (quinn): the binary [`tlab_core::frame`] directly on QUIC streams,
//! with no HTTP layer, so that experiments can separate what QUIC itself does from what HTTP/3 or WebTransport add.
//!
//! A client holds one QUIC connection (ALPN `tlab-quic/1`, TLS 1.3 with our identity and certificate pinning) on
//! its own UDP endpoint. `connect()` first runs an auth exchange on a bidirectional stream (`u16` length +
//! `auth <token>`, answered by one byte), so a wrong token fails in `connect()` with [`Error::Unauthorized`] and
//! the server never serves a stream of an unauthenticated connection. Each logical stream is then one
//! client-initiated bidirectional QUIC stream that starts with a length-prefixed open header
//! ([`tlab_core::StreamOpen::to_query`]) followed by frames both ways; finishing a direction is the QUIC FIN.
//! Refusals are stream resets / connection closes with application error codes 0x101–0x104 (see
//! docs/PROTOCOL.md). The connection migrates natively: [`tlab_core::Connection::rebind`] moves the endpoint to a
//! new UDP socket and keep-alives validate the new path.

mod client;
mod server;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use quinn::congestion::{BbrConfig, ControllerFactory, CubicConfig, NewRenoConfig};
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The congestion controller both ends of a connection run (quinn's implementations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default.
    #[default]
    Cubic,
    /// NewReno (RFC 9002).
    NewReno,
    /// BBR (quinn's experimental BBRv1).
    Bbr,
}

impl Congestion {
    fn factory(self) -> Arc<dyn ControllerFactory + Send + Sync> {
        match self {
            Self::Cubic => Arc::new(CubicConfig::default()),
            Self::NewReno => Arc::new(NewRenoConfig::default()),
            Self::Bbr => Arc::new(BbrConfig::default()),
        }
    }
}

/// The `quic` transport: N logical streams = N bidirectional QUIC streams of one connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicTransport {
    congestion: Congestion,
}

impl QuicTransport {
    /// The transport with CUBIC congestion control.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same transport running `congestion` on the connections it serves and opens.
    pub fn with_congestion(self, congestion: Congestion) -> Self {
        Self { congestion }
    }

    /// The congestion controller in use.
    pub fn congestion(&self) -> Congestion {
        self.congestion
    }
}

#[async_trait]
impl Transport for QuicTransport {
    fn name(&self) -> &'static str {
        "quic"
    }

    fn description(&self) -> &'static str {
        "raw QUIC (quinn), no HTTP: each stream is one bidirectional QUIC stream carrying an open header, then frames"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: true,
            reliable: true,
            ordered: true,
            datagrams: false,
            native_migration: true,
            native_reconnect: false,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        server::serve(config, self.congestion).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        client::connect(config, self.congestion).await
    }
}
