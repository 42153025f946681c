//! The server: one quinn endpoint; each bidirectional stream (token and open header first) handed to
//! [`ServerConfig::service`] on its own task. A stream with a wrong token closes its connection (0x101).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quinn::{Endpoint, Incoming, RecvStream, SendStream, VarInt};
use tlab_core::server::{ConnectionClock, Deadlines, IpPermit, PerIpConnections, within};
use tlab_core::{Error, Limits, ServerConfig, StreamOpen, StreamService};
use tokio::task::JoinHandle;
use tlab_quic_common::{PeerStreams, StreamSlots};

use crate::wire::{
    ALPN, CLOSE_NORMAL, Code, OnDrop, StreamState, message_stream, read_header, refuse,
};

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
    // One stream beyond the limit reaches the explicit check and is
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
    let slots = StreamSlots::default();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let busy = clock.busy();
                    let (conn, shared, slots) = (conn.clone(), shared.clone(), slots.clone());
                    tokio::spawn(async move {
                        serve_stream(&conn, send, recv, shared, slots).await;
                        drop(busy);
                    });
                }
                Err(e) => {
                    return tracing::debug!(peer = %conn.remote_address(), error = %e, "connection ended");
                }
            },
            () = clock.expired() => {
                tracing::info!(%peer, idle = ?shared.deadlines.idle, "connection closed: no stream in time, or idle");
                return conn.close(Code::Deadline.into(), b"idle");
            }
        }
    }
}

/// Reads the token and the open header, closes the connection (0x101) on a wrong token, counts the stream against
/// `max_streams` and runs the service on it.
async fn serve_stream(conn: &quinn::Connection, mut send: SendStream, mut recv: RecvStream, shared: Arc<Shared>, slots: StreamSlots) {
    let quic_stream = send.id();
    let headers = async {
        let token = read_header(&mut recv).await?;
        Ok::<_, Error>((token, read_header(&mut recv).await?))
    };
    let open = match within(shared.deadlines.first_request, "open header", headers).await {
        Ok(Ok((token, _))) if token != shared.token => {
            tracing::warn!(peer = %conn.remote_address(), "connection refused: wrong or missing token");
            return conn.close(Code::Unauthorized.into(), b"unauthorized");
        }
        Ok(Ok((_, header))) => StreamOpen::from_query(&header),
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
