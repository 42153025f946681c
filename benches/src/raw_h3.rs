//! Raw h3 + h3-quinn baseline: a server answering one `POST` with 200 and streaming every DATA chunk of the
//! request body back as the response body, and a client sending tlab frames (24-byte header + payload, what our
//! `h3` mode puts in a body) as one DATA frame each and cutting the response body back into frames. No token, no
//! open query, no stream accounting: h3 and quinn defaults.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use h3_quinn::{RecvStream, SendStream};
use http::{Request, Response};
use quinn::Endpoint;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{Message, frame};

use crate::{ChunkSource, EchoPair, EchoReceiver, EchoSender, FrameReader, ServerTask, client_tls, payload};

const ALPN: &[u8] = b"h3";

/// The client's request body.
pub struct Sender(h3::client::RequestStream<SendStream<Bytes>, Bytes>);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        self.0.send_data(frame::encode(&Message::data(0, seq, payload()))).await.expect("raw h3 send");
    }
}

/// The client's response body; it also keeps the connection (its last `SendRequest` would close it), both
/// endpoints and the server alive.
pub struct Receiver {
    body: FrameReader<h3::client::RequestStream<RecvStream, Bytes>>,
    _send_request: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    _endpoints: [Endpoint; 2],
    _server: ServerTask,
}

impl ChunkSource for h3::client::RequestStream<RecvStream, Bytes> {
    async fn next_chunk(&mut self) -> Bytes {
        let mut data = self.recv_data().await.expect("raw h3 recv").expect("raw h3 body ended");
        data.copy_to_bytes(data.remaining())
    }
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        self.body.next_seq().await
    }
}

/// Echoes the request body of every request of every connection as its response body.
async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let conn = incoming.await.expect("QUIC accept");
            let mut h3 = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await.expect("h3");
            while let Ok(Some(resolver)) = h3.accept().await {
                tokio::spawn(async move {
                    let Ok((_request, mut stream)) = resolver.resolve_request().await else { return };
                    if stream.send_response(Response::new(())).await.is_err() {
                        return;
                    }
                    while let Ok(Some(mut data)) = stream.recv_data().await {
                        if stream.send_data(data.copy_to_bytes(data.remaining())).await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.finish().await;
                });
            }
        });
    }
}

/// Starts the echo server, connects and sends the one echo request.
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity");
    let tls = identity.server_config(&[ALPN]).expect("server TLS config");
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).expect("QUIC TLS")));
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr: SocketAddr = server.local_addr().expect("address");
    let task = ServerTask::spawn(serve(server.clone()));
    let crypto = QuicClientConfig::try_from(client_tls(&CertPin::Sha256(identity.sha256()), &[ALPN])).expect("QUIC TLS");
    let client = Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind");
    let conn = client
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, mut send_request) = h3::client::new(h3_quinn::Connection::new(conn)).await.expect("h3");
    // The driver handles h3's control streams; it ends with the connection.
    tokio::spawn(async move { driver.wait_idle().await });
    let request = Request::post(format!("https://localhost:{}/echo", addr.port())).body(()).expect("request");
    let mut stream = send_request.send_request(request).await.expect("send request");
    let response = stream.recv_response().await.expect("response");
    assert!(response.status().is_success(), "raw h3 status {}", response.status());
    let (send, body) = stream.split();
    let receiver = Receiver {
        body: FrameReader::new(body),
        _send_request: send_request,
        _endpoints: [client, server],
        _server: task,
    };
    EchoPair::new(Sender(send), receiver)
}
