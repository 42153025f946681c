//! Raw quinn baselines. Echo: a server echoing every chunk of every bidirectional stream back on the same stream,
//! and a client writing tlab frames (24-byte header + payload, the bytes our `quic` mode puts on a stream) as one
//! chunk each and cutting the echoed byte stream back into frames. Bulk ([`bulk`]): a server counting the bytes of
//! every bidirectional stream and answering the count when the stream ends. No auth exchange, no open header:
//! quinn defaults, but for the congestion controller, which is tlab-quic-common's for the run's
//! [`CongestionControl`] (the one our QUIC modes use).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, RecvStream, SendStream};
use tlab_core::config::CongestionControl;
use tlab_core::tls::Identity;
use tlab_core::{Message, frame};
use tlab_quic_common::congestion::controller_factory;

use crate::bulk::BulkClient;
use crate::{ChunkSource, EchoPair, EchoReceiver, EchoSender, FrameReader, ServerTask, client_tls, payload};

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
    frames: FrameReader<RecvStream>,
    _raw: Raw,
}

impl ChunkSource for RecvStream {
    async fn next_chunk(&mut self) -> Bytes {
        self.read_chunk(usize::MAX, true).await.expect("raw quic recv").expect("raw quic ended").bytes
    }
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        self.frames.next_seq().await
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

/// A raw quinn client connection and what keeps it alive: both endpoints and the server's accept loop.
struct Raw {
    connection: quinn::Connection,
    _endpoints: [Endpoint; 2],
    _server: ServerTask,
}

/// quinn's default transport settings with `congestion`'s controller.
fn transport(congestion: CongestionControl) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config.congestion_controller_factory(controller_factory(congestion));
    Arc::new(config)
}

/// Starts a server running `serve` on its endpoint and connects a client to it, both ends with `congestion`.
async fn connect<F>(congestion: CongestionControl, serve: impl FnOnce(Endpoint) -> F) -> Raw
where
    F: Future<Output = ()> + Send + 'static,
{
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity");
    let tls = identity.server_config(&[ALPN]).expect("server TLS config");
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).expect("QUIC TLS")));
    server_config.transport_config(transport(congestion));
    let server = Endpoint::server(server_config, "127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr: SocketAddr = server.local_addr().expect("address");
    let task = ServerTask::spawn(serve(server.clone()));
    let pin = tlab_core::tls::CertPin::Sha256(identity.sha256());
    let crypto = QuicClientConfig::try_from(client_tls(&pin, &[ALPN])).expect("QUIC TLS");
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(transport(congestion));
    let client = Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind");
    let connection = client
        .connect_with(client_config, addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    Raw { connection, _endpoints: [client, server], _server: task }
}

/// Starts the echo server and opens one bidirectional stream to it (CUBIC, quinn's default controller).
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let raw = connect(CongestionControl::Cubic, serve).await;
    let (send, recv) = raw.connection.open_bi().await.expect("open stream");
    EchoPair::new(Sender(send), Receiver { frames: FrameReader::new(recv), _raw: raw })
}

/// Counts the bytes of every bidirectional stream of every connection and answers the count (8 bytes, big-endian)
/// when the stream ends.
async fn count_bytes(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let conn = incoming.await.expect("QUIC accept");
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut count = 0u64;
                    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                        count += chunk.bytes.len() as u64;
                    }
                    if send.write_all(&count.to_be_bytes()).await.is_ok() {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

/// The raw quinn bulk client: every message is the same tlab frame (24-byte header + payload), encoded once and
/// written as one chunk without a copy — the most quinn itself offers a sender.
pub struct Bulk {
    raw: Raw,
    frame: Bytes,
}

/// Connects a raw quinn bulk client, `payload_len` bytes per message, both ends with `congestion`.
pub async fn bulk(congestion: CongestionControl, payload_len: usize) -> Bulk {
    let frame = frame::encode(&Message::data(0, 0, Bytes::from(vec![0xA5; payload_len])));
    Bulk { raw: connect(congestion, count_bytes).await, frame }
}

impl BulkClient for Bulk {
    type Stream = (SendStream, RecvStream, Bytes);

    async fn open(&mut self) -> Self::Stream {
        let (send, recv) = self.raw.connection.open_bi().await.expect("open stream");
        (send, recv, self.frame.clone())
    }

    async fn transfer((mut send, mut recv, frame): Self::Stream, count: u64) {
        for _ in 0..count {
            send.write_chunk(frame.clone()).await.expect("raw quic send");
        }
        send.finish().expect("raw quic finish");
        let answer = recv.read_to_end(8).await.expect("raw quic count");
        let counted = u64::from_be_bytes(answer.as_slice().try_into().expect("8-byte count"));
        assert_eq!(counted, count * frame.len() as u64, "raw quic server counted");
    }
}
