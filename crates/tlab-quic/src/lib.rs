//! Raw QUIC baseline transport of transport-lab (quinn): the binary [`tlab_core::frame`] directly on QUIC streams,
//! with no HTTP layer, so that experiments can separate what QUIC itself does from what HTTP/3 or WebTransport add.
//!
//! A client holds one QUIC connection (ALPN `tlab-quic/1`, TLS 1.3 with our identity and certificate pinning) on
//! its own UDP endpoint. Each logical stream is one client-initiated bidirectional QUIC stream that starts with two
//! length-prefixed headers, the token and the open query ([`tlab_core::StreamOpen::to_query`]), followed by frames
//! both ways: authentication costs no round trip of its own, and a wrong token closes the connection (0x101), which
//! the first stream reports as [`Error::Unauthorized`]; the server serves no stream whose token it has not checked; finishing a direction is the QUIC FIN.
//! Refusals are stream resets / connection closes with application error codes 0x101–0x104 (see
//! docs/PROTOCOL.md). The connection migrates natively: [`tlab_core::Connection::rebind`] moves the endpoint to a
//! new UDP socket and keep-alives validate the new path. The congestion controller, keep-alive and idle timeout, the
//! open header and the stream count come from `tlab-quic-common`.

mod client;
mod server;
mod wire;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The `quic` transport: N logical streams = N bidirectional QUIC streams of one connection. Both ends run the
/// congestion controller their config names ([`ServerConfig::congestion`], [`ClientConfig::congestion`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicTransport;

impl QuicTransport {
    /// The transport.
    pub fn new() -> Self {
        Self
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
        server::serve(config).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        client::connect(config).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tlab_quic_common::testing::assert_each_end_runs_its_own_controller;
    use tlab_testkit::CountingService;

    use crate::{client, server};

    #[tokio::test]
    async fn both_ends_run_the_congestion_controller_of_their_config() {
        let configs = |s: &_, c: &_| (server::endpoint_config(s).unwrap(), client::endpoint_config(c).unwrap());
        assert_each_end_runs_its_own_controller(Arc::new(CountingService::default()), "quic://127.0.0.1:1", configs).await;
    }
}
