//! `tlab-benches` measures what the transport-lab abstraction costs: for each transport it runs the same loopback
//! echo workload once through our adapter ([`tlab`], i.e. [`tlab_core::Transport`] against
//! [`tlab_service::EchoService`]) and once written directly on the raw library ([`raw_ws`]
//! tokio-tungstenite, [`raw_grpc`] tonic, [`raw_sse`] axum + reqwest, [`raw_quic`] quinn, [`raw_h3`] h3 + h3-quinn,
//! [`raw_wt`] wtransport), both over the same rustls TLS identity and certificate pin. The criterion harness is
//! `benches/transports.rs` (`cargo bench -p tlab-benches --bench transports`); `scripts/bench-ratios.py` turns its
//! results into the ratio table of the README. `benches/bulk.rs` (`cargo bench -p tlab-benches --bench bulk`)
//! measures bulk throughput and CPU per byte of every mode against raw quinn ([`bulk`]).
//!
//! A workload is an [`EchoPair`]: a sender that sends message `seq` (256 payload bytes) and a receiver that returns
//! the `seq` of the next echo. Both sides of a comparison implement the same two traits with static dispatch, so
//! the harness adds the same (negligible) cost to each.

pub mod bulk;
pub mod raw_grpc;
pub mod raw_h3;
pub mod raw_quic;
pub mod raw_sse;
pub mod raw_wt;
pub mod raw_ws;
pub mod tlab;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{Requirement, Transport, frame};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Payload bytes of every benchmark message.
pub const PAYLOAD_LEN: usize = 256;

static PAYLOAD: [u8; PAYLOAD_LEN] = [0xA5; PAYLOAD_LEN];

/// The payload of every benchmark message (static, so cloning it costs neither side an allocation).
pub fn payload() -> Bytes {
    Bytes::from_static(&PAYLOAD)
}

/// The sending half of an echo workload.
pub trait EchoSender: Send + 'static {
    /// Sends message number `seq`; panics on a transport error (a benchmark has no use for a broken run).
    fn send(&mut self, seq: u64) -> impl Future<Output = ()> + Send;
}

/// The receiving half of an echo workload.
pub trait EchoReceiver: Send {
    /// Waits for the next echo and returns its `seq`; panics on a transport error or end of stream.
    fn recv(&mut self) -> impl Future<Output = u64> + Send;
}

/// One echo stream, ready to measure. It owns whatever keeps its server and connection alive.
pub struct EchoPair<S, R> {
    /// `None` only while a pipeline's sender task holds it.
    sender: Option<S>,
    receiver: R,
    next_seq: u64,
}

impl<S: EchoSender, R: EchoReceiver> EchoPair<S, R> {
    /// A pair from its two halves.
    pub fn new(sender: S, receiver: R) -> Self {
        Self { sender: Some(sender), receiver, next_seq: 0 }
    }

    /// `iters` round trips, one message in flight at a time; returns the total time.
    pub async fn round_trips(&mut self, iters: u64) -> Duration {
        let sender = self.sender.as_mut().expect("sender present between iterations");
        let start = Instant::now();
        for _ in 0..iters {
            let seq = self.next_seq;
            self.next_seq += 1;
            sender.send(seq).await;
            assert_eq!(self.receiver.recv().await, seq, "echo out of order");
        }
        start.elapsed()
    }

    /// `iters` pipelines of `batch` messages: a spawned task sends the batch while this task reads its echoes;
    /// returns the total time.
    pub async fn pipelines(&mut self, iters: u64, batch: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let mut sender = self.sender.take().expect("sender present between iterations");
            let first = self.next_seq;
            self.next_seq += batch;
            let sending = tokio::spawn(async move {
                for seq in first..first + batch {
                    sender.send(seq).await;
                }
                sender
            });
            for seq in first..first + batch {
                assert_eq!(self.receiver.recv().await, seq, "echo out of order");
            }
            self.sender = Some(sending.await.expect("sender task"));
        }
        start.elapsed()
    }
}

/// The registry's modes both benchmarks run: reliable (the workloads count on exact, in-order delivery) and
/// bidirectional (they send client → server; gRPC-Web carries server → client only).
pub fn reliable_bidirectional() -> Vec<Box<dyn Transport>> {
    let mut modes = tlab_transports::select(Requirement::Reliable);
    modes.retain(|mode| mode.capabilities().bidirectional);
    modes
}

/// A fresh self-signed identity: the server side's TLS acceptor offering `alpn`, and the pin clients check.
pub fn server_tls(alpn: &[&[u8]]) -> (TlsAcceptor, CertPin) {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity");
    let config = identity.server_config(alpn).expect("server TLS config");
    (TlsAcceptor::from(std::sync::Arc::new(config)), CertPin::Sha256(identity.sha256()))
}

/// The client TLS configuration our adapters use too: certificate pinning, `alpn`.
pub fn client_tls(pin: &CertPin, alpn: &[&[u8]]) -> rustls::ClientConfig {
    tlab_core::tls::client_config(pin, alpn).expect("client TLS config")
}

/// [`client_tls`] as a tokio-rustls connector.
pub fn tls_connector(pin: &CertPin, alpn: &[&[u8]]) -> TlsConnector {
    TlsConnector::from(std::sync::Arc::new(client_tls(pin, alpn)))
}

/// A raw server's accept loop, aborted when the pair owning it is dropped.
pub struct ServerTask(JoinHandle<()>);

impl ServerTask {
    /// Runs `accept_loop` on its own task.
    pub fn spawn(accept_loop: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(accept_loop))
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `seq` field of a [`tlab_core::frame`] (bytes 8..16, big-endian), as a raw client reads it.
pub fn frame_seq(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[8..16].try_into().expect("a frame header"))
}

/// A raw client's receive side, read as the chunks of the echoed byte stream.
pub trait ChunkSource: Send {
    /// The next chunk; panics on a transport error or end of stream.
    fn next_chunk(&mut self) -> impl Future<Output = Bytes> + Send;
}

/// Cuts the byte stream of a [`ChunkSource`] back into frames: byte-stream baselines (QUIC, HTTP/3, WebTransport)
/// read their echoes this way.
pub struct FrameReader<C> {
    source: C,
    buf: BytesMut,
}

impl<C: ChunkSource> FrameReader<C> {
    /// A reader with an empty buffer.
    pub fn new(source: C) -> Self {
        Self { source, buf: BytesMut::new() }
    }

    /// The `seq` of the next whole frame, reading chunks until it is complete.
    pub async fn next_seq(&mut self) -> u64 {
        loop {
            if let Some(seq) = take_frame_seq(&mut self.buf) {
                return seq;
            }
            let chunk = self.source.next_chunk().await;
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// Takes the first whole frame off `buf` and returns its `seq`; `None` while the frame is still incomplete.
fn take_frame_seq(buf: &mut BytesMut) -> Option<u64> {
    let header = buf.get(..frame::HEADER_LEN)?;
    let len = frame::HEADER_LEN + u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if buf.len() < len {
        return None;
    }
    let seq = frame_seq(buf);
    buf.advance(len);
    Some(seq)
}
