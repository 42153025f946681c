//! WebSocket transport of transport-lab: modes `ws` (one connection per logical stream) and `ws-mux` (all streams
//! multiplexed on one connection).
//!
//! Both run tokio-tungstenite over a TLS stream of our own (tokio-rustls, ALPN `http/1.1`). Every data or
//! session-control message is one binary WebSocket message holding exactly one [`tlab_core::frame`]; text messages
//! carry the few stream-control words (`open`, `fin`, `refused`, see [`wire`]). One server serves both modes:
//! `/tlab/ws?<StreamOpen query>` opens one stream per connection and `/tlab/ws-mux` carries many.

mod client;
mod link;
mod mux;
mod server;
mod wire;
#[cfg(test)]
mod wire_props;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The WebSocket transport in one of its two modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsTransport {
    multiplexed: bool,
}

impl WsTransport {
    /// Mode `ws`: each logical stream is its own WebSocket connection (no multiplexing, no head-of-line blocking
    /// between streams).
    pub fn per_stream() -> Self {
        Self { multiplexed: false }
    }

    /// Mode `ws-mux`: all logical streams of a [`Connection`] share one WebSocket connection.
    pub fn multiplexed() -> Self {
        Self { multiplexed: true }
    }

    /// The request path a client of this mode connects to.
    fn path(&self) -> &'static str {
        if self.multiplexed { wire::PATH_MUX } else { wire::PATH_PER_STREAM }
    }
}

#[async_trait]
impl Transport for WsTransport {
    fn name(&self) -> &'static str {
        if self.multiplexed { "ws-mux" } else { "ws" }
    }

    fn description(&self) -> &'static str {
        if self.multiplexed {
            "WebSocket over TLS: all streams multiplexed on one connection (stream id in each frame)"
        } else {
            "WebSocket over TLS: one connection per stream"
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: self.multiplexed,
            reliable: true,
            ordered: true,
            datagrams: false,
            native_migration: false,
            native_reconnect: false,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        Ok(Box::new(server::WsServer::start(config, self.path()).await?))
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        if self.multiplexed {
            Ok(Box::new(client::MuxConnection::connect(config).await?))
        } else {
            Ok(Box::new(client::PerStreamConnection::connect(config).await?))
        }
    }
}
