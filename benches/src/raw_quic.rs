//! Raw quinn baseline: a server echoing every chunk of every bidirectional stream back on the same stream, and a
//! client writing tlab frames (24-byte header + payload, the bytes our `quic` mode puts on a stream) as one chunk
//! each and cutting the echoed byte stream back into frames. No auth exchange, no open header: quinn defaults.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream};
use tlab_core::tls::Identity;
use tlab_core::{Message, frame};

use crate::{EchoPair, EchoReceiver, EchoSender, ServerTask, client_tls, payload, take_frame_seq};

const ALPN: &[u8] = b"tlab-quic/1";

/// The client's send half.
pub struct Sender(SendStream);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        self.0.write_chunk(frame::encode(&Message::data(0, seq, payload()))).await.expect("raw quic send");
    }
}

/// The client's receive half; it also keeps the connection, both endpoints and the server alive.
pub struct Receiver {
    recv: RecvStream,
    buf: BytesMut,
    _connection: quinn::Connection,
    _endpoints: [Endpoint; 2],
    _server: ServerTask,
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        loop {
            if let Some(seq) = take_frame_seq(&mut self.buf) {
                return seq;
            }
            let chunk = self.recv.read_chunk(usize::MAX, true).await.expect("raw quic recv").expect("raw quic ended");
            self.buf.extend_from_slice(&chunk.bytes);
        }
    }
}

/// Echoes every chunk of every bidirectional stream of every connection.
async fn serve(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let conn = incoming.await.expect("QUIC accept");
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                        if send.write_chunk(chunk.bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}

/// Starts the echo server and opens one bidirectional stream to it.
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity");
    let tls = identity.server_config(&[ALPN]).expect("server TLS config");
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).expect("QUIC TLS")));
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr: SocketAddr = server.local_addr().expect("address");
    let task = ServerTask::spawn(serve(server.clone()));
    let pin = tlab_core::tls::CertPin::Sha256(identity.sha256());
    let crypto = QuicClientConfig::try_from(client_tls(&pin, &[ALPN])).expect("QUIC TLS");
    let client = Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind");
    let connection = client
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (send, recv) = connection.open_bi().await.expect("open stream");
    let receiver =
        Receiver { recv, buf: BytesMut::new(), _connection: connection, _endpoints: [client, server], _server: task };
    EchoPair::new(Sender(send), receiver)
}
