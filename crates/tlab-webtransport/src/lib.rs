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

/// The WebTransport transport in one of its two modes. Both ends run the congestion controller their config names
/// ([`ServerConfig::congestion`], [`ClientConfig::congestion`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebTransport {
    datagrams: bool,
}

impl WebTransport {
    /// Mode `wt-stream`: each logical stream is one WebTransport bidirectional stream of one session.
    pub fn streams() -> Self {
        Self { datagrams: false }
    }

    /// Mode `wt-datagram`: every message is one datagram of one session (echo streams only).
    pub fn datagrams() -> Self {
        Self { datagrams: true }
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
        Ok(Box::new(server::WtServer::start(config)?))
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        Ok(Box::new(client::WtConnection::connect(config, self.datagrams).await?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tlab_quic_common::testing::assert_each_end_runs_its_own_controller;
    use tlab_testkit::CountingService;

    use crate::{client, server};

    /// wtransport runs on quinn: its endpoint configurations carry quinn's, which are connected here directly.
    #[tokio::test]
    async fn both_ends_run_the_congestion_controller_of_their_config() {
        let configs = |s: &_, c: &_| {
            let (server, client) = (server::endpoint_config(s).unwrap(), client::endpoint_config(c).unwrap());
            (server.quic_config().clone(), client.quic_config().clone())
        };
        assert_each_end_runs_its_own_controller(Arc::new(CountingService::default()), "https://127.0.0.1:1/tlab/wt", configs)
            .await;
    }
}
