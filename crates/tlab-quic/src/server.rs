//! The server: one quinn endpoint; per connection an auth exchange, then each bidirectional stream (open header
//! first) handed to [`ServerConfig::service`] on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use quinn::{Endpoint, Incoming, RecvStream, SendStream, VarInt};
use tlab_core::server::{ConnectionClock, Deadlines, IpPermit, PerIpConnections, within};
use tlab_core::{Error, Limits, ServerConfig, StreamOpen, StreamService};
use tokio::task::JoinHandle;
use tlab_quic_common::{PeerStreams, StreamSlots};

use crate::wire::{
    ALPN, AUTH_OK, AUTH_PREFIX, AUTH_REFUSED, CLOSE_NORMAL, Code, OnDrop, StreamState,
    message_stream, read_header, refuse,
};

/// How long a refused client is given to receive the refusal byte before its connection is closed.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// How long [`tlab_core::Server::shutdown`] waits for connections to drain.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection task needs.
struct Shared {
    deadlines: Deadlines,
    token: String,
    limits: Limits,
    service: Arc<dyn StreamService>,
}

/// Binds the UDP endpoint and starts accepting.
pub(crate) async fn serve(config: ServerConfig) -> Result<Box<dyn tlab_core::Server>, Error> {
    let endpoint = Endpoint::server(endpoint_config(&config)?, config.listen)?;
    let local_addr = endpoint.local_addr()?;
    let per_ip = PerIpConnections::new(config.max_connections_per_ip);
    let shared = Arc::new(Shared {
        deadlines: config.deadlines,
        token: config.token,
        limits: config.limits,
        service: config.service,
    });
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared, per_ip));
    Ok(Box::new(QuicServer { endpoint, local_addr, accept }))
}

/// The quinn server configuration: our identity and ALPN, `config`'s congestion controller.
pub(crate) fn endpoint_config(config: &ServerConfig) -> Result<quinn::ServerConfig, Error> {
    // One stream beyond the limit (the auth stream, or a stream over the limit) reaches the explicit check and is
    // refused with 0x104 instead of waiting silently for QUIC stream credit.
    let peer = PeerStreams::bidi_only(config.limits.max_streams.saturating_add(1));
    tlab_quic_common::server_config(&config.identity, ALPN, config.congestion, peer)
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>, per_ip: PerIpConnections) {
    // quinn drops undecodable datagrams itself; only well-formed connection attempts arrive here.
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        let Some(permit) = per_ip.acquire(peer.ip()) else {
            tracing::warn!(%peer, max = per_ip.max(), "connection refused: too many connections from this address");
            incoming.refuse();
            continue;
        };
        tokio::spawn(serve_connection(incoming, shared.clone(), permit));
    }
}

async fn serve_connection(incoming: Incoming, shared: Arc<Shared>, _permit: IpPermit) {
    let peer = incoming.remote_address();
    let clock = ConnectionClock::new(shared.deadlines);
    let conn = match within(shared.deadlines.handshake, "QUIC handshake", incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "QUIC handshake failed"),
        Err(e) => return tracing::warn!(%peer, error = %e, "QUIC handshake timed out"),
    };
    clock.handshake_done();
    match authenticate(&conn, &shared.token, shared.deadlines.first_request).await {
        Ok(()) => clock.request_seen(),
        Err(Refusal::Deadline(reason)) => {
            tracing::info!(%peer, reason, "connection closed: no auth exchange in time");
            return conn.close(Code::Deadline.into(), b"no auth exchange in time");
        }
        Err(Refusal::Unauthorized(reason)) => {
            tracing::warn!(%peer, reason, "connection refused: unauthorized");
            return conn.close(Code::Unauthorized.into(), b"unauthorized");
        }
    }
    tracing::debug!(%peer, id = conn.stable_id(), "connection authenticated");
    let slots = StreamSlots::default();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let busy = clock.busy();
                    let (shared, slots) = (shared.clone(), slots.clone());
                    tokio::spawn(async move {
                        serve_stream(send, recv, shared, slots).await;
                        drop(busy);
                    });
                }
                Err(e) => {
                    return tracing::debug!(peer = %conn.remote_address(), error = %e, "connection ended");
                }
            },
            () = clock.expired() => {
                tracing::info!(%peer, idle = ?shared.deadlines.idle, "connection closed: idle with no stream open");
                return conn.close(Code::Deadline.into(), b"idle");
            }
        }
    }
}

/// Why [`authenticate`] refused a connection.
enum Refusal {
    /// Wrong token, or another stream first (closed with 0x101).
    Unauthorized(String),
    /// No complete auth exchange within the first-request deadline (closed with 0x105).
    Deadline(String),
}

/// The first stream must carry `auth <token>`: answers the byte and returns why it refused, if it did.
async fn authenticate(conn: &quinn::Connection, token: &str, deadline: Duration) -> Result<(), Refusal> {
    let exchange = async {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let header = read_header(&mut recv).await.map_err(|e| e.to_string())?;
        let Some(presented) = header.strip_prefix(AUTH_PREFIX) else {
            return Err("a stream arrived before the auth exchange".to_string());
        };
        let ok = presented == token;
        let _ = send.write_chunk(Bytes::from_static(if ok { &[AUTH_OK] } else { &[AUTH_REFUSED] })).await;
        let _ = send.finish();
        if ok {
            return Ok(());
        }
        // Let the refusal byte arrive before the connection close overtakes it.
        let _ = tokio::time::timeout(REFUSAL_GRACE, send.stopped()).await;
        Err("wrong or missing token".to_string())
    };
    match within(deadline, "auth exchange", exchange).await {
        Ok(outcome) => outcome.map_err(Refusal::Unauthorized),
        Err(e) => Err(Refusal::Deadline(e.to_string())),
    }
}

/// Reads the open header, counts the stream against `max_streams` and runs the service on it.
async fn serve_stream(mut send: SendStream, mut recv: RecvStream, shared: Arc<Shared>, slots: StreamSlots) {
    let quic_stream = send.id();
    let open = match within(shared.deadlines.first_request, "open header", read_header(&mut recv)).await {
        Ok(Ok(header)) => StreamOpen::from_query(&header),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::Protocol(e.to_string())),
    };
    let open = match open {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(%quic_stream, error = %e, "stream refused: bad open header");
            return refuse(&mut send, &mut recv, Code::Malformed);
        }
    };
    let state = match StreamState::acquire(&slots, &shared.limits, open.stream) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(%quic_stream, error = %e, "stream refused");
            return refuse(&mut send, &mut recv, Code::TooManyStreams);
        }
    };
    shared.service.serve(open, message_stream(send, recv, shared.limits, state, OnDrop::Reset)).await;
}

struct QuicServer {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

#[async_trait]
impl tlab_core::Server for QuicServer {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn url(&self) -> String {
        format!("quic://{}", self.local_addr)
    }

    async fn shutdown(self: Box<Self>) {
        self.accept.abort();
        self.endpoint.close(VarInt::from_u32(CLOSE_NORMAL), b"server shutdown");
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.endpoint.wait_idle()).await.is_err() {
            tracing::warn!("QUIC connections did not drain in time");
        }
    }
}

impl Drop for QuicServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.endpoint.close(VarInt::from_u32(CLOSE_NORMAL), b"server shutdown");
    }
}
