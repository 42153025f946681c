//! The server: axum routes on hyper (HTTP/1.1 and HTTP/2 on one port, chosen by ALPN) over tokio-rustls, with
//! [`tlab_core::server`]'s deadlines and per-IP cap (a connection over the cap gets `429` to every request) and its
//! CORS policy: preflights are answered before anything else, and every answer names the allowed origin, so that a
//! page of any origin can use EventSource and fetch.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use http::{HeaderMap, StatusCode, header};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tlab_core::frame;
use tlab_core::{
    Error, Limits, Message, MessageSink, MessageSource, MessageStream, Server, ServerConfig, StreamId, StreamService,
};
use tlab_core::server::cors::Cors;
use tlab_core::server::{Accepted, Busy, LogBudget, PerIpConnections, Watched, accept_tcp, within};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::wire::{self, AUTH, END, EVENTS, HELLO, MESSAGES, PREFIX};

/// Events buffered per stream before the service's `send` waits for the client to read.
const DOWNLINK_QUEUE: usize = 256;
/// Uplink batches (one per POST body chunk) buffered per stream before a POST waits for the service to read.
const UPLINK_QUEUE: usize = 64;
/// Queued events are coalesced into one body chunk up to this size (fewer writes and HTTP/2 DATA frames).
const COALESCE_BYTES: usize = 64 << 10;

/// What a POST delivers into a stream's receive side.
enum Uplink {
    Batch(Vec<Message>),
    Fin,
    /// The stream was closed because of a bad POST; the service's `recv` fails with this reason.
    Abort(String),
}

struct Entry {
    /// Distinguishes this registration from a later stream reusing the same (conn, stream).
    id: u64,
    /// `None` once the client finished its direction.
    uplink: Option<mpsc::Sender<Uplink>>,
}

struct Shared {
    /// Rate-limits the log lines of refused tokens.
    log_budget: LogBudget,
    token: String,
    limits: Limits,
    service: Arc<dyn StreamService>,
    /// Open streams by client connection id, then stream id.
    streams: Mutex<HashMap<u64, HashMap<StreamId, Entry>>>,
    next_entry: AtomicU64,
}

impl Shared {
    /// Whether the request carries the token; a refusal is logged (rate-limited).
    fn authorized(&self, headers: &HeaderMap, query: &str) -> bool {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let ok = bearer.or_else(|| wire::query_value(query, "token")) == Some(self.token.as_str());
        if !ok && self.log_budget.allow() {
            tracing::warn!("SSE request refused: 401 missing or wrong token");
        }
        ok
    }

    fn remove(&self, conn: u64, stream: StreamId, id: u64) {
        let mut table = self.streams.lock().unwrap();
        if let Some(streams) = table.get_mut(&conn) {
            if streams.get(&stream).is_some_and(|e| e.id == id) {
                streams.remove(&stream);
            }
            if streams.is_empty() {
                table.remove(&conn);
            }
        }
    }
}

/// A stream's place in [`Shared::streams`]; removing it closes the stream's receive side.
struct Registration {
    shared: Arc<Shared>,
    conn: u64,
    stream: StreamId,
    id: u64,
}

impl Registration {
    fn remove(&self) {
        self.shared.remove(self.conn, self.stream, self.id);
    }
}

/// Starts the server on `config.listen`.
pub(crate) async fn serve(config: ServerConfig) -> Result<Box<dyn Server>, Error> {
    let tls = TlsAcceptor::from(Arc::new(config.identity.server_config(&[b"h2", b"http/1.1"])?));
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        log_budget: LogBudget::default(),
        token: config.token,
        limits: config.limits,
        service: config.service,
        streams: Mutex::default(),
        next_entry: AtomicU64::new(0),
    });
    let router = Router::new()
        .route(&format!("{PREFIX}{EVENTS}"), get(events))
        .route(&format!("{PREFIX}{MESSAGES}"), post(messages))
        .route(&format!("{PREFIX}{AUTH}"), get(auth))
        .with_state(shared.clone());
    // Each logical stream is one GET plus at most one POST at a time.
    let max_h2_streams = shared.limits.max_streams.saturating_mul(2).saturating_add(16);
    let (stop, stopped) = oneshot::channel();
    let per_ip = PerIpConnections::new(config.max_connections_per_ip);
    let cors = Arc::new(Cors::new(config.allow_origin, "GET, POST", "authorization, content-type, last-event-id", wire::MAX_STREAMS_HEADER));
    let accept = accept_tcp(listener, config.deadlines, per_ip, "sse", move |accepted| {
        serve_connection(accepted, tls.clone(), router.clone(), cors.clone(), max_h2_streams)
    });
    // Dropping the accept loop (at stop) drops, and so aborts, every connection task.
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = stopped => {}
            () = accept => {}
        }
    });
    Ok(Box::new(SseServer { addr, stop, task, shared }))
}

async fn serve_connection(
    accepted: Accepted,
    tls: TlsAcceptor,
    router: Router,
    cors: Arc<Cors>,
    max_h2_streams: u32,
) -> Result<(), Error> {
    let Accepted { tcp, peer, permit, clock } = accepted;
    let deadlines = clock.deadlines();
    let stream = within(deadlines.handshake, "TLS handshake", tls.accept(Watched::new(tcp, clock.clone())))
        .await?
        .map_err(|e| Error::Tls(e.to_string()))?;
    clock.handshake_done();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(max_h2_streams);
    let over_cap = permit.is_none();
    // Every request marks the connection busy until its response body is gone, so a quiet event stream is never
    // idle; a connection over the per-IP cap gets 429s and no busy marks, so its first-request deadline closes it.
    let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (router, cors) = (router.clone(), cors.clone());
        let preflight = Cors::is_preflight(&request);
        if preflight {
            clock.request_seen();
        }
        let busy = (!over_cap && !preflight).then(|| clock.busy());
        async move {
            if preflight {
                return Ok::<_, Infallible>(cors.preflight(request.headers()).map(|()| Body::empty()));
            }
            let request_headers = request.headers().clone();
            let mut response = match busy {
                None => too_many_connections(request.version()),
                Some(busy) => router.oneshot(request).await?.map(|body| Body::new(HeldBody { body, _busy: busy })),
            };
            cors.apply(&request_headers, response.headers_mut());
            Ok(response)
        }
    });
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(permit);
    Ok(())
}

/// The answer to every request of a connection over the per-IP cap.
fn too_many_connections(version: http::Version) -> Response {
    let mut response = status(StatusCode::TOO_MANY_REQUESTS, "too many connections from this address");
    if version < http::Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// A response body that keeps its connection marked busy until it ends or is dropped.
struct HeldBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

struct SseServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Server for SseServer {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self) -> String {
        format!("https://{}{PREFIX}", self.addr)
    }

    async fn shutdown(self: Box<Self>) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        // Closing every receive side ends services still waiting for uplink messages.
        self.shared.streams.lock().unwrap().clear();
    }
}

fn status(code: StatusCode, reason: impl Into<String>) -> Response {
    (code, reason.into()).into_response()
}

async fn auth(State(shared): State<Arc<Shared>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if !shared.authorized(&headers, query.as_deref().unwrap_or_default()) {
        return status(StatusCode::UNAUTHORIZED, "bad token");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /tlab/sse/events?<StreamOpen>&conn=<hex>`: registers the stream, hands it to the service, streams events.
async fn events(State(shared): State<Arc<Shared>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    if !shared.authorized(&headers, &query) {
        return status(StatusCode::UNAUTHORIZED, "bad token");
    }
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (conn, open) =
        match wire::conn_id(&query).and_then(|conn| Ok((conn, wire::stream_open(&query, last_event_id)?))) {
            Ok(parsed) => parsed,
            Err(e) => return status(StatusCode::BAD_REQUEST, e.to_string()),
        };
    let (uplink_tx, uplink_rx) = mpsc::channel(UPLINK_QUEUE);
    let id = shared.next_entry.fetch_add(1, Ordering::Relaxed);
    {
        let mut table = shared.streams.lock().unwrap();
        let streams = table.entry(conn).or_default();
        let refused = if streams.contains_key(&open.stream) {
            Some(status(StatusCode::CONFLICT, format!("stream {} is already open", open.stream)))
        } else if let Err(e) = shared.limits.check_streams(open.stream, streams.len()) {
            tracing::warn!(conn = format!("{conn:x}"), error = %e, "stream refused");
            let limit = [(wire::MAX_STREAMS_HEADER, shared.limits.max_streams.to_string())];
            Some((StatusCode::TOO_MANY_REQUESTS, limit, e.to_string()).into_response())
        } else {
            streams.insert(open.stream, Entry { id, uplink: Some(uplink_tx) });
            None
        };
        if let Some(response) = refused {
            if streams.is_empty() {
                table.remove(&conn);
            }
            return response;
        }
    }
    // Shared by both halves: the entry outlives the uplink's `fin` (a later POST gets 409) and goes when both
    // halves are gone, or at once when the client drops the event stream.
    let registration = Arc::new(DropRegistration(Registration { shared: shared.clone(), conn, stream: open.stream, id }));
    let (downlink_tx, downlink_rx) = mpsc::channel(DOWNLINK_QUEUE);
    let graceful = Arc::new(AtomicBool::new(false));
    let stream = MessageStream {
        sink: Box::new(EventSink { tx: Some(downlink_tx), graceful: graceful.clone(), scratch: BytesMut::new() }),
        source: Box::new(UplinkSource {
            rx: uplink_rx,
            pending: Vec::new().into_iter(),
            finished: false,
            _registration: registration.clone(),
        }),
    };
    let service = shared.service.clone();
    tokio::spawn(async move { service.serve(open, stream).await });
    let body = EventBody { hello: true, rx: downlink_rx, graceful, done: false, registration };
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-store")], Body::new(body))
        .into_response()
}

/// `POST /tlab/sse/messages?conn=<hex>&stream=<n>[&fin=1]`: delivers the body's frames into the stream, in order.
async fn messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let query = query.unwrap_or_default();
    if !shared.authorized(&headers, &query) {
        return status(StatusCode::UNAUTHORIZED, "bad token");
    }
    let stream: Option<StreamId> = wire::query_value(&query, "stream").and_then(|s| s.parse().ok());
    let (conn, stream) = match (wire::conn_id(&query), stream) {
        (Ok(conn), Some(stream)) => (conn, stream),
        _ => return status(StatusCode::BAD_REQUEST, "`conn` (hex) and `stream` (number) are required"),
    };
    let fin = wire::query_value(&query, "fin") == Some("1");
    let lookup =
        shared.streams.lock().unwrap().get(&conn).and_then(|s| s.get(&stream)).map(|e| (e.id, e.uplink.clone()));
    let (id, uplink) = match lookup {
        None => return status(StatusCode::NOT_FOUND, format!("no stream {stream} on conn {conn:x}")),
        Some((_, None)) => return status(StatusCode::CONFLICT, format!("stream {stream} already finished its uplink")),
        Some((id, Some(uplink))) => (id, uplink),
    };
    // A bad frame closes the stream: its service sees the reason, its event stream ends without `end`.
    let reject = |code: StatusCode, reason: String| {
        tracing::warn!(conn = format!("{conn:x}"), stream, %reason, "closing stream");
        shared.remove(conn, stream, id);
        let _ = uplink.try_send(Uplink::Abort(reason.clone()));
        status(code, reason)
    };
    let max = shared.limits.max_message_size;
    let mut buf = BytesMut::new();
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let Ok(chunk) = chunk else {
            return reject(StatusCode::BAD_REQUEST, "request body broken off".into());
        };
        buf.extend_from_slice(&chunk);
        let mut batch = Vec::new();
        loop {
            match frame::decode_next(&mut buf, max) {
                Ok(Some(msg)) if msg.stream == stream => batch.push(msg),
                Ok(Some(msg)) => {
                    return reject(
                        StatusCode::BAD_REQUEST,
                        format!("frame of stream {} posted to stream {stream}", msg.stream),
                    );
                }
                Ok(None) => break,
                Err(e @ Error::MessageTooLarge { .. }) => return reject(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
                Err(e) => return reject(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        if !batch.is_empty() && uplink.send(Uplink::Batch(batch)).await.is_err() {
            return status(StatusCode::NOT_FOUND, format!("stream {stream} closed"));
        }
    }
    if !buf.is_empty() {
        return reject(StatusCode::BAD_REQUEST, format!("body ends inside a frame ({} bytes left)", buf.len()));
    }
    if fin {
        if let Some(entry) = shared.streams.lock().unwrap().get_mut(&conn).and_then(|s| s.get_mut(&stream)) {
            entry.uplink = None;
        }
        if uplink.send(Uplink::Fin).await.is_err() {
            return status(StatusCode::NOT_FOUND, format!("stream {stream} closed"));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The service's sending half: each message becomes one event on the response body.
struct EventSink {
    tx: Option<mpsc::Sender<Bytes>>,
    graceful: Arc<AtomicBool>,
    scratch: BytesMut,
}

#[async_trait]
impl MessageSink for EventSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::Closed("stream already finished".into()))?;
        let event = wire::encode_event(&msg, &mut self.scratch);
        tx.send(event).await.map_err(|_| Error::Closed("the client closed the event stream".into()))
    }

    async fn finish(&mut self) -> Result<(), Error> {
        // The body writes `event: end` once it has drained the queue and sees this flag.
        self.graceful.store(true, Ordering::Release);
        self.tx = None;
        Ok(())
    }
}

/// The service's receiving half, fed by POSTs.
struct UplinkSource {
    rx: mpsc::Receiver<Uplink>,
    pending: std::vec::IntoIter<Message>,
    finished: bool,
    /// The stream's registration, removed once the event body is gone too: later POSTs get 404.
    _registration: Arc<DropRegistration>,
}

#[async_trait]
impl MessageSource for UplinkSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if let Some(msg) = self.pending.next() {
                return Ok(Some(msg));
            }
            if self.finished {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Uplink::Batch(batch)) => self.pending = batch.into_iter(),
                Some(Uplink::Fin) => self.finished = true,
                Some(Uplink::Abort(reason)) => return Err(Error::Protocol(reason)),
                None => return Err(Error::Closed("the client's event stream closed before it finished".into())),
            }
        }
    }
}

/// A [`Registration`] removed when dropped.
struct DropRegistration(Registration);

impl Drop for DropRegistration {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// The response body: the hello comment, then queued events (coalesced), then `event: end` if the service finished.
struct EventBody {
    hello: bool,
    rx: mpsc::Receiver<Bytes>,
    graceful: Arc<AtomicBool>,
    done: bool,
    /// Removed at once when the body goes away without a graceful end (the client disconnected or the service
    /// failed), else once the source is gone too.
    registration: Arc<DropRegistration>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if std::mem::take(&mut self.hello) {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HELLO)))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(first) => {
                let Ok(second) = self.rx.try_recv() else {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                };
                let mut chunk = BytesMut::with_capacity(COALESCE_BYTES.max(first.len() + second.len()));
                chunk.extend_from_slice(&first);
                chunk.extend_from_slice(&second);
                while chunk.len() < COALESCE_BYTES {
                    let Ok(next) = self.rx.try_recv() else { break };
                    chunk.extend_from_slice(&next);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
            }
            None => {
                self.done = true;
                if self.graceful.load(Ordering::Acquire) {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(END)))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        if !(self.done && self.graceful.load(Ordering::Acquire)) {
            self.registration.0.remove();
        }
    }
}
