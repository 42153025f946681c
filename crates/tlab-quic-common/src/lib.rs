//! `tlab-quic-common` is what the QUIC transports of transport-lab (`tlab-quic`, `tlab-h3`, `tlab-webtransport`)
//! share, written once: the suite's [`tlab_core::config::CongestionControl`] turned into quinn's controller and read
//! back from a live connection ([`congestion`]), the QUIC transport settings of both ends — keep-alive, idle timeout,
//! how many streams the peer may open, the flow-control windows ([`transport_config`], [`parameters`] for the record, and the quinn endpoint configurations
//! [`server_config`] / [`client_config`] built on it), the length-prefixed open header that starts a stream
//! ([`open_header`]), and the per-connection count of open streams against [`tlab_core::Limits::max_streams`]
//! ([`StreamSlots`]), and a qlog trace per QUIC connection while a [`qlog::QlogCapture`] runs. It depends on tlab-core and quinn, never on a transport crate; wtransport runs on the same quinn,
//! so its `quic_config_mut()` takes these settings as they are.

pub mod congestion;
pub mod open_header;
pub mod qlog;
mod settings;
mod slots;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use settings::{
    IDLE_TIMEOUT, KEEP_ALIVE, Parameters, PeerStreams, RECEIVE_WINDOW, SEND_WINDOW, STREAM_RECEIVE_WINDOW, client_config,
    parameters, server_config, transport_config,
};
pub use slots::{StreamSlot, StreamSlots};
