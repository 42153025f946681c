//! The server: tonic over our own TLS accept loop ([`tlab_core::server`]'s, with its deadlines and per-IP cap), each
//! RPC handed to [`tlab_core::ServerConfig::service`] on its own task. The `grpc-web` mode is the same server with
//! HTTP/1.1 accepted beside HTTP/2, tonic-web translating gRPC-Web requests, and CORS answered for browser pages.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tlab_core::message::MAX_STREAM_ID;
use tlab_core::{
    Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamMode, StreamOpen, StreamService,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tlab_core::server::{Accepted, Busy, ConnectionClock, IpPermit, PerIpConnections, Watched, accept_tcp, within};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::proto::transport_server::{Transport as TransportRpc, TransportServer};
use crate::proto::{Frame, SinkSummary, SourceRequest};
use crate::wire::{
    ALPN_H2, ALPN_HTTP1, CHANNEL_CAPACITY, FRAME_OVERHEAD, MAX_STREAMS_METADATA, OPEN_METADATA, StreamSlot, error_from_status,
    status_for, to_frame, to_message,
};

/// The trailing metadata of a call refused because its connection is over `--max-connections-per-ip`.
const MAX_CONNECTIONS_METADATA: &str = "tlab-max-connections-per-ip";
/// How long [`tlab_core::Server::shutdown`] waits for tonic to wind down after the connections were cut.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The HTTP/2 connection receive window (hyper's default is 1 MiB). h2 also caps the framing overhead of small DATA
/// frames received and not yet read at half this window, connection-wide, and answers more with GOAWAY
/// (ENHANCE_YOUR_CALM, "too_many_data_frames"), which ends every RPC: with 1 MiB, about 2,400 small gRPC messages
/// waiting for slow handlers (CPU load, a source that never reads its request stream) were enough. 64 MiB lets
/// what the 1 MiB per-RPC windows admit wait on a few dozen busy RPCs; hyper and tonic expose no separate knob.
const CONNECTION_WINDOW: u32 = 64 << 20;

/// Binds, starts the TLS accept loop and the tonic server; `web`: the gRPC-Web flavour (see the module docs).
pub(crate) async fn serve(config: tlab_core::ServerConfig, web: bool) -> Result<Box<dyn tlab_core::Server>, Error> {
    let alpn: &[&[u8]] = if web { &[ALPN_H2, ALPN_HTTP1] } else { &[ALPN_H2] };
    let acceptor = TlsAcceptor::from(Arc::new(config.identity.server_config(alpn)?));
    let expected_auth: AsciiMetadataValue = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| Error::Config("the token is not valid in an HTTP header".into()))?;
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;

    let (conn_tx, conn_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (kill_tx, kill_rx) = watch::channel(());
    let per_ip = PerIpConnections::new(config.max_connections_per_ip);
    let max_per_ip = config.max_connections_per_ip.unwrap_or(u32::MAX);
    let accept = tokio::spawn(accept_tcp(listener, config.deadlines, per_ip, "grpc", move |accepted| {
        handshake(accepted, acceptor.clone(), conn_tx.clone(), kill_rx.clone())
    }));

    let handler = Handler { service: config.service, limits: config.limits };
    let rpc = TransportServer::new(handler).max_decoding_message_size(config.limits.max_message_size + FRAME_OVERHEAD);
    let authorize = move |req: Request<()>| {
        if let Some(conn) = req.extensions().get::<ConnInfo>() {
            if conn.over_cap {
                let mut metadata = MetadataMap::new();
                metadata.insert(MAX_CONNECTIONS_METADATA, max_per_ip.into());
                let reason = "too many connections from this address";
                return Err(Status::with_metadata(Code::ResourceExhausted, reason, metadata));
            }
            conn.clock.request_seen();
        }
        if req.metadata().get("authorization") == Some(&expected_auth) {
            Ok(req)
        } else {
            tracing::warn!(peer = ?req.extensions().get::<ConnInfo>().map(|c| c.peer), "RPC refused: missing or wrong token");
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder()
        // One slot above the limit lets an excess RPC reach the handler, which refuses it with RESOURCE_EXHAUSTED;
        // RPCs beyond that wait in the client's HTTP/2 queue for a free slot.
        .max_concurrent_streams(config.limits.max_streams.saturating_add(1))
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(None);
    let service = InterceptedService::new(rpc, authorize);
    let incoming = ReceiverStream::new(conn_rx);
    let stopped = async {
        let _ = stop_rx.await;
    };
    let serve = if web {
        let router = builder.accept_http1(true).layer(web_cors(&config.allow_origin)).layer(tonic_web::GrpcWebLayer::new()).add_service(service);
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
    } else {
        tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(incoming, stopped))
    };
    Ok(Box::new(GrpcServer { local_addr, accept, serve, stop: Some(stop_tx), kill: Some(kill_tx) }))
}

/// CORS for gRPC-Web calls from a page of another origin (`--allow-origin`: any, or the listed ones): the
/// preflight allows the headers a gRPC-Web client sends, and the response exposes the status headers so that the
/// page can read them.
fn web_cors(origins: &tlab_core::config::AllowOrigin) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let header = http::HeaderName::from_static;
    let allow_origin = match origins {
        tlab_core::config::AllowOrigin::Any => AllowOrigin::mirror_request(),
        tlab_core::config::AllowOrigin::Only(list) => {
            AllowOrigin::list(list.iter().filter_map(|origin| http::HeaderValue::from_str(origin).ok()))
        }
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([http::Method::POST])
        .allow_headers([
            header("authorization"),
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header(OPEN_METADATA),
        ])
        .expose_headers([header("grpc-status"), header("grpc-message")])
}

/// Runs one accepted connection's TLS handshake (on the accept loop's task set) and hands the finished connection to
/// tonic, which serves it on a task of its own.
async fn handshake(
    accepted: Accepted,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<io::Result<ConnIo>>,
    mut kill: watch::Receiver<()>,
) -> Result<(), Error> {
    let Accepted { tcp, peer, permit, clock } = accepted;
    let deadline = clock.deadlines().handshake;
    let tls = within(deadline, "TLS handshake", acceptor.accept(Watched::new(tcp, clock.clone())))
        .await?
        .map_err(|e| Error::Tls(e.to_string()))?;
    clock.handshake_done();
    let info = ConnInfo { peer, open_streams: Arc::default(), clock, over_cap: permit.is_none() };
    let killed = Box::pin(async move {
        let _ = kill.changed().await;
    });
    let _ = conns.send(Ok(ConnIo { tls, info, killed, _permit: permit })).await;
    Ok(())
}

struct GrpcServer {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
    stop: Option<oneshot::Sender<()>>,
    /// Dropping it cuts every connection (see [`ConnIo`]).
    kill: Option<watch::Sender<()>>,
}

#[async_trait]
impl tlab_core::Server for GrpcServer {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    async fn shutdown(mut self: Box<Self>) {
        self.accept.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.kill = None;
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut self.serve).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("gRPC server did not stop in time"),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.serve.abort();
    }
}

/// What tonic puts into every request's extensions for this connection.
#[derive(Clone)]
struct ConnInfo {
    peer: SocketAddr,
    /// RPCs of this connection whose stream halves are alive, checked against `max_streams`.
    open_streams: Arc<AtomicUsize>,
    /// The connection's deadlines: the interceptor marks its first request, every admitted RPC keeps it busy.
    clock: Arc<ConnectionClock>,
    /// The client's IP is over `--max-connections-per-ip`: every call is refused, and the first-request deadline
    /// closes the connection.
    over_cap: bool,
}

/// A server TLS connection that fails its reads once the server shuts down: tonic spawns the connection tasks
/// itself, so this is how shutdown reaches them.
struct ConnIo {
    tls: TlsStream<Watched<TcpStream>>,
    info: ConnInfo,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The connection's count against the per-IP cap (`None`: over the cap).
    _permit: Option<IpPermit>,
}

impl Connected for ConnIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "server shut down")));
        }
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// An admitted RPC: its stream slot and its connection's busy mark, held by both halves until both are gone.
struct Admission {
    _slot: Arc<StreamSlot>,
    _busy: Busy,
}

/// Responses flow from the service through this channel; the first `Err` ends the RPC with that status.
type ResponseTx = mpsc::Sender<Result<Frame, Status>>;

/// The RPC handlers: each turns its call into a [`StreamOpen`] plus a [`MessageStream`] for the service.
struct Handler {
    service: Arc<dyn StreamService>,
    limits: Limits,
}

impl Handler {
    /// Counts the RPC against its connection's `max_streams` (and marks the connection busy while it runs), or
    /// refuses it with RESOURCE_EXHAUSTED.
    fn admit<T>(&self, req: &Request<T>, stream: u32) -> Result<Option<Arc<Admission>>, Status> {
        let Some(conn) = req.extensions().get::<ConnInfo>() else {
            return Ok(None);
        };
        let slot = StreamSlot::acquire(&conn.open_streams, &self.limits, stream).map_err(|e| {
            tracing::warn!(peer = %conn.peer, stream, error = %e, "stream refused");
            let mut metadata = MetadataMap::new();
            metadata.insert(MAX_STREAMS_METADATA, self.limits.max_streams.into());
            Status::with_metadata(Code::ResourceExhausted, e.to_string(), metadata)
        })?;
        Ok(Some(Arc::new(Admission { _slot: slot, _busy: conn.clock.busy() })))
    }

    /// Runs the service on its own task; its responses go to `tx`, its requests come from `requests`.
    fn spawn(
        &self,
        open: StreamOpen,
        slot: Option<Arc<Admission>>,
        tx: ResponseTx,
        requests: Option<Streaming<Frame>>,
    ) {
        let source = RequestSource {
            requests,
            errors: tx.downgrade(),
            limits: self.limits,
            stream: open.stream,
            failed: None,
            _slot: slot.clone(),
        };
        let sink = ResponseSink { tx: Some(tx), _slot: slot };
        let service = self.service.clone();
        tokio::spawn(async move {
            service.serve(open, MessageStream { sink: Box::new(sink), source: Box::new(source) }).await;
        });
    }
}

fn open_from_metadata(metadata: &MetadataMap) -> Result<Option<StreamOpen>, Status> {
    let Some(value) = metadata.get(OPEN_METADATA) else {
        return Ok(None);
    };
    let query = value.to_str().map_err(|_| Status::invalid_argument(format!("{OPEN_METADATA} is not ASCII")))?;
    StreamOpen::from_query(query).map(Some).map_err(|e| {
        tracing::warn!(error = %e, "bad {OPEN_METADATA}");
        Status::invalid_argument(e.to_string())
    })
}

#[async_trait]
impl TransportRpc for Handler {
    type StreamStream = ReceiverStream<Result<Frame, Status>>;
    type SourceStream = ReceiverStream<Result<Frame, Status>>;

    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Self::StreamStream>, Status> {
        let open = open_from_metadata(req.metadata())?.unwrap_or(StreamOpen::echo(0));
        let slot = self.admit(&req, open.stream)?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.spawn(open, slot, tx, Some(req.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn source(&self, req: Request<SourceRequest>) -> Result<Response<Self::SourceStream>, Status> {
        let slot = self.admit(&req, req.get_ref().stream)?;
        let SourceRequest { stream, count, size, interval_us } = req.into_inner();
        if stream > MAX_STREAM_ID {
            return Err(Status::invalid_argument(format!("stream id {stream} above {MAX_STREAM_ID}")));
        }
        let open =
            StreamOpen { stream, mode: StreamMode::Source { count, size: size as usize, interval_us }, resume: None };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.spawn(open, slot, tx, None);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn sink(&self, req: Request<Streaming<Frame>>) -> Result<Response<SinkSummary>, Status> {
        let stream = open_from_metadata(req.metadata())?.map_or(0, |open| open.stream);
        let slot = self.admit(&req, stream)?;
        let (tx, mut rx) = mpsc::channel(1);
        self.spawn(StreamOpen { stream, mode: StreamMode::Sink, resume: None }, slot, tx, Some(req.into_inner()));
        // The service answers a sink with one message whose 8-byte big-endian payload is the count.
        match rx.recv().await {
            Some(Ok(frame)) => match <[u8; 8]>::try_from(&frame.payload[..]) {
                Ok(count) => Ok(Response::new(SinkSummary { received: u64::from_be_bytes(count) })),
                Err(_) => Err(Status::internal("the service's sink summary is not 8 bytes")),
            },
            Some(Err(status)) => Err(status),
            None => Err(Status::internal("the service ended the sink without a summary")),
        }
    }
}

/// The service's sending half: frames into the response stream.
struct ResponseSink {
    tx: Option<ResponseTx>,
    _slot: Option<Arc<Admission>>,
}

#[async_trait]
impl MessageSink for ResponseSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::Closed("stream already finished".into()))?;
        tx.send(Ok(to_frame(msg))).await.map_err(|_| Error::Closed("the RPC has ended".into()))
    }

    async fn finish(&mut self) -> Result<(), Error> {
        // With the last sender gone the response stream ends and tonic sends the OK status.
        self.tx = None;
        Ok(())
    }
}

/// The service's receiving half: frames of the request stream (none for `Source` calls).
struct RequestSource {
    requests: Option<Streaming<Frame>>,
    /// Where a bad request is reported to the client, unless the service already finished its responses.
    errors: mpsc::WeakSender<Result<Frame, Status>>,
    limits: Limits,
    stream: u32,
    /// Set once the request stream failed; later calls repeat it.
    failed: Option<String>,
    _slot: Option<Arc<Admission>>,
}

impl RequestSource {
    /// Stops reading; later calls repeat `error`.
    fn stop(&mut self, error: Error) -> Error {
        self.requests = None;
        self.failed = Some(error.to_string());
        error
    }

    /// Logs why the client's request is refused, ends the RPC with `status` and stops reading.
    fn refuse(&mut self, status: Status, error: Error) -> Error {
        tracing::warn!(stream = self.stream, error = %error, "gRPC stream closed: bad request");
        if let Some(tx) = self.errors.upgrade() {
            // Off this task so that `recv` stays cancel-safe; the status queues behind responses already sent.
            tokio::spawn(async move {
                let _ = tx.send(Err(status)).await;
            });
        }
        self.stop(error)
    }
}

#[async_trait]
impl MessageSource for RequestSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        let Some(requests) = self.requests.as_mut() else {
            return match &self.failed {
                Some(reason) => Err(Error::Closed(reason.clone())),
                None => Ok(None),
            };
        };
        match requests.message().await {
            Ok(Some(frame)) => match to_message(frame, &self.limits) {
                Ok(msg) if msg.stream == self.stream => Ok(Some(msg)),
                Ok(msg) => {
                    let error = Error::Protocol(format!("frame of stream {} on the RPC of stream {}", msg.stream, self.stream));
                    Err(self.refuse(Status::invalid_argument(error.to_string()), error))
                }
                Err(e) => Err(self.refuse(status_for(&e), e)),
            },
            Ok(None) => Ok(None),
            Err(status) => {
                let error = Error::Protocol(status.message().to_string());
                match status.code() {
                    // tonic refuses a message above `max_decoding_message_size` from its length prefix alone.
                    Code::OutOfRange => Err(self.refuse(Status::resource_exhausted(status.message()), error)),
                    // Undecodable bytes; a broken connection also gives INTERNAL, but with the h2 error as source.
                    Code::Internal if std::error::Error::source(&status).is_none() => {
                        Err(self.refuse(Status::invalid_argument(status.message()), error))
                    }
                    _ => {
                        tracing::debug!(stream = self.stream, %status, "request stream ended abnormally");
                        Err(self.stop(error_from_status(&status, self.stream)))
                    }
                }
            }
        }
    }
}
