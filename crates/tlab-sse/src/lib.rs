//! SSE transport of transport-lab: server-to-client events (`text/event-stream`) and client-to-server HTTP POSTs, in modes `sse-h1` (one HTTP/1.1 connection per stream) and `sse-h2` (streams share one HTTP/2 connection).
//!
//! Wire protocol (all routes under `/tlab/sse`, token as `Authorization: Bearer` or `token=` query parameter):
//! `GET /events?<StreamOpen query>&conn=<hex id>` opens a stream and answers `text/event-stream`: a `: ok` comment,
//! then one event per message (`id: <seq>` for data, `event: message|control`, `data: <base64 binary frame>`), and
//! `event: end` when the server finishes its direction. `POST /messages?conn=<hex id>&stream=<n>[&fin=1]` carries
//! concatenated binary frames (see [`tlab_core::frame`]) into the stream and answers 204. `GET /auth` answers 204 for
//! a valid token. The server serves HTTP/1.1 and HTTP/2 on one port (ALPN `h2`, `http/1.1`).

mod client;
mod server;
mod wire;
#[cfg(test)]
mod wire_props;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// Which HTTP version the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each logical stream gets its own HTTP/1.1 connections (its event stream, and one for its POSTs).
    Http1,
    /// Every stream's GET and POSTs share one HTTP/2 connection.
    Http2,
}

impl Mode {
    fn version(self) -> http::Version {
        match self {
            Mode::Http1 => http::Version::HTTP_11,
            Mode::Http2 => http::Version::HTTP_2,
        }
    }
}

/// The SSE + REST transport in one of its two modes, `sse-h1` or `sse-h2`. Its server serves both.
#[derive(Debug, Clone, Copy)]
pub struct SseTransport {
    mode: Mode,
}

impl SseTransport {
    /// Mode `sse-h1`: one HTTP/1.1 connection per logical stream (plus one for its POSTs).
    pub fn http1() -> Self {
        Self { mode: Mode::Http1 }
    }

    /// Mode `sse-h2`: all streams of a connection share one HTTP/2 connection.
    pub fn http2() -> Self {
        Self { mode: Mode::Http2 }
    }
}

#[async_trait]
impl Transport for SseTransport {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::Http1 => "sse-h1",
            Mode::Http2 => "sse-h2",
        }
    }

    fn description(&self) -> &'static str {
        match self.mode {
            Mode::Http1 => {
                "each stream: an SSE event stream (base64 frames) on its own HTTP/1.1 connection, uplink by POSTs on another"
            }
            Mode::Http2 => {
                "each stream: an SSE event stream (base64 frames) plus POSTs, all streams on one HTTP/2 connection"
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: self.mode == Mode::Http2,
            reliable: true,
            ordered: true,
            datagrams: false,
            native_migration: false,
            native_reconnect: true,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        server::serve(config).await
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        client::connect(self.mode, config).await
    }
}
