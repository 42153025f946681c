//! gRPC transport of transport-lab (tonic): each logical stream is one RPC on a shared HTTP/2 channel.
//!
//! A client holds one tonic channel, i.e. one TLS + HTTP/2 connection; [`tlab_core::Connection::open_stream`]
//! starts one RPC of the `tlab.v1.Transport` service (`proto/tlab/v1/transport.proto`) per logical stream:
//! a plain source stream is the server-streaming `Source` RPC, a plain sink the client-streaming `Sink` RPC, and
//! everything else (echo, and every stream the session layer resumes) the bidirectional `Stream` RPC, whose
//! mode and resume point travel in the `tlab-open` metadata entry. TLS is rustls with our identity and
//! certificate pinning (ALPN `h2`), not tonic's TLS feature. The bearer token travels in `authorization` metadata
//! and is checked by an interceptor before any handler runs (UNAUTHENTICATED otherwise).

mod client;
mod server;
mod wire;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// Types generated from `proto/tlab/v1/transport.proto` (messages, client and server of `tlab.v1.Transport`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("tlab.v1");
}

/// The `grpc` transport: N logical streams = N RPCs on one HTTP/2 connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTransport;

impl GrpcTransport {
    /// The transport (it has a single mode).
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn description(&self) -> &'static str {
        "gRPC (tonic): each stream is one RPC (bidi Stream, server-streaming Source, client-streaming Sink) on one HTTP/2 connection"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: true,
            reliable: true,
            ordered: true,
            datagrams: false,
            native_migration: false,
            native_reconnect: false,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        tlab_core::tls::crypto_provider();
        server::serve(config).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        tlab_core::tls::crypto_provider();
        client::connect(config).await
    }
}
