//! gRPC transport of transport-lab (tonic): each logical stream is one RPC on a shared HTTP/2 channel.
//!
//! A client holds one tonic channel, i.e. one TLS + HTTP/2 connection; [`tlab_core::Connection::open_stream`]
//! starts one RPC of the `tlab.v1.Transport` service (`proto/tlab/v1/transport.proto`) per logical stream:
//! a plain source stream is the server-streaming `Source` RPC, a plain sink the client-streaming `Sink` RPC, and
//! everything else (echo, and every stream the session layer resumes) the bidirectional `Stream` RPC, whose
//! mode and resume point travel in the `tlab-open` metadata entry. TLS is rustls with our identity and
//! certificate pinning (ALPN `h2`), not tonic's TLS feature. The bearer token travels in `authorization` metadata
//! and is checked by an interceptor before any handler runs (UNAUTHENTICATED otherwise).
//!
//! The second mode, [`GrpcWebTransport`] (`grpc-web`), is the same service behind tonic-web, the form a browser
//! can call with `fetch`: HTTP/1.1 or HTTP/2, `application/grpc-web+proto`, the status in a trailer frame of the
//! body, CORS for pages of other origins. A browser can send a request body only whole, before the response
//! starts, so gRPC-Web has unary and server-streaming calls only: the mode is one-way (server → client, the
//! `Source` RPC), and its client refuses echo and sink streams with [`Error::Unsupported`], as a browser must.

mod client;
mod server;
mod web_client;
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
        server::serve(config, false).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        tlab_core::tls::crypto_provider();
        client::connect(config).await
    }
}

/// The `grpc-web` transport: the gRPC service as gRPC-Web (server streaming only), each stream one `Source` call.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcWebTransport;

impl GrpcWebTransport {
    /// The transport (it has a single mode).
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Transport for GrpcWebTransport {
    fn name(&self) -> &'static str {
        "grpc-web"
    }

    fn description(&self) -> &'static str {
        "gRPC-Web (tonic-web): server-streaming Source calls only (no client or bidi streaming from a browser), HTTP/1.1 or HTTP/2, CORS"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A browser's fetch sends the request body whole before the response: no client → server stream.
            bidirectional: false,
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
        server::serve(config, true).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        tlab_core::tls::crypto_provider();
        web_client::connect(config).await
    }
}
