//! The errors every transport reports through the abstraction.

use crate::message::StreamId;

/// Result alias for the abstraction.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the abstraction, shared by all transports so that experiments can compare them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server rejected the token (missing or wrong); nothing reached the application.
    #[error("unauthorized: the server rejected the token")]
    Unauthorized,
    /// The server's certificate did not match the pinned SHA-256 or failed TLS verification.
    #[error("TLS failure: {0}")]
    Tls(String),
    /// The transport could not reach or handshake with the server.
    #[error("connect to {address} failed: {reason}")]
    Connect {
        /// The address or URL that was tried.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// A message exceeded the configured maximum size.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The offending size in bytes.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// More streams were opened than the session allows.
    #[error("stream {stream} exceeds the limit of {limit} streams per session")]
    TooManyStreams {
        /// The stream that was refused.
        stream: StreamId,
        /// The configured maximum.
        limit: u32,
    },
    /// The peer sent bytes that are not a valid frame of the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The transport cannot do what was asked; see its [`crate::Capabilities`].
    #[error("unsupported by this transport: {0}")]
    Unsupported(&'static str),
    /// The peer or the network closed the connection.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The server no longer has the session a stream tried to resume (it restarted or forgot it): what was in
    /// flight cannot be recovered, so reconnecting cannot help.
    #[error("session lost: the server no longer has session {session:x} (stream {stream})")]
    SessionLost {
        /// The session id.
        session: u64,
        /// The stream that tried to resume.
        stream: StreamId,
    },
    /// No sign of life from the peer within the configured dead-peer time.
    #[error("peer silent for {0:?}: presumed dead")]
    PeerDead(std::time::Duration),
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Bad configuration or URL.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An operating-system I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure inside the transport library, with its message.
    #[error("transport error: {0}")]
    Transport(String),
}

impl Error {
    /// True when a new connection may succeed where this one failed (the session layer reconnects on these).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Closed(_) | Error::PeerDead(_) | Error::Io(_) | Error::Timeout(_) | Error::Transport(_)
        )
    }
}
