//! The server: one wtransport endpoint; each session request is checked (path, token) and then served as a stream
//! session (every accepted bidirectional stream handed to the service) or a datagram session (every new stream id
//! of a datagram handed to the service as an echo stream).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tlab_core::server::{ConnectionClock, PerIpConnections, within};
use tlab_core::{Error, Server, ServerConfig};
use tokio::task::{JoinHandle, JoinSet};
use wtransport::endpoint::endpoint_side;
use wtransport::endpoint::IncomingSession;
use wtransport::{Endpoint, RecvStream, SendStream};
use tlab_quic_common::{PeerStreams, transport_config};

use crate::datagram::{self, Demux};
use crate::stream::Side;
use crate::wire::{
    ALPN, CODE_CLOSED, CODE_PROTOCOL, CODE_REFUSED, DATAGRAMS_KEY, PATH, SessionGuard, code, connection_error, query_value,
    read_open, token_ok,
};

/// WebTransport application code of a session closed by its idle deadline (no stream open for `--idle-timeout`).
const CODE_IDLE: u32 = 0x53;

type WtEndpoint = Endpoint<endpoint_side::Server>;

/// A running WebTransport server.
pub(crate) struct WtServer {
    endpoint: Arc<WtEndpoint>,
    addr: SocketAddr,
    url: String,
    accept: JoinHandle<()>,
}

impl WtServer {
    pub(crate) fn start(config: ServerConfig) -> Result<Self, Error> {
        let endpoint = Arc::new(Endpoint::server(endpoint_config(&config)?)?);
        let addr = endpoint.local_addr()?;
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let url = format!("https://{}{PATH}", SocketAddr::new(host, addr.port()));
        let accept = tokio::spawn(accept_loop(endpoint.clone(), Arc::new(config)));
        Ok(Self { endpoint, addr, url, accept })
    }
}

/// The wtransport server configuration: our identity, the shared QUIC transport settings with `config`'s congestion
/// controller.
pub(crate) fn endpoint_config(config: &ServerConfig) -> Result<wtransport::ServerConfig, Error> {
    let tls = config.identity.server_config(&[ALPN])?;
    let mut wt_config = wtransport::ServerConfig::builder().with_bind_address(config.listen).with_custom_tls(tls).build();
    // +2: the session's CONNECT request is itself a client bidirectional stream, and one stream beyond the limit
    // must reach the explicit check to be refused with 0x52 instead of waiting silently for stream credit.
    let peer = PeerStreams::http3(config.limits.max_streams.saturating_add(2));
    wt_config.quic_config_mut().transport_config(transport_config(config.congestion, peer));
    Ok(wt_config)
}

#[async_trait]
impl Server for WtServer {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    async fn shutdown(self: Box<Self>) {
        // Stop accepting first: wtransport's `accept` panics on a closed endpoint. Dropping the loop drops its session
        // tasks and with them every stream.
        self.accept.abort();
        let _ = self.accept.await;
        self.endpoint.close(code(CODE_CLOSED), b"server shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(endpoint: Arc<WtEndpoint>, config: Arc<ServerConfig>) {
    let mut sessions = JoinSet::new();
    let per_ip = PerIpConnections::new(config.max_connections_per_ip);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let (config, peer) = (config.clone(), incoming.remote_address());
                // Held by the session task: `None` (over the cap) answers the session request with 429.
                let permit = per_ip.acquire(peer.ip());
                sessions.spawn(async move {
                    if let Err(e) = serve_session(incoming, config, permit.is_some()).await {
                        tracing::debug!(%peer, error = %e, "WebTransport session ended");
                    }
                    drop(permit);
                });
            }
            Some(_) = sessions.join_next() => {}
        }
    }
}

/// Checks the session request, answers it, and serves the session until it ends.
async fn serve_session(incoming: IncomingSession, config: Arc<ServerConfig>, within_cap: bool) -> Result<(), Error> {
    let deadlines = config.deadlines;
    // wtransport completes the QUIC handshake and reads the CONNECT request in one step.
    let request = within(deadlines.handshake + deadlines.first_request, "QUIC handshake and session request", incoming)
        .await?
        .map_err(connection_error)?;
    if !within_cap {
        tracing::warn!(peer = %request.remote_address(), "WebTransport session refused: 429 too many connections from this address");
        request.too_many_requests().await;
        return Ok(());
    }
    let (path, query) = request.path().split_once('?').unwrap_or((request.path(), ""));
    if path != PATH {
        tracing::warn!(path, "WebTransport session refused: 404 unknown path");
        request.not_found().await;
        return Ok(());
    }
    let authorization = request.headers().get("authorization").map(String::as_str);
    if !token_ok(query, authorization, &config.token) {
        tracing::warn!("WebTransport session refused: 403 missing or wrong token");
        request.forbidden().await;
        return Ok(());
    }
    let datagrams = query_value(query, DATAGRAMS_KEY) == Some("1");
    let connection = request.accept().await.map_err(connection_error)?;
    let session = Arc::new(SessionGuard(connection.clone()));
    if datagrams { serve_datagrams(connection, session, &config).await } else { serve_streams(connection, session, &config).await }
}

/// Stream session: every accepted bidirectional stream is one logical stream, up to `limits.max_streams` at once.
async fn serve_streams(connection: wtransport::Connection, session: Arc<SessionGuard>, config: &Arc<ServerConfig>) -> Result<(), Error> {
    let mut streams = JoinSet::new();
    // Idle = no stream open: every stream task holds a busy mark.
    let clock = ConnectionClock::new(config.deadlines);
    clock.request_seen();
    loop {
        tokio::select! {
            () = clock.expired() => {
                tracing::info!(idle = ?config.deadlines.idle, "WebTransport session closed: idle with no stream open");
                connection.close(code(CODE_IDLE), b"idle");
                return Ok(());
            }
            accepted = connection.accept_bi() => {
                let (send, recv) = accepted.map_err(connection_error)?;
                if streams.len() >= config.limits.max_streams as usize {
                    refuse(send, recv, CODE_REFUSED, &format!("more than {} streams", config.limits.max_streams));
                    continue;
                }
                let busy = clock.busy();
                let work = serve_stream(send, recv, config.clone(), session.clone());
                streams.spawn(async move {
                    work.await;
                    drop(busy);
                });
            }
            Some(_) = streams.join_next() => {}
        }
    }
}

async fn serve_stream(send: SendStream, mut recv: RecvStream, config: Arc<ServerConfig>, session: Arc<SessionGuard>) {
    let open = match within(config.deadlines.first_request, "open header", read_open(&mut recv)).await {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => return refuse(send, recv, CODE_PROTOCOL, &e.to_string()),
        Err(_) => return refuse(send, recv, CODE_PROTOCOL, "no open header in time"),
    };
    let stream = crate::stream::message_stream(send, recv, open.stream, config.limits, session, Side::Server);
    config.service.serve(open, stream).await;
}

/// Refuses a stream in both directions with `reason` logged.
fn refuse(mut send: SendStream, recv: RecvStream, error_code: u32, reason: &str) {
    tracing::warn!(%reason, "WebTransport stream refused");
    let _ = send.reset(code(error_code));
    recv.stop(code(error_code));
}

/// Datagram session: the first datagram of each new stream id opens an echo stream (an open datagram: the source
/// stream it asks for), up to `limits.max_streams`.
async fn serve_datagrams(connection: wtransport::Connection, session: Arc<SessionGuard>, config: &Arc<ServerConfig>) -> Result<(), Error> {
    let demux = Arc::new(Demux::default());
    let mut streams = JoinSet::new();
    let mut warned = false;
    let open_stream = |msg: &tlab_core::Message| {
        while streams.try_join_next().is_some() {}
        if let Err(e) = config.limits.check_streams(msg.stream, demux.len()) {
            // Once per session: a client flooding new ids must not flood the log.
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(error = %e, "WebTransport datagram stream refused");
            }
            return false;
        }
        let Some(open) = datagram::requested_open(msg) else { return false };
        let Ok(stream) = demux.open(msg.stream, config.limits, session.clone()) else { return false };
        let service = config.service.clone();
        streams.spawn(async move { service.serve(open, stream).await });
        true
    };
    datagram::read_loop(connection, demux.clone(), config.limits.max_message_size, open_stream).await;
    Ok(())
}
