//! The client: one wtransport endpoint (own UDP socket) and one session per [`WtConnection`], the certificate pinned
//! by hash like a browser's `serverCertificateHashes`, the token in `authorization: Bearer` of the CONNECT request.
//! wtransport's `connect` covers the QUIC handshake, the wait for the server's SETTINGS and the CONNECT: its
//! milestones have the CONNECT's `200` only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tlab_core::tls::CertPin;
use tlab_core::clock::monotonic_ns;
use tlab_core::{ClientConfig, Connection, Error, Limits, MessageStream, Milestones, StreamMode, StreamOpen};
use wtransport::endpoint::{ConnectOptions, endpoint_side};
use wtransport::error::ConnectingError;
use wtransport::tls::Sha256Digest;
use wtransport::Endpoint;
use tlab_quic_common::{PeerStreams, StreamSlots, open_header, transport_config};

use crate::datagram::{self, Demux};
use crate::stream::Side;
use crate::wire::{ALPN, CODE_CLOSED, DATAGRAMS_KEY, SessionGuard, code, connection_error, write_error};

/// One WebTransport session and its streams (mode `wt-stream`) or datagram streams (mode `wt-datagram`).
pub(crate) struct WtConnection {
    endpoint: Endpoint<endpoint_side::Client>,
    session: Arc<SessionGuard>,
    limits: Limits,
    /// Present in datagram mode: the routes of the session's reader task.
    datagrams: Option<Arc<Demux>>,
    /// The open reliable streams (each slot held by its stream's receiving half), for the client-side stream limit.
    slots: StreamSlots,
    milestones: Milestones,
}

impl WtConnection {
    pub(crate) async fn connect(config: ClientConfig, datagrams: bool) -> Result<Self, Error> {
        let (addr, path) = config.authority_and_path()?;
        let path = path.split('?').next().unwrap_or_default();
        let url = if datagrams { format!("https://{addr}{path}?{DATAGRAMS_KEY}=1") } else { format!("https://{addr}{path}") };
        let endpoint = Endpoint::client(endpoint_config(&config)?)?;
        let options = ConnectOptions::builder(&url).add_header("authorization", format!("Bearer {}", config.token)).build();
        let connection = tokio::time::timeout(config.connect_timeout, endpoint.connect(options))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {url}")))?
            .map_err(|e| connecting_error(e, &url))?;
        let milestones = Milestones { first_response: Some(monotonic_ns()), ..Milestones::default() };
        let session = Arc::new(SessionGuard(connection.clone()));
        let datagrams = datagrams.then(|| {
            let demux = Arc::new(Demux::default());
            let unknown = |msg: &tlab_core::Message| {
                tracing::debug!(stream = msg.stream, "datagram of a stream that is not open dropped");
                false
            };
            // Holds the bare connection, not the guard: the reader must not keep the session open.
            tokio::spawn(datagram::read_loop(connection, demux.clone(), config.limits.max_message_size, unknown));
            demux
        });
        Ok(Self { endpoint, session, limits: config.limits, datagrams, slots: StreamSlots::default(), milestones })
    }
}

/// The wtransport client configuration: the certificate pinned as `config.pin` says, bound to the unspecified
/// address of the server's family, the shared QUIC transport settings with `config`'s congestion controller.
pub(crate) fn endpoint_config(config: &ClientConfig) -> Result<wtransport::ClientConfig, Error> {
    tlab_core::tls::crypto_provider();
    let (addr, _path) = config.authority_and_path()?;
    let local = SocketAddr::new(if addr.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) }, 0);
    let builder = wtransport::ClientConfig::builder().with_bind_address(local);
    let mut wt_config = match &config.pin {
        // The browser's way: ECDSA P-256, validity at most 14 days, SHA-256 of the DER certificate.
        CertPin::Sha256(hash) => builder.with_server_certificate_hashes([Sha256Digest::new(*hash)]).build(),
        CertPin::AnyCertificate => builder.with_custom_tls(tlab_core::tls::client_config(&CertPin::AnyCertificate, &[ALPN])?).build(),
    };
    // The server opens no bidirectional streams in HTTP/3.
    wt_config.quic_config_mut().transport_config(transport_config(config.congestion, PeerStreams::http3(0)));
    Ok(wt_config)
}

/// Maps a failed session setup; our server refuses a session at a valid path only for its token.
fn connecting_error(e: ConnectingError, url: &str) -> Error {
    match e {
        ConnectingError::SessionRejected => Error::Unauthorized,
        ConnectingError::ConnectionError(e) => {
            let reason = e.to_string();
            if reason.contains("certificate") || reason.contains("cryptographic handshake") {
                Error::Tls(reason)
            } else {
                Error::Connect { address: url.to_string(), reason }
            }
        }
        other => Error::Connect { address: url.to_string(), reason: other.to_string() },
    }
}

#[async_trait]
impl Connection for WtConnection {
    /// Reliable mode: opens a bidirectional stream and sends the open header at once. Datagram mode: an echo
    /// stream sends nothing (the server learns it from its first datagram), a source stream sends open datagrams
    /// until the server's first datagram arrives; sink and resumable streams are unsupported.
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        if let Some(demux) = &self.datagrams {
            if open.resume.is_some() || open.mode == StreamMode::Sink {
                return Err(Error::Unsupported("sink and resumable streams over datagrams (echo and source only)"));
            }
            self.limits.check_streams(open.stream, demux.len())?;
            return match open.mode {
                StreamMode::Echo => demux.open(open.stream, self.limits, self.session.clone()),
                _ => demux.open_source(&open, self.limits, self.session.clone()),
            };
        }
        let slot = self.slots.acquire(&self.limits, open.stream)?;
        let header = open_header::encode(&open.to_query())?;
        let session = &self.session.0;
        let (mut send, recv) =
            session.open_bi().await.map_err(connection_error)?.await.map_err(|e| Error::Closed(format!("opening a stream: {e}")))?;
        send.quic_stream_mut().write_chunk(header).await.map_err(write_error)?;
        let side = Side::Client { slot };
        Ok(crate::stream::message_stream(send, recv, open.stream, self.limits, self.session.clone(), side))
    }

    async fn close(&self) {
        self.session.0.close(code(CODE_CLOSED), b"client closed");
        // Lets quinn send CONNECTION_CLOSE before the endpoint may be dropped.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }

    fn milestones(&self) -> Milestones {
        self.milestones
    }
}
