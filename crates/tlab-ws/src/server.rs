//! The server: TLS, the HTTP upgrade (path routing and token check), then one stream (`/tlab/ws`) or a
//! multiplexed connection (`/tlab/ws-mux`) per accepted connection. It serves both paths whatever its mode. The
//! connection deadlines and the per-IP cap are [`tlab_core::server`]'s: a connection over the cap is upgraded to
//! nothing but an HTTP 429.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use tlab_core::server::{Accepted, PerIpConnections, Watched, accept_tcp, within};
use tlab_core::{Error, Server, ServerConfig, StreamOpen};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsStream};
use tokio_tungstenite::accept_hdr_async_with_config;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::mux::{self, Mux, Side};
use crate::wire::{ALPN, PATH_MUX, PATH_PER_STREAM, PROBE_KEY, map_ws_error, ws_config};

/// The transport named in the accept loop's log lines.
const MODE: &str = "ws";

/// A running WebSocket server.
pub(crate) struct WsServer {
    addr: SocketAddr,
    url: String,
    accept: JoinHandle<()>,
}

impl WsServer {
    /// Binds `config.listen` and accepts in the background; `path` is the one [`Server::url`] names.
    pub(crate) async fn start(config: ServerConfig, path: &'static str) -> Result<Self, Error> {
        let tls = TlsAcceptor::from(Arc::new(config.identity.server_config(&[ALPN])?));
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let url = format!("wss://{}{path}", SocketAddr::new(host, addr.port()));
        let per_ip = PerIpConnections::new(config.max_connections_per_ip);
        let deadlines = config.deadlines;
        let config = Arc::new(config);
        let accept = tokio::spawn(accept_tcp(listener, deadlines, per_ip, MODE, move |accepted| {
            serve_connection(accepted, tls.clone(), config.clone())
        }));
        Ok(Self { addr, url, accept })
    }
}

#[async_trait]
impl Server for WsServer {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    async fn shutdown(self: Box<Self>) {
        // Dropping the accept loop drops its set of connection tasks, which aborts them (and their streams).
        self.accept.abort();
        let _ = self.accept.await;
    }
}

/// What an accepted upgrade request asked for.
enum Route {
    PerStream(StreamOpen),
    Mux,
    /// The per-stream client's connect-time check (reachability, certificate, token): closed with 1000 at once.
    Probe,
}

#[allow(clippy::result_large_err, reason = "the error type of tungstenite's handshake callback")]
async fn serve_connection(accepted: Accepted, tls: TlsAcceptor, config: Arc<ServerConfig>) -> Result<(), Error> {
    let Accepted { tcp, permit, clock, .. } = accepted;
    let deadlines = clock.deadlines();
    let stream = within(deadlines.handshake, "TLS handshake", tls.accept(Watched::new(tcp, clock.clone())))
        .await?
        .map_err(|e| Error::Tls(e.to_string()))?;
    clock.handshake_done();
    let mut route = None;
    let callback = |request: &Request, response: Response| {
        if permit.is_none() {
            let reason = "too many connections from this address (--max-connections-per-ip)";
            return Err(refuse((StatusCode::TOO_MANY_REQUESTS, reason.into())));
        }
        route = Some(check_request(request, &config.token).map_err(refuse)?);
        Ok(response)
    };
    let upgrade = accept_hdr_async_with_config(TlsStream::Server(stream), callback, Some(ws_config(&config.limits)));
    let ws = within(deadlines.first_request, "WebSocket upgrade request", upgrade).await?.map_err(|e| match e {
        WsError::Http(response) => Error::Closed(format!("upgrade answered with HTTP {}", response.status())),
        other => Error::Protocol(format!("WebSocket handshake: {other}")),
    })?;
    clock.request_seen();
    match route.expect("set by an accepted handshake") {
        Route::Probe => {
            let mut ws = ws;
            ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "probe accepted".into() })).await.map_err(map_ws_error)?;
        }
        Route::PerStream(open) => {
            let (stream, link) = crate::link::stream(ws, open.stream, config.limits);
            config.service.serve(open, stream).await;
            link.close_after_service().await;
        }
        Route::Mux => {
            let (mux, reader, stop) = Mux::new(ws, config.limits);
            let side = Side::Server { service: config.service.clone(), tasks: JoinSet::new() };
            // `mux` stays alive here, so only the connection's end stops the loop.
            mux::read_loop(Arc::downgrade(&mux), reader, stop, side, config.limits.max_message_size).await;
        }
    }
    Ok(())
}

/// Routes an upgrade request, or says how to answer it instead: 404 unknown path, 401 bad token, 400 bad stream
/// query.
fn check_request(request: &Request, token: &str) -> Result<Route, (StatusCode, String)> {
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    if path != PATH_PER_STREAM && path != PATH_MUX {
        return Err((StatusCode::NOT_FOUND, format!("no WebSocket endpoint at {path}")));
    }
    let bearer = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let in_query = query.split('&').find_map(|pair| pair.strip_prefix("token="));
    if bearer != Some(token) && in_query != Some(token) {
        return Err((StatusCode::UNAUTHORIZED, "missing or wrong token".into()));
    }
    if path == PATH_MUX {
        return Ok(Route::Mux);
    }
    if query.split('&').any(|pair| pair.split('=').next() == Some(PROBE_KEY)) {
        return Ok(Route::Probe);
    }
    StreamOpen::from_query(query).map(Route::PerStream).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The HTTP answer to a request that is not upgraded.
fn refuse((status, reason): (StatusCode, String)) -> ErrorResponse {
    let mut response = Response::builder().status(status);
    if status == StatusCode::UNAUTHORIZED {
        response = response.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    tracing::warn!(status = status.as_u16(), %reason, "WebSocket upgrade refused");
    response.body(Some(reason)).expect("valid response")
}
