//! The QUIC transport parameters both ends of every QUIC mode use, and the quinn endpoint configurations of the
//! modes that run quinn directly.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tlab_core::Error;
use tlab_core::config::CongestionControl;
use tlab_core::tls::{self, CertPin, Identity};

use crate::congestion::controller_factory;

/// Keep-alive PINGs: a client that only receives still sends, so a new path is validated after migration, NAT
/// bindings stay open and a dead path is noticed within [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A connection silent this long (despite keep-alives) is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// quinn's own default for unidirectional streams, enough for HTTP/3's control and QPACK streams.
const HTTP3_UNI_STREAMS: u32 = 100;
/// Per-stream receive window: quinn's default (12.5 MB/s × 100 ms), set explicitly so that runs can record it.
pub const STREAM_RECEIVE_WINDOW: u32 = 1_250_000;
/// Connection receive window: quinn's default, unlimited (the per-stream windows bound it).
pub const RECEIVE_WINDOW: VarInt = VarInt::MAX;
/// Connection send window: quinn's default, 8 stream windows.
pub const SEND_WINDOW: u64 = 8 * STREAM_RECEIVE_WINDOW as u64;

/// What one end's QUIC stack runs with besides its streams and timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameters {
    /// The congestion controller's initial window, bytes, as quinn's controller for the algorithm reports it.
    pub initial_window: u64,
    /// [`STREAM_RECEIVE_WINDOW`].
    pub stream_receive_window: u64,
    /// [`RECEIVE_WINDOW`].
    pub receive_window: u64,
    /// [`SEND_WINDOW`].
    pub send_window: u64,
}

/// quinn's initial MTU (its `INITIAL_MTU`, the QUIC minimum datagram size), where a controller starts.
const INITIAL_MTU: u16 = 1200;

/// The [`Parameters`] of [`transport_config`] with `congestion` (the initial window read from a fresh controller at
/// quinn's initial MTU).
pub fn parameters(congestion: CongestionControl) -> Parameters {
    let controller = controller_factory(congestion).build(std::time::Instant::now(), INITIAL_MTU);
    Parameters {
        initial_window: controller.initial_window(),
        stream_receive_window: u64::from(STREAM_RECEIVE_WINDOW),
        receive_window: RECEIVE_WINDOW.into_inner(),
        send_window: SEND_WINDOW,
    }
}

/// How many streams of each kind the peer may have open at once (QUIC's `initial_max_streams_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStreams {
    /// Bidirectional streams.
    pub bidi: u32,
    /// Unidirectional streams.
    pub uni: u32,
}

impl PeerStreams {
    /// Raw QUIC: `bidi` bidirectional streams, no unidirectional ones.
    pub fn bidi_only(bidi: u32) -> Self {
        Self { bidi, uni: 0 }
    }

    /// HTTP/3 and WebTransport over it: `bidi` request streams, and room for the peer's control and QPACK
    /// unidirectional streams.
    pub fn http3(bidi: u32) -> Self {
        Self { bidi, uni: HTTP3_UNI_STREAMS }
    }
}

/// The transport parameters of one end: [`KEEP_ALIVE`], [`IDLE_TIMEOUT`], the `congestion` controller and the
/// `peer` stream limits; a qlog trace of their own while a [`crate::qlog::QlogCapture`] runs.
pub fn transport_config(congestion: CongestionControl, peer: PeerStreams) -> Arc<TransportConfig> {
    let idle = IdleTimeout::try_from(IDLE_TIMEOUT).expect("10 s is a valid idle timeout");
    let mut config = TransportConfig::default();
    config
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(peer.bidi))
        .max_concurrent_uni_streams(VarInt::from_u32(peer.uni))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(RECEIVE_WINDOW)
        .send_window(SEND_WINDOW)
        .congestion_controller_factory(controller_factory(congestion));
    if let Some(trace) = crate::qlog::next_stream() {
        config.qlog_stream(Some(trace));
    }
    Arc::new(config)
}

/// A quinn server configuration: TLS 1.3 with `identity` offering `alpn`, and [`transport_config`].
pub fn server_config(
    identity: &Identity,
    alpn: &[u8],
    congestion: CongestionControl,
    peer: PeerStreams,
) -> Result<quinn::ServerConfig, Error> {
    let crypto = QuicServerConfig::try_from(identity.server_config(&[alpn])?).map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config(congestion, peer));
    Ok(config)
}

/// A quinn client configuration: TLS 1.3 checking the server by `pin` and offering `alpn`, and [`transport_config`].
pub fn client_config(
    pin: &CertPin,
    alpn: &[u8],
    congestion: CongestionControl,
    peer: PeerStreams,
) -> Result<quinn::ClientConfig, Error> {
    let crypto = QuicClientConfig::try_from(tls::client_config(pin, &[alpn])?).map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(congestion, peer));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_from_quinns_controllers() {
        // quinn's CUBIC and NewReno start at 10 × 1200-byte datagrams (RFC 9002's 14720 bytes capped at 10 MSS).
        for cc in [CongestionControl::Cubic, CongestionControl::NewReno] {
            assert_eq!(parameters(cc).initial_window, 12_000, "{cc}");
        }
        let bbr = parameters(CongestionControl::Bbr);
        assert!(bbr.initial_window > 0);
        assert_eq!((bbr.stream_receive_window, bbr.send_window), (1_250_000, 10_000_000));
    }
}
