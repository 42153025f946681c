//! Bulk transfer: messages of [`MESSAGE_LEN`] bytes sent as fast as a client can on one or more streams of one
//! connection, to a server that counts them and answers the count when each stream ends. Our side is any
//! [`Transport`] serving [`EchoService`]'s sink mode (the client's `send` per message, the way an application uses
//! the abstraction); the baseline is raw quinn ([`crate::raw_quic::bulk`]). A sample's clock runs from the first
//! send to the last count (streams are opened before it); its CPU time is the process's user + system time over the
//! same interval (getrusage), client and server together, as both run in this process.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use nix::sys::resource::{UsageWho, getrusage};
use tlab_core::config::CongestionControl;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{
    ClientConfig, Connection, Deadlines, Limits, Message, MessageStream, Server, ServerConfig, StreamId, StreamMode,
    StreamOpen, Transport,
};
use tlab_service::EchoService;

/// Payload bytes of every bulk message: 64 KiB.
pub const MESSAGE_LEN: usize = 64 << 10;

/// A client connected to a bulk server, ready for samples.
pub trait BulkClient: Send {
    /// One stream opened for a transfer.
    type Stream: Send + 'static;
    /// Opens a fresh stream to the counting server.
    fn open(&mut self) -> impl Future<Output = Self::Stream> + Send;
    /// Sends `count` messages on `stream`, ends it and checks the server's count; panics on any error.
    fn transfer(stream: Self::Stream, count: u64) -> impl Future<Output = ()> + Send + 'static;
}

/// What one sample measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Payload bytes delivered (frame headers not counted).
    pub bytes: u64,
    /// From the first send to the last count.
    pub elapsed: Duration,
    /// User + system CPU time of the process over the same interval.
    pub cpu: Duration,
}

impl Sample {
    /// Payload throughput, Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }

    /// CPU nanoseconds per payload byte.
    pub fn cpu_ns_per_byte(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e9 / self.bytes as f64
    }
}

/// The process's user + system CPU time so far.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let duration = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    duration(usage.user_time()) + duration(usage.system_time())
}

/// One sample: `streams` streams opened, then `per_stream` messages on each at once.
pub async fn sample<C: BulkClient>(client: &mut C, streams: u32, per_stream: u64) -> Sample {
    let mut opened = Vec::new();
    for _ in 0..streams {
        opened.push(client.open().await);
    }
    let (cpu_start, start) = (cpu_time(), Instant::now());
    let tasks = opened.into_iter().map(|stream| tokio::spawn(C::transfer(stream, per_stream)));
    for done in join_all(tasks).await {
        done.expect("bulk stream task");
    }
    let (elapsed, cpu) = (start.elapsed(), cpu_time() - cpu_start);
    Sample { bytes: u64::from(streams) * per_stream * MESSAGE_LEN as u64, elapsed, cpu }
}

/// Our side: a client of one transport, connected to that transport's server of [`EchoService`].
pub struct Tlab {
    connection: Box<dyn Connection>,
    payload: Bytes,
    next_stream: StreamId,
    server: Option<Box<dyn Server>>,
}

/// Starts `transport`'s server and connects to it, both ends with `congestion` (what the QUIC modes run; kernel
/// TCP's algorithm is the host's).
pub async fn tlab(transport: &dyn Transport, congestion: CongestionControl) -> Tlab {
    let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity"));
    let token = "bulk-token".to_string();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        identity: identity.clone(),
        token: token.clone(),
        limits: Limits::default(),
        service: Arc::new(EchoService::default()),
        congestion,
        deadlines: Deadlines::default(),
        max_connections_per_ip: None,
        allow_origin: Default::default(),
    };
    let server = transport.serve(config).await.expect("server starts");
    let mut client = ClientConfig::new(server.url(), CertPin::Sha256(identity.sha256()), token);
    client.congestion = congestion;
    let connection = transport.connect(client).await.expect("tlab connect");
    Tlab { connection, payload: Bytes::from(vec![0xA5; MESSAGE_LEN]), next_stream: 0, server: Some(server) }
}

impl Tlab {
    /// Closes the connection and stops the server.
    pub async fn shutdown(mut self) {
        self.connection.close().await;
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl BulkClient for Tlab {
    type Stream = (StreamId, MessageStream, Bytes);

    async fn open(&mut self) -> Self::Stream {
        let id = self.next_stream;
        self.next_stream += 1;
        let open = StreamOpen { stream: id, mode: StreamMode::Sink, resume: None };
        (id, self.connection.open_stream(open).await.expect("tlab open_stream"), self.payload.clone())
    }

    async fn transfer((id, MessageStream { mut sink, mut source }, payload): Self::Stream, count: u64) {
        for seq in 0..count {
            sink.send(Message::data(id, seq, payload.clone())).await.expect("tlab send");
        }
        sink.finish().await.expect("tlab finish");
        let answer = source.recv().await.expect("tlab recv").expect("the sink's count");
        let counted = u64::from_be_bytes(answer.payload[..].try_into().expect("8-byte count"));
        assert_eq!(counted, count, "messages the sink counted");
    }
}
