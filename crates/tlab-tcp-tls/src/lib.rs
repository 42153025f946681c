//! Raw TCP + TLS baseline transport of transport-lab: mode `tcp-tls`. Each logical stream is its own TLS-over-TCP
//! connection (tokio-rustls, no ALPN) carrying [`tlab_core::frame`]s back to back, with nothing in between:
//! no HTTP, no WebSocket. It is what the TCP-based modes cost at least, so experiments can tell what their framing
//! and HTTP layers add. The connection opens with a header carrying the token and the stream's open query; the
//! server answers one status byte ([`wire`] and docs/PROTOCOL.md have the exact bytes).

mod client;
mod server;
mod stream;
mod wire;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The `tcp-tls` transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpTlsTransport;

impl TcpTlsTransport {
    /// Mode `tcp-tls`.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Transport for TcpTlsTransport {
    fn name(&self) -> &'static str {
        "tcp-tls"
    }

    fn description(&self) -> &'static str {
        "TLS over TCP, no HTTP: one connection per stream carrying binary frames directly (the TCP baseline)"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { bidirectional: true, reliable: true, ordered: true, ..Capabilities::NONE }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        Ok(Box::new(server::TcpTlsServer::start(config).await?))
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        Ok(Box::new(client::TcpTlsConnection::connect(config).await?))
    }
}
