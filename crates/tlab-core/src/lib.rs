//! `tlab-core` is the one abstraction every transport of transport-lab implements: a [`Message`] carried on one of
//! the N logical streams of a session, the [`Transport`] / [`Connection`] / stream traits, [`Capabilities`] as data,
//! client and server configuration (address, TLS identity, token, [`Limits`]), the binary [`frame`] codec shared by
//! the byte-oriented transports, and the transport-independent session layer ([`session`]: heartbeat, reconnect with
//! backoff and jitter, resume without loss or duplicates). It depends on no transport library.

pub mod capabilities;
pub mod clock;
pub mod config;
pub mod error;
pub mod frame;
pub mod message;
pub mod reliable;
pub mod service;
pub mod session;
pub mod tls;
pub mod transport;

pub use capabilities::Capabilities;
pub use config::{ClientConfig, Limits, ServerConfig, StreamMode, StreamOpen};
pub use error::Error;
pub use message::{ControlOp, Message, MessageKind, StreamId};
pub use transport::{Connection, MessageSink, MessageSource, MessageStream, Server, StreamService, Transport};
