//! `tlab-core` is the one abstraction every transport of transport-lab implements: a [`Message`] carried on one of
//! the N logical streams of a session, the [`Transport`] / [`Connection`] / stream traits, [`Capabilities`] as data,
//! client and server configuration (address, TLS identity, token, [`Limits`], [`Deadlines`]), the handshake
//! [`Milestones`] a client reports, the binary [`frame`]
//! codec shared by the byte-oriented transports, and the [`server`] plumbing every server shares (deadline
//! enforcement, the per-IP connection cap, an accept loop that backs off). It depends on no transport library; the
//! session layer (`tlab-session`) and the server application (`tlab-service`) are built on it.

pub mod capabilities;
pub mod clock;
pub mod config;
pub mod error;
pub mod frame;
pub mod message;
pub mod milestones;
pub mod server;
pub mod tls;
pub mod transport;

pub use capabilities::{Capabilities, Requirement};
pub use config::{ClientConfig, Deadlines, Limits, ServerConfig, StreamMode, StreamOpen};
pub use error::Error;
pub use message::{ControlOp, Message, MessageKind, StreamId};
pub use milestones::Milestones;
pub use transport::{Connection, MessageSink, MessageSource, MessageStream, Server, StreamService, Transport};
