//! The traits every transport implements. They are deliberately small: a transport moves [`Message`]s on logical
//! streams, authenticates, and enforces [`crate::Limits`]; everything else (echo, resume, metrics) lives above it.

use std::net::SocketAddr;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::config::{ClientConfig, ServerConfig, StreamOpen};
use crate::error::Error;
use crate::message::Message;
use crate::milestones::Milestones;

/// The sending half of one logical stream.
#[async_trait]
pub trait MessageSink: Send {
    /// Sends one message; returns once the transport has accepted it (not when the peer received it).
    async fn send(&mut self, msg: Message) -> Result<(), Error>;
    /// Sends `msgs` in order, each one a message of its own as if sent by [`MessageSink::send`]; returns once the
    /// transport has accepted all of them. On an error, the messages before the failing one may have been accepted
    /// and the ones after it were not. The default calls `send` per message; a transport whose library can queue
    /// many frames and write them out at once overrides it.
    async fn send_batch(&mut self, msgs: Vec<Message>) -> Result<(), Error> {
        for msg in msgs {
            self.send(msg).await?;
        }
        Ok(())
    }
    /// Ends this direction gracefully; the peer's [`MessageSource::recv`] then returns `Ok(None)`.
    async fn finish(&mut self) -> Result<(), Error>;
}

/// The receiving half of one logical stream.
#[async_trait]
pub trait MessageSource: Send {
    /// The next message, `Ok(None)` after the peer finished gracefully, `Err` when the connection failed.
    ///
    /// Must be cancel-safe: dropping the future before it completes loses no message.
    async fn recv(&mut self) -> Result<Option<Message>, Error>;
}

/// Both halves of one logical stream.
pub struct MessageStream {
    /// Where this side sends.
    pub sink: Box<dyn MessageSink>,
    /// Where this side receives.
    pub source: Box<dyn MessageSource>,
}

/// A client's connection (or, for modes without multiplexing, its set of per-stream connections).
#[async_trait]
pub trait Connection: Send + Sync {
    /// Opens one logical stream; the server learns `open` (mode, resume point) with it.
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error>;
    /// Closes gracefully.
    async fn close(&self);
    /// Moves the connection to a new local address (connection migration) without re-establishing it.
    /// Transports without native migration refuse; the session layer's reconnect + resume is their fallback.
    async fn rebind(&self, _local: SocketAddr) -> Result<(), Error> {
        Err(Error::Unsupported("connection migration (rebinding to a new local address)"))
    }
    /// When each step of the connection's setup completed (all unknown unless the transport records them).
    fn milestones(&self) -> Milestones {
        Milestones::default()
    }
}

/// A running server.
#[async_trait]
pub trait Server: Send + Sync {
    /// The bound address.
    fn local_addr(&self) -> SocketAddr;
    /// The URL a client of this transport connects to.
    fn url(&self) -> String;
    /// Stops accepting and closes every connection.
    async fn shutdown(self: Box<Self>);
}

/// What a server does with each accepted stream (the application). Implemented by [`crate::service::EchoService`].
#[async_trait]
pub trait StreamService: Send + Sync + 'static {
    /// Serves one stream until it ends; called on its own task per stream.
    async fn serve(&self, open: StreamOpen, stream: MessageStream);
}

/// One transport mode (e.g. `ws`, `ws-mux`, `grpc`).
#[async_trait]
pub trait Transport: Send + Sync {
    /// Short stable name used in suites and result files.
    fn name(&self) -> &'static str;
    /// One line saying how streams map onto the protocol.
    fn description(&self) -> &'static str;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// Starts serving `config.service` on `config.listen`.
    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error>;
    /// Connects to a server of this transport.
    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error>;
}
