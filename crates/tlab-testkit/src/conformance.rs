//! The conformance suite: what every reliable transport must do, checked the same way for all of them.
//!
//! Each check is a public async function taking the transport; [`crate::conformance_tests!`] (reliable modes) and
//! [`crate::datagram_conformance_tests!`] (datagram modes) turn a list of them into one `#[tokio::test]` per check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::{Connection, Error, Limits, Message, MessageStream, StreamId, StreamMode, StreamOpen, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ChaosProxy, TestServer, seed};

/// No single check may take longer than this; a hang fails instead of blocking the suite.
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// A payload whose bytes depend on (stream, seq), so that a mixed-up or corrupted message is detected.
pub fn payload_for(stream: StreamId, seq: u64, size: usize) -> Bytes {
    let mut rng = ChaCha8Rng::seed_from_u64(((stream as u64) << 40) ^ seq);
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes[..]);
    Bytes::from(bytes)
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CHECK_TIMEOUT, fut).await.unwrap_or_else(|_| panic!("{what}: no result within {CHECK_TIMEOUT:?}"))
}

/// Sends `count` messages of `size` bytes on `stream` and checks each echo arrives once, in order, intact.
async fn echo_and_verify(stream: MessageStream, id: StreamId, count: u64, size: usize) -> Result<(), String> {
    let MessageStream { mut sink, mut source } = stream;
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            sink.send(Message::data(id, seq, payload_for(id, seq, size))).await.map_err(|e| format!("send {seq}: {e}"))?;
        }
        sink.finish().await.map_err(|e| format!("finish: {e}"))?;
        Ok::<_, String>(sink)
    });
    for expected in 0..count {
        let msg = source
            .recv()
            .await
            .map_err(|e| format!("stream {id}: recv after {expected} messages: {e}"))?
            .ok_or_else(|| format!("stream {id}: ended after {expected} of {count} messages"))?;
        if msg.stream != id || msg.seq != expected {
            return Err(format!("stream {id}: got stream {} seq {}, expected seq {expected}", msg.stream, msg.seq));
        }
        if msg.payload != payload_for(id, expected, size) {
            return Err(format!("stream {id}: payload of seq {expected} corrupted"));
        }
    }
    let _sink = sender.await.map_err(|e| e.to_string())??;
    match source.recv().await {
        Ok(None) => Ok(()),
        other => Err(format!("stream {id}: expected a graceful end after {count} echoes, got {other:?}")),
    }
}

/// 10,000 messages over 8 concurrent streams of one connection, each echoed exactly once and in order.
pub async fn many_streams_exactly_once(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    let mut tasks = Vec::new();
    for id in 0..8 {
        let stream = conn.open_stream(StreamOpen::echo(id)).await.expect("open stream");
        tasks.push(tokio::spawn(echo_and_verify(stream, id, 1250, 64)));
    }
    bounded("8 streams × 1250 echoes", async {
        for task in tasks {
            task.await.expect("task").expect("stream verified");
        }
    })
    .await;
    conn.close().await;
}

/// Empty, small, 64 KiB and 1 MiB payloads round-trip intact.
pub async fn empty_and_large_payloads(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    for (id, size) in [(0, 0), (1, 1), (2, 64 << 10), (3, 1 << 20)] {
        let stream = conn.open_stream(StreamOpen::echo(id)).await.expect("open stream");
        bounded("payload sizes", echo_and_verify(stream, id, 3, size)).await.unwrap_or_else(|e| panic!("size {size}: {e}"));
    }
    conn.close().await;
}

/// Server→client (source) and client→server (sink) streams deliver everything; a transport whose capabilities say
/// it is one-way (`bidirectional == false`) still delivers the source stream, and refuses every stream that needs
/// client→server messages (sink, echo) with [`Error::Unsupported`] instead of faking it.
pub async fn both_directions(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    let count = 500;
    let source_open = StreamOpen { stream: 1, mode: StreamMode::Source { count, size: 100, interval_us: 0 }, resume: None };
    let MessageStream { source: mut from_server, .. } = conn.open_stream(source_open).await.expect("open source");
    bounded("source", async {
        for expected in 0..count {
            let msg = from_server.recv().await.expect("recv").expect("message");
            assert_eq!((msg.stream, msg.seq, msg.payload.len()), (1, expected, 100));
        }
        assert!(from_server.recv().await.expect("graceful end").is_none());
    })
    .await;

    if !transport.capabilities().bidirectional {
        for (stream, mode) in [(2, StreamMode::Sink), (3, StreamMode::Echo)] {
            let open = StreamOpen { stream, mode, resume: None };
            let outcome = bounded("one-way refusal", client_to_server(&*conn, open)).await;
            assert!(
                matches!(outcome, Err(Error::Unsupported(_))),
                "{}: one-way transport, {mode:?} stream: expected Unsupported, got {outcome:?}",
                transport.name()
            );
        }
        conn.close().await;
        return;
    }

    let sink_open = StreamOpen { stream: 2, mode: StreamMode::Sink, resume: None };
    let MessageStream { mut sink, mut source } = conn.open_stream(sink_open).await.expect("open sink");
    bounded("sink", async {
        for seq in 0..count {
            sink.send(Message::data(2, seq, payload_for(2, seq, 100))).await.expect("send");
        }
        sink.finish().await.expect("finish");
        let summary = source.recv().await.expect("recv").expect("summary");
        assert_eq!((summary.stream, summary.seq, summary.payload.len()), (2, 0, 8), "the sink summary: {summary:?}");
        assert_eq!(u64::from_be_bytes(summary.payload[..8].try_into().expect("8 bytes")), count);
        assert!(source.recv().await.expect("graceful end after the summary").is_none());
    })
    .await;
    conn.close().await;
}

/// Opens `open`, sends one message, finishes and reads: the first error on the way is the transport's answer.
async fn client_to_server(conn: &dyn Connection, open: StreamOpen) -> Result<Option<Message>, Error> {
    let id = open.stream;
    let MessageStream { mut sink, mut source } = conn.open_stream(open).await?;
    sink.send(Message::data(id, 0, payload_for(id, 0, 100))).await?;
    sink.finish().await?;
    source.recv().await
}

/// A wrong or missing token is refused with [`Error::Unauthorized`] and never reaches the application.
pub async fn wrong_token_rejected(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    for token in ["wrong-token", ""] {
        let mut config = server.client_config();
        config.token = token.to_string();
        let outcome = bounded("wrong token", async {
            let conn = transport.connect(config).await?;
            let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await?;
            sink.send(Message::data(0, 0, Bytes::from_static(b"secret"))).await?;
            source.recv().await
        })
        .await;
        assert!(matches!(outcome, Err(Error::Unauthorized)), "token {token:?}: expected Unauthorized, got {outcome:?}");
    }
}

/// Oversize messages: the client refuses to send above its limit; the server closes a stream that sends above its
/// limit, and keeps serving other clients.
pub async fn oversize_rejected(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits { max_message_size: 64 << 10, ..Limits::default() }).await;

    let mut strict = server.client_config();
    strict.limits.max_message_size = 1000;
    let conn = transport.connect(strict).await.expect("connect");
    let mut stream = conn.open_stream(StreamOpen::echo(0)).await.expect("open");
    let refused = stream.sink.send(Message::data(0, 0, Bytes::from(vec![0u8; 1001]))).await;
    assert!(matches!(refused, Err(Error::MessageTooLarge { size: 1001, limit: 1000 })), "client side: {refused:?}");

    let conn = transport.connect(server.client_config()).await.expect("connect");
    let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.expect("open");
    let big = Message::data(0, 0, Bytes::from(vec![7u8; 100 << 10]));
    if transport.capabilities().datagrams {
        // A datagram mode refuses on send what does not fit one datagram (far below 100 KiB), never dropping it.
        let refused = sink.send(big).await;
        assert!(
            matches!(refused, Err(Error::MessageTooLarge { size, limit }) if size == 100 << 10 && limit < size),
            "datagram mode: a 100 KiB message must be refused on send with MessageTooLarge, got {refused:?}"
        );
    } else {
        // The client's own limit (the default 4 MiB) lets it through; the server's 64 KiB limit must refuse it.
        sink.send(big).await.expect("100 KiB is within the client's limit");
        let outcome = bounded("oversize", source.recv()).await;
        // The server closes the stream or connection (docs/PROTOCOL.md, "The message and the binary frame"). The
        // client must report that as a refusal no reconnect can cure (`is_retryable() == false`): not as a lost
        // connection, an echo or a graceful end.
        assert!(
            matches!(&outcome, Err(e @ (Error::Protocol(_) | Error::MessageTooLarge { .. })) if !e.is_retryable()),
            "{}: a 100 KiB message over a 64 KiB server limit: expected a non-retryable refusal (Protocol or \
             MessageTooLarge), got {outcome:?}",
            transport.name()
        );
    }

    let other = transport.connect(server.client_config()).await.expect("connect");
    let stream = other.open_stream(StreamOpen::echo(5)).await.expect("open");
    if transport.capabilities().reliable {
        bounded("after oversize", echo_and_verify(stream, 5, 50, 1000)).await.expect("other client still served");
    } else {
        bounded("after oversize", datagram_echo_ratio(stream, 5, 50)).await.expect("other client still served");
    }
}

/// Garbage from one peer (plain bytes, and bytes after a valid TLS handshake) does not disturb a second client.
/// What docs/PROTOCOL.md promises for it is checked too: a TCP server closes a connection that sent garbage (whether
/// it fails the TLS handshake or follows one), and UDP garbage (QUIC servers) is dropped while the session stays up.
pub async fn malformed_peer_isolated(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    let stream = conn.open_stream(StreamOpen::echo(0)).await.expect("open");
    let reliable = transport.capabilities().reliable;
    let good = tokio::spawn(async move {
        if reliable { echo_and_verify(stream, 0, 2000, 200).await } else { datagram_echo_ratio(stream, 0, 300).await.map(|_| ()) }
    });

    let addr = server.server.local_addr();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp socket");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        tlab_core::tls::client_config(&tlab_core::tls::CertPin::AnyCertificate, &[b"h2", b"http/1.1"]).expect("tls"),
    ));
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    // Whether the server listens on TCP (ws, sse, grpc) shows by connecting; QUIC-based servers refuse TCP.
    let tcp_listening = match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => false,
        Err(e) => panic!("TCP connect to {addr}: neither accepted nor refused: {e}"),
    };
    for round in 0..10 {
        let mut garbage = vec![0u8; rng.random_range(1..4096)];
        rng.fill(&mut garbage[..]);
        if tcp_listening {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
            bounded("plain garbage", closed_by_server(tcp, &garbage))
                .await
                .unwrap_or_else(|e| panic!("round {round}, plain garbage: {e}"));
            if round % 2 == 0 {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
                let tls = tls.connect(tlab_core::tls::server_name(), tcp).await.expect("TLS handshake before garbage");
                bounded("garbage after TLS", closed_by_server(tls, &garbage))
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, garbage after a TLS handshake: {e}"));
            }
        }
        // QUIC servers listen on UDP: garbage datagrams, some shaped like QUIC long headers.
        garbage[0] |= if round % 2 == 0 { 0xC0 } else { 0 };
        let datagram = &garbage[..garbage.len().min(1400)];
        let sent = udp.send_to(datagram, addr).await.expect("send a garbage datagram");
        assert_eq!(sent, datagram.len(), "round {round}: garbage datagram truncated on send");
    }
    bounded("good client beside garbage", good).await.expect("task").expect("good client unaffected");
    let late = transport.connect(server.client_config()).await.expect("connect after garbage");
    let stream = late.open_stream(StreamOpen::echo(1)).await.expect("open");
    if reliable {
        bounded("late client", echo_and_verify(stream, 1, 100, 10)).await.expect("late client served");
    } else {
        bounded("late client", datagram_echo_ratio(stream, 1, 100)).await.expect("late client served");
    }
}

/// Writes `garbage`, ends this side's direction and reads until the server has closed the connection: Ok once it
/// has, Err on any other outcome (an I/O error that is not one of the ways a peer's close shows up). A server that
/// keeps the connection open is caught by the caller's bound.
async fn closed_by_server(mut conn: impl AsyncRead + AsyncWrite + Unpin, garbage: &[u8]) -> Result<(), String> {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, InvalidData, UnexpectedEof};
    // The server may close (and reset) before all the garbage is written: that is the outcome looked for.
    let peer_closed = |e: &std::io::Error| matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted);
    match conn.write_all(garbage).await {
        Err(e) if peer_closed(&e) => return Ok(()),
        Err(e) => return Err(format!("writing garbage: {e}")),
        Ok(()) => {}
    }
    match conn.shutdown().await {
        Err(e) if peer_closed(&e) => return Ok(()),
        Err(e) => return Err(format!("ending the write direction: {e}")),
        Ok(()) => {}
    }
    // EOF (after an alert or not), a reset, or TLS's report of a close without close_notify.
    let mut rest = Vec::new();
    match conn.read_to_end(&mut rest).await {
        Ok(_) => Ok(()),
        Err(e) if peer_closed(&e) || matches!(e.kind(), UnexpectedEof | InvalidData) => Ok(()),
        Err(e) => Err(format!("reading until the server closes: {e}")),
    }
}

/// Connections cut twice mid-stream (TCP reset by a proxy): the session layer reconnects and resumes, delivering
/// every message exactly once and in order, both on an echo stream and on a server source stream.
pub async fn killed_connection_resumes(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let proxy = ChaosProxy::start(server.server.local_addr()).await.expect("proxy");
    let config = SessionConfig { seed: seed(), ..SessionConfig::default() };
    let session = ResilientSession::connect(transport.clone(), server.client_config_via(&proxy), config)
        .await
        .expect("session");
    let count = 3000u64;
    let MessageStream { mut sink, mut source } = session.open_stream(StreamOpen { stream: 0, mode: StreamMode::Echo, resume: None }).await.expect("open echo");
    let source_mode = StreamMode::Source { count, size: 64, interval_us: 200 };
    let MessageStream { source: mut downlink, sink: mut downlink_sink } =
        session.open_stream(StreamOpen { stream: 1, mode: source_mode, resume: None }).await.expect("open source");
    // At most WINDOW messages in flight, so that each cut finds traffic still to deliver and forces a resume.
    const WINDOW: u64 = 100;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = received.clone();
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            while seq >= progress.load(std::sync::atomic::Ordering::Relaxed) + WINDOW {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            sink.send(Message::data(0, seq, payload_for(0, seq, 64))).await.expect("send");
        }
        sink.finish().await.expect("finish");
        sink
    });
    let downlink_reader = tokio::spawn(async move {
        for expected in 0..count {
            let msg = downlink.recv().await.expect("source recv").expect("source message");
            assert_eq!(msg.seq, expected, "source stream out of order or duplicated");
        }
        downlink_sink.finish().await.expect("finish source");
        assert!(downlink.recv().await.expect("graceful end").is_none());
    });
    let mut cuts = 0;
    bounded("resume after cuts", async {
        for expected in 0..count {
            if expected == 800 || expected == 2000 {
                cuts += proxy.kill_all();
            }
            let msg = source.recv().await.expect("recv").expect("message");
            assert_eq!(msg.seq, expected, "echo stream out of order, lost or duplicated");
            assert_eq!(msg.payload, payload_for(0, expected, 64), "payload of seq {expected}");
            received.store(expected + 1, std::sync::atomic::Ordering::Relaxed);
        }
        assert!(source.recv().await.expect("graceful end").is_none());
        sender.await.expect("sender");
        downlink_reader.await.expect("source reader");
    })
    .await;
    assert!(cuts >= 2, "the proxy cut {cuts} connections");
    assert!(session.reconnects() >= 2, "expected at least 2 reconnects, saw {}", session.reconnects());
    session.close().await;
}

/// Finishing a stream ends it gracefully on both sides; closing the connection afterwards is clean.
pub async fn graceful_close(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    let stream = conn.open_stream(StreamOpen::echo(3)).await.expect("open");
    bounded("graceful close", echo_and_verify(stream, 3, 10, 10)).await.expect("graceful");
    conn.close().await;
    server.server.shutdown().await;
}

/// Sends `count` datagram-mode messages at a modest rate (one per millisecond) and returns the share echoed back.
/// Fails on any corrupted message, any message of another stream, any seq never sent, or an error.
async fn datagram_echo_ratio(stream: MessageStream, id: StreamId, count: u64) -> Result<f64, String> {
    let MessageStream { mut sink, mut source } = stream;
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            sink.send(Message::data(id, seq, payload_for(id, seq, 100))).await.map_err(|e| format!("send {seq}: {e}"))?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok::<_, String>(sink)
    });
    let mut seen = std::collections::HashSet::new();
    // Unordered and unreliable: collect until everything came back or the line has been quiet for a second.
    while seen.len() < count as usize {
        match tokio::time::timeout(Duration::from_secs(1), source.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(format!("stream {id}: recv: {e}")),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(msg))) => {
                if msg.stream != id || msg.seq >= count {
                    return Err(format!("stream {id}: foreign message stream {} seq {}", msg.stream, msg.seq));
                }
                if msg.payload != payload_for(id, msg.seq, 100) {
                    return Err(format!("stream {id}: datagram seq {} corrupted", msg.seq));
                }
                seen.insert(msg.seq);
            }
        }
    }
    let mut sink = sender.await.map_err(|e| e.to_string())??;
    let _ = sink.finish().await;
    Ok(seen.len() as f64 / count as f64)
}

/// Datagram mode keeps its promises: no corruption, nothing from another session, and on an unimpaired loopback
/// at a modest rate every datagram arrives. Two sessions run at once on different streams.
pub async fn datagrams_delivered(transport: Arc<dyn Transport>) {
    let server = TestServer::start(&*transport, Limits::default()).await;
    let mut sessions = Vec::new();
    for id in [1, 2] {
        let conn = transport.connect(server.client_config()).await.expect("connect");
        let stream = conn.open_stream(StreamOpen::echo(id)).await.expect("open");
        sessions.push(tokio::spawn(async move {
            let ratio = datagram_echo_ratio(stream, id, 500).await;
            conn.close().await;
            ratio
        }));
    }
    for session in sessions {
        let ratio = bounded("datagram echo", session).await.expect("task").expect("datagram checks");
        eprintln!("datagram delivery ratio on loopback: {ratio:.4}");
        assert_eq!(ratio, 1.0, "datagrams lost on an unimpaired loopback at 1000/s");
    }
}

/// The checks for an unreliable datagram mode: one `#[tokio::test]` each.
#[macro_export]
macro_rules! datagram_conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            datagrams_delivered, wrong_token_rejected, oversize_rejected, malformed_peer_isolated);
    };
}

/// Expands to one `#[tokio::test]` per conformance check for the transport made by `$factory` (anything callable
/// returning `Box<dyn Transport>`), so each check passes or fails on its own.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            many_streams_exactly_once, empty_and_large_payloads, both_directions, wrong_token_rejected,
            oversize_rejected, malformed_peer_isolated, killed_connection_resumes, graceful_close);
    };
    (@each $factory:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let transport: std::sync::Arc<dyn $crate::__Transport> = std::sync::Arc::from($factory());
                $crate::conformance::$check(transport).await;
            }
        )*
    };
}

/// The checks run against an in-memory transport, so that a check is itself shown to pass on a correct transport
/// and to fail on one that breaks what it names (here: a one-way transport that fakes the missing direction).
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use tlab_core::{
        Capabilities, ClientConfig, Connection, Error, Message, MessageSink, MessageSource, MessageStream, Server,
        ServerConfig, StreamMode, StreamOpen, StreamService, Transport,
    };
    use tokio::sync::mpsc;

    /// Streams are pairs of channels handed to the service of the last `serve`. `one_way`: no client→server
    /// messages (sink and echo streams refused with `Unsupported`); `fake` with it: such streams are opened anyway,
    /// their messages silently dropped and their other direction ended at once: what a one-way transport must not do.
    #[derive(Default)]
    struct Loopback {
        one_way: bool,
        fake: bool,
        service: Mutex<Option<Arc<dyn StreamService>>>,
    }

    struct ChannelSink(Option<mpsc::UnboundedSender<Message>>);
    struct ChannelSource(mpsc::UnboundedReceiver<Message>);

    #[async_trait]
    impl MessageSink for ChannelSink {
        async fn send(&mut self, msg: Message) -> Result<(), Error> {
            let Some(tx) = &self.0 else { return Err(Error::Closed("sent after finish".into())) };
            tx.send(msg).map_err(|_| Error::Closed("peer gone".into()))
        }
        async fn finish(&mut self) -> Result<(), Error> {
            self.0 = None;
            Ok(())
        }
    }

    #[async_trait]
    impl MessageSource for ChannelSource {
        async fn recv(&mut self) -> Result<Option<Message>, Error> {
            Ok(self.0.recv().await)
        }
    }

    /// Two connected stream ends.
    fn pair() -> (MessageStream, MessageStream) {
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let client = MessageStream { sink: Box::new(ChannelSink(Some(up_tx))), source: Box::new(ChannelSource(down_rx)) };
        let server = MessageStream { sink: Box::new(ChannelSink(Some(down_tx))), source: Box::new(ChannelSource(up_rx)) };
        (client, server)
    }

    struct LoopbackServer;

    #[async_trait]
    impl Server for LoopbackServer {
        fn local_addr(&self) -> SocketAddr {
            // An address nothing listens on, for the checks that connect to it directly.
            "127.0.0.1:9".parse().expect("address")
        }
        fn url(&self) -> String {
            "loopback://memory".into()
        }
        async fn shutdown(self: Box<Self>) {}
    }

    struct LoopbackConnection {
        one_way: bool,
        fake: bool,
        service: Arc<dyn StreamService>,
    }

    #[async_trait]
    impl Connection for LoopbackConnection {
        async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
            let needs_uplink = !matches!(open.mode, StreamMode::Source { .. });
            if self.one_way && needs_uplink && !self.fake {
                return Err(Error::Unsupported("client→server messages on a one-way transport"));
            }
            let (client, server) = pair();
            if self.one_way && needs_uplink {
                // The fake: the stream "opens", its messages are read and dropped, and it ends "gracefully".
                let MessageStream { sink, mut source } = server;
                drop(sink);
                tokio::spawn(async move { while let Ok(Some(_)) = source.recv().await {} });
                return Ok(client);
            }
            let service = self.service.clone();
            tokio::spawn(async move { service.serve(open, server).await });
            Ok(client)
        }
        async fn close(&self) {}
    }

    #[async_trait]
    impl Transport for Loopback {
        fn name(&self) -> &'static str {
            "loopback"
        }
        fn description(&self) -> &'static str {
            "in-memory channels (testkit self-test)"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                bidirectional: !self.one_way,
                multiplexed: true,
                reliable: true,
                ordered: true,
                datagrams: false,
                native_migration: false,
                native_reconnect: false,
            }
        }
        async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
            *self.service.lock().expect("lock") = Some(config.service.clone());
            Ok(Box::new(LoopbackServer))
        }
        async fn connect(&self, _config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
            let service = self.service.lock().expect("lock").clone().ok_or(Error::Config("not serving".into()))?;
            Ok(Box::new(LoopbackConnection { one_way: self.one_way, fake: self.fake, service }))
        }
    }

    #[tokio::test]
    async fn both_directions_passes_a_two_way_transport() {
        super::both_directions(Arc::new(Loopback::default())).await;
    }

    #[tokio::test]
    async fn both_directions_passes_a_one_way_transport_that_refuses_the_uplink() {
        super::both_directions(Arc::new(Loopback { one_way: true, ..Loopback::default() })).await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected Unsupported")]
    async fn both_directions_fails_a_one_way_transport_that_fakes_the_uplink() {
        super::both_directions(Arc::new(Loopback { one_way: true, fake: true, ..Loopback::default() })).await;
    }

    #[tokio::test]
    async fn exactly_once_and_graceful_close_pass_on_the_loopback() {
        super::many_streams_exactly_once(Arc::new(Loopback::default())).await;
        super::graceful_close(Arc::new(Loopback::default())).await;
    }
}
