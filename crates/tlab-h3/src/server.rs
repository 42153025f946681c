//! The server: a quinn endpoint; per connection an h3 server connection whose requests are authorized and routed
//! here, and each accepted stream request handed to [`ServerConfig::service`] on its own task. CORS
//! ([`tlab_core::server::cors`]): preflights are answered before the token check, every answer names the allowed
//! origin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use h3::error::Code;
use http::{Method, Request, Response, StatusCode, header};
use tlab_core::server::cors::Cors;
use tlab_core::server::{ConnectionClock, Deadlines, IpPermit, PerIpConnections, within};
use tlab_core::{Error, Limits, MessageStream, ServerConfig, StreamOpen, StreamService};
use tlab_quic_common::{PeerStreams, StreamSlot, StreamSlots};
use tokio::task::JoinHandle;

use crate::wire::{
    ALPN_H3, AUTH_PATH, BodySink, BodySource, CONTENT_TYPE, MAX_STREAMS_HEADER, STREAM_PATH, Shared, close_code,
};

/// How long [`tlab_core::Server::shutdown`] waits for connections to finish closing.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

type RequestStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Binds the UDP endpoint and starts accepting connections.
pub(crate) async fn serve(config: ServerConfig) -> Result<H3Server, Error> {
    let endpoint = quinn::Endpoint::server(endpoint_config(&config)?, config.listen)?;
    let local_addr = endpoint.local_addr()?;
    let app = Arc::new(App {
        bearer: format!("Bearer {}", config.token),
        token: config.token,
        limits: config.limits,
        service: config.service,
        deadlines: config.deadlines,
        cors: Cors::new(config.allow_origin, "GET, POST", "authorization, content-type", MAX_STREAMS_HEADER),
    });
    let accepted = Arc::new(AtomicUsize::new(0));
    let per_ip = PerIpConnections::new(config.max_connections_per_ip);
    let accept = tokio::spawn(accept_loop(endpoint.clone(), app, accepted.clone(), per_ip));
    Ok(H3Server { endpoint, local_addr, accept, accepted })
}

/// The quinn server configuration: our identity, ALPN `h3`, `config`'s congestion controller.
pub(crate) fn endpoint_config(config: &ServerConfig) -> Result<quinn::ServerConfig, Error> {
    // One request above the limit may open, so that it is refused with a 429 the client understands instead of
    // waiting for QUIC stream credit; beyond that, requests wait for credit.
    let peer = PeerStreams::http3(config.limits.max_streams.saturating_add(1));
    tlab_quic_common::server_config(&config.identity, ALPN_H3, config.congestion, peer)
}

/// The running server; dropping it closes every connection.
pub(crate) struct H3Server {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    /// QUIC connections that completed their handshake so far.
    accepted: Arc<AtomicUsize>,
}

impl H3Server {
    /// How many QUIC connections completed their handshake so far (a migrated connection is not a new one).
    #[cfg(test)]
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.accept.abort();
        self.endpoint.close(close_code(Code::H3_NO_ERROR), b"server shutdown");
    }
}

impl Drop for H3Server {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl tlab_core::Server for H3Server {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn url(&self) -> String {
        format!("https://{}{STREAM_PATH}", self.local_addr)
    }

    async fn shutdown(self: Box<Self>) {
        self.close();
        tracing::debug!(connections = self.accepted.load(Ordering::Acquire), "HTTP/3 server shut down");
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, app: Arc<App>, accepted: Arc<AtomicUsize>, per_ip: PerIpConnections) {
    // Garbage datagrams never become an `Incoming`: quinn drops what does not parse as QUIC.
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        let Some(permit) = per_ip.acquire(peer.ip()) else {
            tracing::warn!(%peer, max = per_ip.max(), "connection refused: too many connections from this address");
            incoming.refuse();
            continue;
        };
        let (app, accepted) = (app.clone(), accepted.clone());
        tokio::spawn(async move {
            let clock = ConnectionClock::new(app.deadlines);
            let conn = match within(app.deadlines.handshake, "QUIC handshake", incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "QUIC handshake failed"),
                Err(e) => return tracing::warn!(%peer, error = %e, "QUIC handshake timed out"),
            };
            clock.handshake_done();
            let number = accepted.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::debug!(%peer, connection = number, "QUIC connection accepted");
            serve_connection(conn, app, clock, permit).await;
        });
    }
}

/// Accepts the requests of one connection until it closes, or closes it (`H3_NO_ERROR`) when no request arrives
/// within the first-request deadline or it stays idle (no request open) for the idle deadline.
async fn serve_connection(conn: quinn::Connection, app: Arc<App>, clock: Arc<ConnectionClock>, _permit: IpPermit) {
    let peer = conn.remote_address();
    let quic = conn.clone();
    let setup = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn));
    let mut h3 = match within(app.deadlines.first_request, "HTTP/3 setup", setup).await {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "HTTP/3 connection setup failed"),
        Err(e) => {
            tracing::info!(%peer, error = %e, "HTTP/3 connection closed");
            return quic.close(close_code(Code::H3_NO_ERROR), b"deadline");
        }
    };
    let slots = StreamSlots::default();
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            () = clock.expired() => {
                let phase = if clock.requested() { "idle" } else { "no request in time" };
                tracing::info!(%peer, phase, "HTTP/3 connection closed by its deadline");
                return quic.close(close_code(Code::H3_NO_ERROR), phase.as_bytes());
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                let (app, slots, busy) = (app.clone(), slots.clone(), clock.busy());
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => app.handle(req, stream, &slots).await,
                        Err(e) => tracing::warn!(%peer, error = %e, "bad HTTP/3 request"),
                    }
                    drop(busy);
                });
            }
            Ok(None) => break,
            Err(e) if e.is_h3_no_error() => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
}

/// What the server checks requests against, and the application it serves.
struct App {
    token: String,
    /// `Bearer <token>`, the expected `authorization` value.
    bearer: String,
    limits: Limits,
    service: Arc<dyn StreamService>,
    deadlines: Deadlines,
    cors: Cors,
}

/// A request the server accepts.
enum Accepted {
    /// The token probe: answered 204.
    Auth,
    /// A logical stream.
    Stream(StreamOpen, StreamSlot),
}

impl App {
    /// Answers one request: a refusal, the token probe's 204, or a 200 whose bodies become a served stream.
    async fn handle(&self, req: Request<()>, mut stream: RequestStream, slots: &StreamSlots) {
        if Cors::is_preflight(&req) {
            return respond(stream, self.cors.preflight(req.headers())).await;
        }
        let with_cors = |mut response: Response<()>| {
            self.cors.apply(req.headers(), response.headers_mut());
            response
        };
        let (open, slot) = match self.route(&req, slots) {
            Ok(Accepted::Stream(open, slot)) => (open, slot),
            Ok(Accepted::Auth) => return respond(stream, with_cors(status_only(StatusCode::NO_CONTENT))).await,
            Err(refusal) => return respond(stream, with_cors(refusal)).await,
        };
        let ok = with_cors(Response::builder().header(header::CONTENT_TYPE, CONTENT_TYPE).body(()).expect("valid response"));
        if let Err(e) = stream.send_response(ok).await {
            return tracing::debug!(stream = open.stream, error = %e, "response headers not sent");
        }
        let (send, recv) = stream.split();
        let shared = Shared::new(Some(slot));
        let stream = MessageStream {
            sink: Box::new(BodySink::new(send, self.limits, shared.clone())),
            source: Box::new(BodySource::new(recv, self.limits, open.stream, shared)),
        };
        // Already on this request's own task.
        self.service.serve(open, stream).await;
    }

    /// Checks, in order: token (401), path and method (404, 405), open query (400), stream limit (429).
    fn route(&self, req: &Request<()>, slots: &StreamSlots) -> Result<Accepted, Response<()>> {
        let query = req.uri().query().unwrap_or("");
        let header_ok = req.headers().get(header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == self.bearer.as_bytes());
        let query_ok = query.split('&').any(|pair| pair.strip_prefix("token=") == Some(self.token.as_str()));
        if !header_ok && !query_ok {
            return Err(refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token", req));
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, AUTH_PATH) => return Ok(Accepted::Auth),
            (&Method::POST, STREAM_PATH) => {}
            (_, AUTH_PATH | STREAM_PATH) => return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "wrong method", req)),
            _ => return Err(refuse(StatusCode::NOT_FOUND, "unknown path", req)),
        }
        let open = StreamOpen::from_query(query).map_err(|e| refuse(StatusCode::BAD_REQUEST, &e.to_string(), req))?;
        let slot = slots.acquire(&self.limits, open.stream).map_err(|e| {
            let mut refusal = refuse(StatusCode::TOO_MANY_REQUESTS, &e.to_string(), req);
            refusal.headers_mut().insert(MAX_STREAMS_HEADER, self.limits.max_streams.into());
            refusal
        })?;
        Ok(Accepted::Stream(open, slot))
    }
}

/// Logs why a request is refused and builds the refusal.
fn refuse(status: StatusCode, reason: &str, req: &Request<()>) -> Response<()> {
    tracing::warn!(%status, method = %req.method(), path = req.uri().path(), reason, "HTTP/3 request refused");
    status_only(status)
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

/// Sends a body-less response and ends the request stream.
async fn respond(mut stream: RequestStream, response: Response<()>) {
    let outcome = async {
        stream.send_response(response).await?;
        stream.finish().await
    };
    if let Err(e) = outcome.await {
        tracing::debug!(error = %e, "response not sent");
    }
}
