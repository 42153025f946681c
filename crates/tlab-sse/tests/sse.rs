//! Integration tests of both SSE modes against a real server on 127.0.0.1 with the echo service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use tlab_core::config::StreamMode;
use tlab_service::EchoService;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{
    ClientConfig, Connection, Error, Limits, Message, MessageStream, Server, ServerConfig, StreamOpen, Transport, frame,
};
use tlab_sse::SseTransport;
use tokio::time::timeout;

const TOKEN: &str = "secret-token";
const WAIT: Duration = Duration::from_secs(20);

fn modes() -> [SseTransport; 2] {
    [SseTransport::http1(), SseTransport::http2()]
}

struct Fixture {
    server: Box<dyn Server>,
    identity: Arc<Identity>,
}

impl Fixture {
    async fn start(limits: Limits) -> Self {
        // Logs are captured per test and shown when it fails.
        let _ =
            tracing_subscriber::fmt().with_env_filter("tlab_sse=debug,tlab_core=debug").with_test_writer().try_init();
        let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity: identity.clone(),
            token: TOKEN.into(),
            limits,
            service: Arc::new(EchoService::default()),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        // The server is the same for both modes.
        let server = SseTransport::http2().serve(config).await.unwrap();
        Self { server, identity }
    }

    fn client(&self, url: String, token: &str) -> ClientConfig {
        ClientConfig::new(url, CertPin::Sha256(self.identity.sha256()), token)
    }

    async fn connect(&self, transport: SseTransport) -> Box<dyn Connection> {
        timeout(WAIT, transport.connect(self.client(self.server.url(), TOKEN))).await.unwrap().unwrap()
    }
}

async fn recv(stream: &mut MessageStream) -> Result<Option<Message>, Error> {
    timeout(WAIT, stream.source.recv()).await.expect("recv timed out")
}

fn payload(stream: u32, i: u64) -> Bytes {
    Bytes::from(format!("stream {stream} message {i} {}", "x".repeat((i % 50) as usize)))
}

/// Sends `count` messages while receiving their echoes; checks each arrives exactly once, in order, unchanged.
async fn echo_roundtrip(mut stream: MessageStream, id: u32, count: u64) {
    let mut sink = stream.sink;
    let sender = tokio::spawn(async move {
        for i in 0..count {
            sink.send(Message::data(id, i, payload(id, i))).await.unwrap();
        }
        sink.finish().await.unwrap();
    });
    for i in 0..count {
        let msg = timeout(WAIT, stream.source.recv()).await.unwrap().unwrap().expect("echo");
        assert_eq!((msg.stream, msg.seq, msg.payload), (id, i, payload(id, i)));
    }
    assert!(timeout(WAIT, stream.source.recv()).await.unwrap().unwrap().is_none(), "graceful end after the echoes");
    sender.await.unwrap();
}

#[tokio::test]
async fn echo_many_messages_on_several_streams_exactly_once_in_order() {
    let fx = Fixture::start(Limits::default()).await;
    for transport in modes() {
        let conn = fx.connect(transport).await;
        let mut tasks = Vec::new();
        for id in 0..4 {
            let stream = conn.open_stream(StreamOpen::echo(id)).await.unwrap();
            tasks.push(tokio::spawn(echo_roundtrip(stream, id, 500)));
        }
        for task in tasks {
            task.await.unwrap();
        }
        conn.close().await;
    }
}

#[tokio::test]
async fn large_messages_cross_in_both_directions() {
    let fx = Fixture::start(Limits::default()).await;
    for transport in modes() {
        let conn = fx.connect(transport).await;
        let mut stream = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        let big = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
        for seq in 0..3 {
            stream.sink.send(Message::data(1, seq, big.clone())).await.unwrap();
        }
        for seq in 0..3 {
            let msg = recv(&mut stream).await.unwrap().unwrap();
            assert_eq!((msg.seq, msg.payload.len()), (seq, big.len()));
            assert!(msg.payload == big, "{}: payload corrupted", transport.name());
        }
    }
}

#[tokio::test]
async fn source_and_sink_modes() {
    let fx = Fixture::start(Limits::default()).await;
    for transport in modes() {
        let conn = fx.connect(transport).await;
        let source =
            StreamOpen { stream: 2, mode: StreamMode::Source { count: 300, size: 100, interval_us: 0 }, resume: None };
        let mut stream = conn.open_stream(source).await.unwrap();
        for seq in 0..300 {
            let msg = recv(&mut stream).await.unwrap().unwrap();
            assert_eq!((msg.stream, msg.seq, msg.payload.len()), (2, seq, 100));
        }
        assert!(recv(&mut stream).await.unwrap().is_none());

        let sink = StreamOpen { stream: 3, mode: StreamMode::Sink, resume: None };
        let mut stream = conn.open_stream(sink).await.unwrap();
        for i in 0..250 {
            stream.sink.send(Message::data(3, i, Bytes::from_static(b"data"))).await.unwrap();
        }
        stream.sink.finish().await.unwrap();
        let summary = recv(&mut stream).await.unwrap().unwrap();
        assert_eq!(summary.payload.as_ref(), 250u64.to_be_bytes());
        assert!(recv(&mut stream).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn wrong_token_or_certificate_is_refused() {
    let fx = Fixture::start(Limits::default()).await;
    // `connect` sends nothing: the first stream's request carries the token and meets the certificate.
    for transport in modes() {
        let first_stream = |config| async {
            let conn = transport.connect(config).await.expect("connect sends nothing");
            conn.open_stream(StreamOpen::echo(0)).await.err()
        };
        let wrong_token = first_stream(fx.client(fx.server.url(), "wrong")).await;
        assert!(matches!(wrong_token, Some(Error::Unauthorized)), "{}: {wrong_token:?}", transport.name());
        let mut wrong_pin = fx.client(fx.server.url(), TOKEN);
        wrong_pin.pin = CertPin::Sha256([7; 32]);
        let refused = first_stream(wrong_pin).await;
        assert!(matches!(refused, Some(Error::Tls(_))), "{}: {refused:?}", transport.name());
    }
    // The token may also come as a query parameter (browsers cannot set headers on EventSource).
    let raw = raw_client(&fx);
    let base = fx.server.url();
    let status = |url: String| {
        let raw = raw.clone();
        async move { raw.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("{base}/auth?token={TOKEN}")).await, 204);
    assert_eq!(status(format!("{base}/events?stream=1&conn=1")).await, 401);
    assert_eq!(status(format!("{base}/events?stream=1&conn=1&token=nope")).await, 401);
    assert_eq!(raw.post(format!("{base}/messages?stream=1&conn=1")).send().await.unwrap().status().as_u16(), 401);
}

#[tokio::test]
async fn oversize_messages_are_refused_and_others_still_served() {
    let fx = Fixture::start(Limits { max_message_size: 1000, max_streams: 16 }).await;
    for transport in modes() {
        // The client refuses to send above its own limit.
        let mut small = fx.client(fx.server.url(), TOKEN);
        small.limits.max_message_size = 10;
        let conn = transport.connect(small).await.unwrap();
        let mut stream = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        let refused = stream.sink.send(Message::data(0, 0, Bytes::from(vec![0; 11]))).await;
        assert!(matches!(refused, Err(Error::MessageTooLarge { size: 11, limit: 10 })), "{refused:?}");

        // The server closes a stream that posts above its limit: the event stream ends without `end`.
        let conn = fx.connect(transport).await;
        let mut bad = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        let mut good = conn.open_stream(StreamOpen::echo(2)).await.unwrap();
        bad.sink.send(Message::data(1, 0, Bytes::from(vec![0; 2000]))).await.unwrap();
        assert!(recv(&mut bad).await.is_err(), "{}: oversize must fail the stream", transport.name());
        // Its uplink failed too, so finishing reports an error.
        assert!(timeout(WAIT, bad.sink.finish()).await.unwrap().is_err());
        // Another stream of the same connection, and another connection, are still served.
        good.sink.send(Message::data(2, 0, Bytes::from_static(b"fine"))).await.unwrap();
        assert_eq!(recv(&mut good).await.unwrap().unwrap().payload.as_ref(), b"fine");
        echo_roundtrip(fx.connect(transport).await.open_stream(StreamOpen::echo(1)).await.unwrap(), 1, 20).await;
    }
}

#[tokio::test]
async fn malformed_uplink_closes_that_stream_only() {
    let fx = Fixture::start(Limits::default()).await;
    let raw = raw_client(&fx);
    let base = fx.server.url();
    let events = |stream: u32| {
        let raw = raw.clone();
        let url = format!("{base}/events?stream={stream}&mode=echo&conn=abc");
        async move {
            let response = raw.get(url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            assert_eq!(response.headers()["cache-control"], "no-store");
            response.bytes_stream().eventsource()
        }
    };
    let post = |stream: u32, body: Vec<u8>| {
        raw.post(format!("{base}/messages?conn=abc&stream={stream}")).bearer_auth(TOKEN).body(body).send()
    };
    let mut victim = events(1).await;
    let mut bystander = events(2).await;

    // A header announcing 40 bytes followed by 3: the body ends inside a frame.
    let mut truncated = frame::encode(&Message::data(1, 0, Bytes::from(vec![1; 40]))).to_vec();
    truncated.truncate(frame::HEADER_LEN + 3);
    assert_eq!(post(1, truncated).await.unwrap().status(), 400);
    let ended = timeout(WAIT, victim.next()).await.unwrap();
    assert!(ended.is_none(), "the victim's event stream ends, without `event: end`: {ended:?}");
    assert_eq!(post(1, Vec::new()).await.unwrap().status(), 404, "the stream is gone");

    // A frame for another stream than the URL's is malformed too; an unknown control op as well.
    let mut other = events(3).await;
    assert_eq!(post(3, frame::encode(&Message::data(9, 0, Bytes::new())).to_vec()).await.unwrap().status(), 400);
    assert!(timeout(WAIT, other.next()).await.unwrap().is_none());

    // The bystander on the same connection id still echoes, with the documented event format.
    let msg = Message::data(2, 0, Bytes::from_static(b"still here"));
    let two = [frame::encode(&msg), frame::encode(&Message::data(2, 1, Bytes::new()))].concat();
    assert_eq!(post(2, two).await.unwrap().status(), 204);
    for seq in 0..2u64 {
        let event = timeout(WAIT, bystander.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((event.event.as_str(), event.id.clone()), ("message", seq.to_string()));
        let bytes = base64::engine::general_purpose::STANDARD.decode(&event.data).unwrap();
        let echoed = frame::decode_exact(Bytes::from(bytes), 100).unwrap();
        assert_eq!(echoed.seq, seq);
        if seq == 0 {
            assert_eq!(echoed, msg);
        }
    }
    // Finishing the uplink makes the echo service finish: `event: end`, then the body ends.
    assert_eq!(
        raw.post(format!("{base}/messages?conn=abc&stream=2&fin=1")).bearer_auth(TOKEN).send().await.unwrap().status(),
        204
    );
    let end = timeout(WAIT, bystander.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((end.event.as_str(), end.data.as_str()), ("end", ""));
    assert!(timeout(WAIT, bystander.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn too_many_streams_are_refused_and_closed_streams_free_their_slot() {
    let fx = Fixture::start(Limits { max_message_size: 1 << 20, max_streams: 2 }).await;
    for transport in modes() {
        let conn = fx.connect(transport).await;
        let first = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        let _second = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        let refused = conn.open_stream(StreamOpen::echo(2)).await;
        assert!(matches!(refused, Err(Error::TooManyStreams { stream: 2, limit: 2 })), "{:?}", refused.err());
        // Dropping a stream closes its event stream; the server notices and frees the slot.
        drop(first);
        let reopened = timeout(WAIT, async {
            loop {
                match conn.open_stream(StreamOpen::echo(2)).await {
                    Err(Error::TooManyStreams { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => break other,
                }
            }
        })
        .await
        .unwrap();
        echo_roundtrip(reopened.unwrap(), 2, 10).await;
    }
}

#[tokio::test]
async fn server_shutdown_mid_stream_is_an_error_not_an_end() {
    for transport in modes() {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect(transport).await;
        let mut stream = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        stream.sink.send(Message::data(0, 0, Bytes::from_static(b"hi"))).await.unwrap();
        assert!(recv(&mut stream).await.unwrap().is_some());
        fx.server.shutdown().await;
        let after = recv(&mut stream).await;
        assert!(matches!(after, Err(ref e) if e.is_retryable()), "{}: {after:?}", transport.name());
    }
}

#[tokio::test]
async fn close_ends_the_connections_streams() {
    let fx = Fixture::start(Limits::default()).await;
    for transport in modes() {
        let conn = fx.connect(transport).await;
        let mut stream = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        conn.close().await;
        assert!(matches!(recv(&mut stream).await, Err(Error::Closed(_))));
        assert!(matches!(conn.open_stream(StreamOpen::echo(1)).await, Err(Error::Closed(_))));
    }
}

#[tokio::test]
async fn resilient_session_runs_on_both_modes() {
    let fx = Fixture::start(Limits::default()).await;
    for (seed, transport) in modes().into_iter().enumerate() {
        // The seed picks the session id: distinct ones keep the server's resume state of the two sessions apart.
        let config = SessionConfig { seed: seed as u64, ..SessionConfig::default() };
        let transport: Arc<dyn Transport> = Arc::new(transport);
        let session = ResilientSession::connect(transport, fx.client(fx.server.url(), TOKEN), config).await.unwrap();
        let mut stream = session.open_stream(StreamOpen { stream: 5, mode: StreamMode::Echo, resume: None }).await.unwrap();
        for i in 0..200 {
            stream.sink.send(Message::data(5, 0, payload(5, i))).await.unwrap();
        }
        stream.sink.finish().await.unwrap();
        for i in 0..200 {
            let msg = recv(&mut stream).await.unwrap().unwrap();
            assert_eq!((msg.seq, msg.payload), (i, payload(5, i)));
        }
        assert!(recv(&mut stream).await.unwrap().is_none());
        session.close().await;
    }
}

#[tokio::test]
async fn resilient_session_resumes_after_the_connection_is_cut() {
    let fx = Fixture::start(Limits::default()).await;
    for (seed, transport) in modes().into_iter().enumerate() {
        let proxy = Proxy::start(fx.server.local_addr()).await;
        let config = SessionConfig { seed: 100 + seed as u64, ..SessionConfig::default() };
        let transport: Arc<dyn Transport> = Arc::new(transport);
        let session = ResilientSession::connect(transport, fx.client(proxy.url.clone(), TOKEN), config).await.unwrap();
        let mut stream = session.open_stream(StreamOpen { stream: 1, mode: StreamMode::Echo, resume: None }).await.unwrap();
        for i in 0..300 {
            stream.sink.send(Message::data(1, 0, payload(1, i))).await.unwrap();
            if i < 150 {
                // Lock-step for the first half, so that the cut below happens mid-stream.
                assert_eq!(recv(&mut stream).await.unwrap().unwrap().seq, i);
            }
            if i == 100 {
                proxy.cut();
            }
        }
        stream.sink.finish().await.unwrap();
        for i in 150..300 {
            let msg = recv(&mut stream).await.unwrap().unwrap();
            assert_eq!((msg.seq, msg.payload), (i, payload(1, i)));
        }
        assert!(recv(&mut stream).await.unwrap().is_none());
        assert!(session.reconnects() >= 1, "the cut forced a reconnect");
        session.close().await;
    }
}

#[tokio::test]
async fn h2_shares_one_tcp_connection_and_h1_uses_two_per_stream() {
    let fx = Fixture::start(Limits::default()).await;
    for (transport, expected) in [(SseTransport::http2(), 1), (SseTransport::http1(), 6)] {
        let proxy = Proxy::start(fx.server.local_addr()).await;
        let conn = timeout(WAIT, transport.connect(fx.client(proxy.url.clone(), TOKEN))).await.unwrap().unwrap();
        let mut tasks = Vec::new();
        for id in 0..3 {
            tasks.push(tokio::spawn(echo_roundtrip(conn.open_stream(StreamOpen::echo(id)).await.unwrap(), id, 50)));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // sse-h1: per stream one connection for the event stream and one for the POSTs.
        assert_eq!(proxy.accepted.load(Ordering::SeqCst), expected, "{}", transport.name());
    }
}

/// A TCP forwarder to `target` that counts the connections it accepts and can cut them all.
struct Proxy {
    url: String,
    accepted: Arc<AtomicUsize>,
    forwarders: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/tlab/sse", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let forwarders = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, tasks) = (accepted.clone(), forwarders.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { url, accepted, forwarders }
    }

    /// Drops every forwarded connection, as a network failure would (no TLS close, no HTTP end).
    fn cut(&self) {
        for task in self.forwarders.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A plain reqwest client trusting the fixture's certificate, for raw protocol checks.
fn raw_client(fx: &Fixture) -> reqwest::Client {
    let tls = tlab_core::tls::client_config(&CertPin::Sha256(fx.identity.sha256()), &[b"h2"]).unwrap();
    reqwest::Client::builder().tls_backend_preconfigured(tls).http2_prior_knowledge().no_proxy().build().unwrap()
}
