//! A `Stream` RPC that receives a frame carrying another stream's id ends with `INVALID_ARGUMENT`, and the other
//! RPCs on the same HTTP/2 connection go on (docs/PROTOCOL.md, "gRPC"). Spoken with the client tonic generates from
//! `proto/tlab/v1/transport.proto` over a TLS connection of our own — none of our client code.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tlab_core::Limits;
use tlab_core::tls::CertPin;
use tlab_grpc::GrpcTransport;
use tlab_grpc::proto::Frame;
use tlab_grpc::proto::transport_client::TransportClient;
use tlab_testkit::TestServer;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status, Streaming};

/// How long any one step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, step).await.unwrap_or_else(|_| panic!("no outcome within {WAIT:?}: {what}"))
}

/// TCP to one address, then TLS with ALPN `h2` and the server's certificate pinned.
#[derive(Clone)]
struct PinnedTls {
    addr: std::net::SocketAddr,
    tls: TlsConnector,
}

impl tonic::codegen::Service<Uri> for PinnedTls {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let Self { addr, tls } = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            Ok(TokioIo::new(tls.connect(tlab_core::tls::server_name(), tcp).await?))
        })
    }
}

/// One HTTP/2 channel to `server`.
async fn channel(server: &TestServer) -> TransportClient<Channel> {
    let pin = CertPin::Sha256(server.identity.sha256());
    let tls = TlsConnector::from(Arc::new(tlab_core::tls::client_config(&pin, &[b"h2"]).unwrap()));
    let addr = server.server.local_addr();
    let dialer = PinnedTls { addr, tls };
    let channel = within("channel", Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_with_connector(dialer))
        .await
        .unwrap();
    TransportClient::new(channel)
}

/// A running `Stream` RPC: its request stream (`None` once half-closed) and its response stream.
struct Rpc {
    frames: Option<mpsc::Sender<Frame>>,
    responses: Result<Streaming<Frame>, Status>,
}

/// Starts a `Stream` RPC opened as an echo of `stream`.
async fn start(client: &mut TransportClient<Channel>, token: &str, stream: u32) -> Rpc {
    let (frames, rx) = mpsc::channel(8);
    let mut request = Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.metadata_mut().insert("tlab-open", format!("stream={stream}&mode=echo").parse().unwrap());
    let responses = within("RPC start", client.stream(request)).await.map(tonic::Response::into_inner);
    Rpc { frames: Some(frames), responses }
}

fn data(stream: u32, seq: u64) -> Frame {
    Frame { stream, seq, sent_at_ns: 1, payload: format!("stream {stream} seq {seq}").into_bytes().into(), control: false }
}

impl Rpc {
    /// The next response: a frame, the clean end (`None`) or the RPC's status.
    async fn next(&mut self) -> Result<Option<Frame>, Status> {
        match &mut self.responses {
            Ok(responses) => within("response", responses.message()).await,
            Err(status) => Err(status.clone()),
        }
    }

    async fn send(&self, frame: Frame) {
        self.frames.as_ref().expect("not half-closed").send(frame).await.unwrap();
    }

    async fn echo(&mut self, stream: u32, seq: u64) {
        self.send(data(stream, seq)).await;
        assert_eq!(self.next().await.unwrap(), Some(data(stream, seq)), "echo of stream {stream} seq {seq}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_another_stream_ends_that_rpc_with_invalid_argument_only() {
    let server = TestServer::start(&GrpcTransport::new(), Limits::default()).await;
    let mut client = channel(&server).await;
    let mut bystander = start(&mut client, &server.token, 1).await;
    bystander.echo(1, 0).await;

    let mut offender = start(&mut client, &server.token, 2).await;
    offender.echo(2, 0).await;
    // Stream 2's RPC carries a frame of stream 3.
    offender.send(data(3, 1)).await;
    let status = offender.next().await.expect_err("the RPC must end with a status");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The other RPC on the connection goes on and ends cleanly; a new one on the same channel is served.
    bystander.echo(1, 1).await;
    bystander.frames = None;
    assert_eq!(bystander.next().await.unwrap(), None, "a clean end after the client's half-close");
    let mut later = start(&mut client, &server.token, 4).await;
    later.echo(4, 0).await;
    within("server shutdown", server.server.shutdown()).await;
}
