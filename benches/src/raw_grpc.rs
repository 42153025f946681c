//! Raw tonic baseline: an implementation of the generated `tlab.v1.Transport` service whose `Stream` RPC answers
//! with its own request stream (every `Frame` echoed with no task or channel in between, the cheapest echo tonic
//! allows), served by `tonic::transport::Server` over our TLS; the client is the generated stub on one channel,
//! its requests fed from an mpsc channel (`CHANNEL_CAPACITY` as in our adapter).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tlab_grpc::proto::transport_client::TransportClient;
use tlab_grpc::proto::transport_server::{Transport, TransportServer};
use tlab_grpc::proto::{Frame, SinkSummary, SourceRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::Service;
use tonic::transport::server::Connected;
use tonic::transport::{Endpoint, Uri};
use tonic::{Request, Response, Status, Streaming};

use crate::{EchoPair, EchoReceiver, EchoSender, ServerTask, payload, server_tls, tls_connector};

const ALPN: &[u8] = b"h2";
const CHANNEL_CAPACITY: usize = 32;

/// Feeds the request stream of the call.
pub struct Sender(mpsc::Sender<Frame>);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        let frame =
            Frame { stream: 0, seq, sent_at_ns: tlab_core::clock::monotonic_ns(), payload: payload(), control: false };
        self.0.send(frame).await.expect("raw gRPC send");
    }
}

/// Reads the response stream of the call; it also keeps the server alive.
pub struct Receiver {
    responses: Streaming<Frame>,
    _server: ServerTask,
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        self.responses.message().await.expect("raw gRPC recv").expect("raw gRPC call ended").seq
    }
}

struct Echo;

#[tonic::async_trait]
impl Transport for Echo {
    type StreamStream = Streaming<Frame>;
    type SourceStream = tokio_stream::Empty<Result<Frame, Status>>;

    async fn stream(&self, req: Request<Streaming<Frame>>) -> Result<Response<Streaming<Frame>>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    async fn source(&self, _req: Request<SourceRequest>) -> Result<Response<Self::SourceStream>, Status> {
        Err(Status::unimplemented("the baseline only echoes"))
    }

    async fn sink(&self, _req: Request<Streaming<Frame>>) -> Result<Response<SinkSummary>, Status> {
        Err(Status::unimplemented("the baseline only echoes"))
    }
}

/// A server TLS stream as tonic's `serve_with_incoming` wants it (tonic's own impl needs its TLS features).
struct TlsIo(server::TlsStream<TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

async fn accept(listener: &TcpListener, tls: &TlsAcceptor) -> io::Result<TlsIo> {
    let (tcp, _) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    Ok(TlsIo(tls.accept(tcp).await?))
}

/// Dials TCP + TLS for the tonic channel.
#[derive(Clone)]
struct Dialer {
    addr: std::net::SocketAddr,
    tls: TlsConnector,
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let Dialer { addr, tls } = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(tlab_core::tls::server_name(), tcp).await?))
        })
    }
}

/// Starts the echo server, connects one channel and starts one `Stream` call.
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let (acceptor, pin) = server_tls(&[ALPN]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let incoming = futures::stream::unfold((listener, acceptor), |(listener, tls)| async move {
        let conn = accept(&listener, &tls).await;
        Some((conn, (listener, tls)))
    });
    let server = ServerTask::spawn(async move {
        let serving = tonic::transport::Server::builder().add_service(TransportServer::new(Echo));
        serving.serve_with_incoming(incoming).await.expect("raw gRPC server");
    });
    let dialer = Dialer { addr, tls: tls_connector(&pin, &[ALPN]) };
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let channel = endpoint.connect_with_connector(dialer).await.expect("raw gRPC connect");
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let responses = TransportClient::new(channel).stream(ReceiverStream::new(rx)).await.expect("Stream call").into_inner();
    EchoPair::new(Sender(tx), Receiver { responses, _server: server })
}
