//! Raw wtransport baseline: a server accepting every session and echoing every chunk of every bidirectional stream
//! back on the same stream, and a client opening one bidirectional stream and writing tlab frames (24-byte header +
//! payload, the bytes our `wt-stream` mode puts on a stream) as one chunk each. Both read and write through the
//! stream's quinn chunk API, as our adapter does. No token check, no open header: wtransport and quinn defaults;
//! the client pins the certificate by hash like a browser's `serverCertificateHashes`, as our client does.

use std::net::SocketAddr;

use bytes::Bytes;
use tlab_core::tls::Identity;
use tlab_core::{Message, frame};
use wtransport::endpoint::endpoint_side;
use wtransport::tls::Sha256Digest;
use wtransport::{Connection, Endpoint, RecvStream, SendStream};

use crate::{ChunkSource, EchoPair, EchoReceiver, EchoSender, FrameReader, ServerTask, payload};

const ALPN: &[u8] = b"h3";

/// The client's send half.
pub struct Sender(SendStream);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        let bytes = frame::encode(&Message::data(0, seq, payload()));
        self.0.quic_stream_mut().write_chunk(bytes).await.expect("raw wt send");
    }
}

/// The client's receive half; it also keeps the session, the client endpoint and the server alive.
pub struct Receiver {
    frames: FrameReader<RecvStream>,
    session: Connection,
    _endpoint: Endpoint<endpoint_side::Client>,
    _server: ServerTask,
}

impl ChunkSource for RecvStream {
    async fn next_chunk(&mut self) -> Bytes {
        let chunk = self.quic_stream_mut().read_chunk(usize::MAX, true).await.expect("raw wt recv");
        chunk.expect("raw wt ended").bytes
    }
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        self.frames.next_seq().await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // wtransport's driver task holds the QUIC connection: without a close it lives until the idle timeout.
        self.session.close(0u32.into(), b"done");
    }
}

/// Echoes every chunk of every bidirectional stream of every session.
async fn serve(endpoint: Endpoint<endpoint_side::Server>) {
    loop {
        let incoming = endpoint.accept().await;
        tokio::spawn(async move {
            let session = incoming.await.expect("session request").accept().await.expect("session accept");
            while let Ok((mut send, mut recv)) = session.accept_bi().await {
                tokio::spawn(async move {
                    while let Ok(Some(chunk)) = recv.quic_stream_mut().read_chunk(usize::MAX, true).await {
                        if send.quic_stream_mut().write_chunk(chunk.bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}

/// Starts the server, opens a session and one bidirectional stream on it.
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity");
    let tls = identity.server_config(&[ALPN]).expect("server TLS config");
    let local: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let config = wtransport::ServerConfig::builder().with_bind_address(local).with_custom_tls(tls).build();
    let server = Endpoint::server(config).expect("bind");
    let addr = server.local_addr().expect("address");
    let task = ServerTask::spawn(serve(server));
    let config = wtransport::ClientConfig::builder()
        .with_bind_address(local)
        .with_server_certificate_hashes([Sha256Digest::new(identity.sha256())])
        .build();
    let client = Endpoint::client(config).expect("bind");
    let session = client.connect(format!("https://{addr}/echo")).await.expect("WebTransport session");
    let (send, recv) = session.open_bi().await.expect("open stream").await.expect("stream opened");
    let receiver = Receiver { frames: FrameReader::new(recv), session, _endpoint: client, _server: task };
    EchoPair::new(Sender(send), receiver)
}
