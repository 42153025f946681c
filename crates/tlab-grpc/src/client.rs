//! The client: one tonic [`Channel`] (one HTTP/2 connection over our own TLS dialer); every logical stream is an
//! RPC on it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{
    ClientConfig, Connection, Error, Limits, Message, MessageSink, MessageSource, MessageStream, Milestones, StreamId,
    StreamMode, StreamOpen,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Response, Status, Streaming};

use crate::proto::transport_client::TransportClient;
use crate::proto::{Frame, SinkSummary, SourceRequest};
use crate::wire::{
    ALPN_H2, CHANNEL_CAPACITY, FRAME_OVERHEAD, OPEN_METADATA, StreamSlot, error_from_status, to_frame, to_message,
};

/// Dials TCP, then TLS with ALPN h2 and certificate pinning; tonic runs HTTP/2 on top. Clones share `milestones`,
/// which keep the steps of the first connection dialled.
#[derive(Clone)]
pub(crate) struct TlsDialer {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: TlsConnector,
    pub(crate) milestones: MilestoneLog,
}

impl TlsDialer {
    /// A dialer with a fresh milestone log.
    pub(crate) fn new(addr: SocketAddr, tls: TlsConnector) -> Self {
        Self { addr, tls, milestones: MilestoneLog::default() }
    }
}

impl Service<Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let TlsDialer { addr, tls, milestones } = self.clone();
        Box::pin(async move {
            let connect_error = |reason: String| Error::Connect { address: addr.to_string(), reason };
            let tcp = TcpStream::connect(addr).await.map_err(|e| connect_error(e.to_string()))?;
            milestones.mark(Step::TcpConnected);
            tcp.set_nodelay(true)?;
            let tls = tls
                .connect(tlab_core::tls::server_name(), tcp)
                .await
                .map_err(|e| tlab_core::tls::handshake_error(addr, e))?;
            milestones.mark(Step::TlsDone);
            Ok(TokioIo::new(tls))
        })
    }
}

/// What both gRPC clients (native and gRPC-Web) open first: the one HTTP/2 channel through our pinned TLS dialer,
/// the `authorization` value every call carries, and the dialer's milestones.
pub(crate) async fn open_channel(config: &ClientConfig) -> Result<(Channel, AsciiMetadataValue, MilestoneLog), Error> {
    let (addr, _path) = config.authority_and_path()?;
    let tls = TlsConnector::from(Arc::new(tlab_core::tls::client_config(&config.pin, &[ALPN_H2])?));
    let auth: AsciiMetadataValue = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| Error::Config("the token is not valid in an HTTP header".into()))?;
    // `http`: TLS is done by our dialer; an `https` URI would make tonic look for its own TLS support.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Config(e.to_string()))?
        // HTTP/2 keepalive stays at tonic's default, off: pings would be traffic no experiment accounts for.
        .connect_timeout(config.connect_timeout);
    let dialer = TlsDialer::new(addr, tls);
    let milestones = dialer.milestones.clone();
    let channel =
        tokio::time::timeout(config.connect_timeout, endpoint.connect_with_connector(dialer))
            .await
            .map_err(|_| Error::Timeout(format!("connect to {addr}")))?
            .map_err(|e| connect_failure(addr, &e))?;
    Ok((channel, auth, milestones))
}

/// Connects the one HTTP/2 channel of a [`GrpcConnection`].
pub(crate) async fn connect(config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
    let (channel, auth, milestones) = open_channel(&config).await?;
    let client =
        TransportClient::new(channel).max_decoding_message_size(config.limits.max_message_size + FRAME_OVERHEAD);
    Ok(Box::new(GrpcConnection {
        client: Mutex::new(Some(client)),
        auth,
        limits: config.limits,
        open_streams: Arc::default(),
        milestones,
    }))
}

/// Our dialer's own error when it is in the chain (a TLS failure stays [`Error::Tls`]), else a connect failure.
pub(crate) fn connect_failure(addr: SocketAddr, error: &tonic::transport::Error) -> Error {
    let mut reasons = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(Error::Tls(reason)) = e.downcast_ref::<Error>() {
            return Error::Tls(reason.clone());
        }
        reasons.push(e.to_string());
        cause = e.source();
    }
    Error::Connect { address: addr.to_string(), reason: reasons.join(": ") }
}

struct GrpcConnection {
    /// `None` after [`Connection::close`].
    client: Mutex<Option<TransportClient<Channel>>>,
    auth: AsciiMetadataValue,
    limits: Limits,
    open_streams: Arc<AtomicUsize>,
    /// TCP and TLS from the dialer, the first RPC's response headers from `open_stream`.
    milestones: MilestoneLog,
}

impl GrpcConnection {
    fn request<T>(&self, message: T, open: &StreamOpen) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert("authorization", self.auth.clone());
        if let Ok(value) = open.to_query().parse() {
            req.metadata_mut().insert(OPEN_METADATA, value);
        }
        req
    }
}

#[async_trait]
impl Connection for GrpcConnection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let mut client =
            self.client.lock().unwrap().clone().ok_or_else(|| Error::Closed("connection closed".into()))?;
        let slot = StreamSlot::acquire(&self.open_streams, &self.limits, open.stream)?;
        let status_error = |status: Status| error_from_status(&status, open.stream);
        match (open.resume, open.mode) {
            (None, StreamMode::Source { count, size, interval_us }) => {
                let size = u32::try_from(size).map_err(|_| Error::Config(format!("source size {size} above 2^32")))?;
                let req = self.request(SourceRequest { stream: open.stream, count, size, interval_us }, &open);
                let responses = client.source(req).await.map_err(status_error)?.into_inner();
                self.milestones.mark(Step::FirstResponse);
                Ok(MessageStream {
                    sink: Box::new(NoRequests),
                    source: Box::new(ResponseSource {
                        responses,
                        limits: self.limits,
                        stream: open.stream,
                        _slot: slot,
                    }),
                })
            }
            (None, StreamMode::Sink) => {
                let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
                let req = self.request(ReceiverStream::new(rx), &open);
                // The summary arrives only after the client finishes, so the call runs on its own task meanwhile.
                let call = tokio::spawn(async move { client.sink(req).await });
                Ok(MessageStream {
                    sink: Box::new(RequestSink { tx: Some(tx), limits: self.limits, _slot: slot.clone() }),
                    source: Box::new(SummarySource {
                        state: SummaryState::Waiting(call),
                        stream: open.stream,
                        _slot: slot,
                    }),
                })
            }
            _ => {
                let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
                let req = self.request(ReceiverStream::new(rx), &open);
                let responses = client.stream(req).await.map_err(status_error)?.into_inner();
                self.milestones.mark(Step::FirstResponse);
                Ok(MessageStream {
                    sink: Box::new(RequestSink { tx: Some(tx), limits: self.limits, _slot: slot.clone() }),
                    source: Box::new(ResponseSource {
                        responses,
                        limits: self.limits,
                        stream: open.stream,
                        _slot: slot,
                    }),
                })
            }
        }
    }

    async fn close(&self) {
        // The HTTP/2 connection closes once the streams still open have ended.
        self.client.lock().unwrap().take();
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }
}

/// Frames into a request stream.
struct RequestSink {
    tx: Option<mpsc::Sender<Frame>>,
    limits: Limits,
    _slot: Arc<StreamSlot>,
}

#[async_trait]
impl MessageSink for RequestSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        let tx = self.tx.as_ref().ok_or_else(|| Error::Closed("stream already finished".into()))?;
        tx.send(to_frame(msg)).await.map_err(|_| Error::Closed("the RPC has ended (recv gives its status)".into()))
    }

    async fn finish(&mut self) -> Result<(), Error> {
        // Ending the request stream sends END_STREAM.
        self.tx = None;
        Ok(())
    }
}

/// The sending half of a `Source` call, whose only request is the `SourceRequest`.
pub(crate) struct NoRequests;

#[async_trait]
impl MessageSink for NoRequests {
    async fn send(&mut self, _msg: Message) -> Result<(), Error> {
        Err(Error::Unsupported("a Source call carries no client messages"))
    }

    async fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Frames of a response stream.
pub(crate) struct ResponseSource {
    pub(crate) responses: Streaming<Frame>,
    pub(crate) limits: Limits,
    pub(crate) stream: StreamId,
    pub(crate) _slot: Arc<StreamSlot>,
}

#[async_trait]
impl MessageSource for ResponseSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        // `Streaming::message` keeps its state in `self.responses`, so dropping this future loses nothing.
        match self.responses.message().await {
            Ok(Some(frame)) => to_message(frame, &self.limits).map(Some),
            Ok(None) => Ok(None),
            Err(status) => Err(error_from_status(&status, self.stream)),
        }
    }
}

/// The answer of a `Sink` call, as the one message (seq 0, 8-byte big-endian count) the other transports send.
struct SummarySource {
    state: SummaryState,
    stream: StreamId,
    _slot: Arc<StreamSlot>,
}

enum SummaryState {
    Waiting(JoinHandle<Result<Response<SinkSummary>, Status>>),
    Delivered,
    Failed(String),
}

#[async_trait]
impl MessageSource for SummarySource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        let call = match &mut self.state {
            SummaryState::Waiting(call) => call,
            SummaryState::Delivered => return Ok(None),
            SummaryState::Failed(reason) => return Err(Error::Closed(reason.clone())),
        };
        // Awaiting `&mut JoinHandle` is cancel-safe: the handle stays in `self.state` until it completes.
        let result = match call.await {
            Ok(Ok(summary)) => {
                let count = summary.into_inner().received;
                Ok(Some(Message::data(self.stream, 0, Bytes::copy_from_slice(&count.to_be_bytes()))))
            }
            Ok(Err(status)) => Err(error_from_status(&status, self.stream)),
            Err(e) => Err(Error::Transport(format!("sink call task: {e}"))),
        };
        self.state = match &result {
            Ok(_) => SummaryState::Delivered,
            Err(e) => SummaryState::Failed(e.to_string()),
        };
        result
    }
}

impl Drop for SummarySource {
    fn drop(&mut self) {
        // Dropping the source abandons the call (the server sees it cancelled).
        if let SummaryState::Waiting(call) = &self.state {
            call.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Bytes no well-behaved client sends, through a raw tonic call on our own dialer.

    use std::time::Duration;

    use bytes::BufMut;
    use prost::Message as _;
    use tlab_service::EchoService;
    use tlab_core::tls::{CertPin, Identity};
    use tlab_core::{ServerConfig, Transport};
    use tonic::client::Grpc;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;

    use super::*;

    /// Sends each item as the gRPC message body as is; decodes `Frame`s.
    struct RawCodec;

    struct RawEncoder;

    impl Encoder for RawEncoder {
        type Item = Bytes;
        type Error = Status;

        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    struct FrameDecoder;

    impl Decoder for FrameDecoder {
        type Item = Frame;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
            Frame::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
        }
    }

    impl Codec for RawCodec {
        type Encode = Bytes;
        type Decode = Frame;
        type Encoder = RawEncoder;
        type Decoder = FrameDecoder;

        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }

        fn decoder(&mut self) -> FrameDecoder {
            FrameDecoder
        }
    }

    async fn raw_call(grpc: &mut Grpc<Channel>, body: Bytes) -> Result<Option<Frame>, Status> {
        let mut req = tonic::Request::new(tokio_stream::iter([body]));
        req.metadata_mut().insert("authorization", "Bearer t".parse().unwrap());
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static("/tlab.v1.Transport/Stream");
        grpc.streaming(req, path, RawCodec).await?.into_inner().message().await
    }

    #[tokio::test]
    async fn undecodable_message_fails_that_rpc_only() {
        let identity = Arc::new(Identity::self_signed(&["localhost"]).unwrap());
        let tls = TlsConnector::from(Arc::new(
            tlab_core::tls::client_config(&CertPin::Sha256(identity.sha256()), &[ALPN_H2]).unwrap(),
        ));
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity,
            token: "t".into(),
            limits: Limits::default(),
            service: Arc::new(EchoService::default()),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = crate::GrpcTransport::new().serve(config).await.unwrap();
        let addr = server.local_addr();
        let test = async {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_with_connector(TlsDialer::new(addr, tls))
                .await
                .unwrap();
            let mut grpc = Grpc::new(channel);
            // Field 1 as a length-delimited record running past the end: not a protobuf `Frame`.
            let status = raw_call(&mut grpc, Bytes::from_static(&[0x0a, 0xff, 0x01])).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            // The same HTTP/2 connection still carries a well-formed call.
            let frame = Frame { stream: 0, seq: 0, sent_at_ns: 1, payload: Bytes::from_static(b"ok"), control: false };
            let echo = raw_call(&mut grpc, frame.encode_to_vec().into()).await.unwrap().unwrap();
            assert_eq!(echo, frame);
        };
        tokio::time::timeout(Duration::from_secs(20), test).await.expect("test timed out");
        server.shutdown().await;
    }
}
