//! WebTransport-specific behaviour against a real server on 127.0.0.1 (the common checks are in conformance.rs):
//! datagram size and mode limits, bad input inside a valid session, the browser-style token in the query, and a
//! client address change that the QUIC connection survives by itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tlab_core::frame::encode;
use tlab_core::{Error, Limits, Message, MessageStream, StreamMode, StreamOpen, Transport};
use tlab_testkit::TestServer;
use tlab_testkit::conformance::payload_for;
use tlab_webtransport::WebTransport;
use tokio::net::UdpSocket;
use wtransport::endpoint::ConnectOptions;
use wtransport::tls::Sha256Digest;

/// Fails the test instead of hanging.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Sends the messages `seqs` one by one on `stream` and checks each echo arrives once, in order, intact.
async fn echo(stream: &mut MessageStream, id: u32, seqs: std::ops::Range<u64>, size: usize) {
    for seq in seqs {
        stream.sink.send(Message::data(id, seq, payload_for(id, seq, size))).await.expect("send");
        let msg = within("echo", stream.source.recv()).await.expect("recv").expect("an echo");
        assert_eq!((msg.stream, msg.seq), (id, seq));
        assert_eq!(msg.payload, payload_for(id, seq, size), "payload of seq {seq}");
    }
}

/// A raw wtransport client session to `path` (our server's URL path plus query), pinned like a browser, no header.
async fn raw_session(server: &TestServer, path_and_query: &str) -> Result<wtransport::Connection, wtransport::error::ConnectingError> {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(server.identity.sha256())])
        .build();
    let endpoint = wtransport::Endpoint::client(config).expect("client endpoint");
    let url = format!("https://{}{path_and_query}", server.server.local_addr());
    endpoint.connect(ConnectOptions::builder(url).build()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_larger_than_max_datagram_size_is_a_typed_error_and_the_session_lives_on() {
    let transport = WebTransport::datagrams();
    let server = TestServer::start(&transport, Limits::default()).await;
    let conn = within("connect", transport.connect(server.client_config())).await.expect("connect");
    let mut stream = conn.open_stream(StreamOpen::echo(4)).await.expect("open");
    let refused = stream.sink.send(Message::data(4, 0, Bytes::from(vec![1u8; 4000]))).await;
    let Err(Error::MessageTooLarge { size: 4000, limit }) = refused else { panic!("expected MessageTooLarge, got {refused:?}") };
    assert!((1000..4000).contains(&limit), "limit {limit} should be the datagram room left for a payload");
    // Exactly the advertised limit fits (the whole frame must fit into one datagram).
    stream.sink.send(Message::data(4, 0, Bytes::from(vec![2u8; limit]))).await.expect("a payload of exactly the limit");
    let msg = within("max-size echo", stream.source.recv()).await.expect("recv").expect("echo");
    assert_eq!(msg.payload.len(), limit);
    echo(&mut stream, 4, 1..20, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_mode_serves_sources_and_refuses_sink_and_resumable_streams() {
    let transport = WebTransport::datagrams();
    let server = TestServer::start(&transport, Limits::default()).await;
    let conn = within("connect", transport.connect(server.client_config())).await.expect("connect");
    let outcome = conn.open_stream(StreamOpen { stream: 1, mode: StreamMode::Sink, resume: None }).await;
    assert!(matches!(outcome, Err(Error::Unsupported(_))), "{:?}", outcome.err());
    // A source: the server sends its datagrams on its schedule, each once although the open datagram is repeated.
    let mode = StreamMode::Source { count: 20, size: 32, interval_us: 2_000 };
    let mut stream = conn.open_stream(StreamOpen { stream: 2, mode, resume: None }).await.expect("open a source");
    let mut seqs = Vec::new();
    while seqs.len() < 20 {
        let msg = within("source datagram", stream.source.recv()).await.expect("recv").expect("a datagram");
        assert_eq!((msg.stream, msg.payload.len()), (2, 32));
        seqs.push(msg.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..20).collect::<Vec<u64>>());
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), stream.source.recv()).await;
    assert!(extra.is_err(), "the source ran once: {extra:?}");
    let resumable = StreamOpen {
        stream: 1,
        mode: StreamMode::Echo,
        resume: Some(tlab_core::config::ResumeFrom { session: 1, next_expected: 0, reopen: false }),
    };
    assert!(matches!(conn.open_stream(resumable).await, Err(Error::Unsupported(_))));
    assert!(matches!(conn.rebind("127.0.0.1:0".parse().unwrap()).await, Err(Error::Unsupported(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_the_session_stays_up() {
    let server = TestServer::start(&WebTransport::datagrams(), Limits::default()).await;
    let session = within("raw session", raw_session(&server, &format!("/tlab/wt?datagrams=1&token={}", server.token)))
        .await
        .expect("token in the query is accepted");
    for garbage in [&b""[..], b"x", &[0xff; 30], &[0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] {
        session.send_datagram(garbage).expect("send garbage");
    }
    let msg = Message::data(9, 3, Bytes::from_static(b"still here"));
    session.send_datagram(encode(&msg)).expect("send frame");
    let echoed = within("echo after garbage", session.receive_datagram()).await.expect("datagram");
    assert_eq!(echoed.payload(), encode(&msg), "the valid frame comes back unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_open_header_resets_that_stream_only() {
    let transport = WebTransport::streams();
    let server = TestServer::start(&transport, Limits::default()).await;
    let session = within("raw session", raw_session(&server, &format!("/tlab/wt?token={}", server.token))).await.expect("session");
    // A good stream, opened by hand: u16 length + open query, then frames.
    let (mut good_send, mut good_recv) = session.open_bi().await.expect("open").await.expect("opened");
    let query = StreamOpen::echo(1).to_query();
    good_send.write_all(&(query.len() as u16).to_be_bytes()).await.expect("write");
    good_send.write_all(query.as_bytes()).await.expect("write");
    // A bad one: the open query names an unknown mode.
    let (mut bad_send, mut bad_recv) = session.open_bi().await.expect("open").await.expect("opened");
    bad_send.write_all(&[0, 14]).await.expect("write");
    bad_send.write_all(b"mode=teleport&").await.expect("write");
    let mut buf = [0u8; 16];
    let outcome = within("bad stream", bad_recv.read(&mut buf)).await;
    assert!(matches!(outcome, Err(wtransport::error::StreamReadError::Reset(_))), "bad stream: {outcome:?}");
    // The good stream on the same session still echoes.
    let msg = Message::data(1, 0, Bytes::from_static(b"ok"));
    good_send.write_all(&encode(&msg)).await.expect("write frame");
    let mut echoed = vec![0u8; encode(&msg).len()];
    within("good stream", good_recv.read_exact(&mut echoed)).await.expect("echo");
    assert_eq!(echoed, encode(&msg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_on_a_stream_resets_it_and_the_session_serves_others() {
    let transport = WebTransport::streams();
    let server = TestServer::start(&transport, Limits { max_message_size: 1000, ..Limits::default() }).await;
    let conn = within("connect", transport.connect(server.client_config())).await.expect("connect");
    let mut big = conn.open_stream(StreamOpen::echo(0)).await.expect("open");
    big.sink.send(Message::data(0, 0, Bytes::from(vec![0u8; 5000]))).await.expect("the client's own limit is higher");
    let outcome = within("oversize", big.source.recv()).await;
    assert!(matches!(outcome, Err(Error::Protocol(_))), "expected the stream reset as a refusal, got {outcome:?}");
    let mut other = conn.open_stream(StreamOpen::echo(1)).await.expect("open");
    echo(&mut other, 1, 0..50, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_streams_beyond_its_limit() {
    let transport = WebTransport::streams();
    let server = TestServer::start(&transport, Limits::default()).await;
    let mut config = server.client_config();
    config.limits.max_streams = 2;
    let conn = within("connect", transport.connect(config)).await.expect("connect");
    let first = conn.open_stream(StreamOpen::echo(0)).await.expect("open 0");
    let _second = conn.open_stream(StreamOpen::echo(1)).await.expect("open 1");
    let third = conn.open_stream(StreamOpen::echo(2)).await;
    assert!(matches!(third, Err(Error::TooManyStreams { stream: 2, limit: 2 })), "{:?}", third.err());
    drop(first);
    conn.open_stream(StreamOpen::echo(3)).await.expect("a closed stream frees its slot");
}

/// A UDP relay whose upstream socket (the client's address as the server sees it) can be replaced, the old one going
/// silent in both directions: a NAT rebinding.
struct Relay {
    addr: SocketAddr,
    server: SocketAddr,
    front: Arc<UdpSocket>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    upstream: Arc<Mutex<Arc<UdpSocket>>>,
    downstream: Mutex<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let first = Self::upstream_socket(server).await;
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let downstream = Mutex::new(Self::forward_down(first.clone(), front.clone(), client.clone()));
        let upstream = Arc::new(Mutex::new(first));
        let (current, front_up, seen) = (upstream.clone(), front.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front_up.recv_from(&mut buf).await {
                *seen.lock().unwrap() = Some(from);
                let socket = current.lock().unwrap().clone();
                let _ = socket.send(&buf[..n]).await;
            }
        });
        Self { addr, server, front, client, upstream, downstream }
    }

    async fn upstream_socket(server: SocketAddr) -> Arc<UdpSocket> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        Arc::new(socket)
    }

    /// Server → client through `socket`.
    fn forward_down(socket: Arc<UdpSocket>, front: Arc<UdpSocket>, client: Arc<Mutex<Option<SocketAddr>>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf).await {
                let to = *client.lock().unwrap();
                if let Some(to) = to {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        })
    }

    /// From now on the server sees the client at a new port; packets to the old one are lost.
    async fn rebind(&self) {
        let socket = Self::upstream_socket(self.server).await;
        let down = Self::forward_down(socket.clone(), self.front.clone(), self.client.clone());
        std::mem::replace(&mut *self.downstream.lock().unwrap(), down).abort();
        *self.upstream.lock().unwrap() = socket;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_a_client_address_change_on_the_same_connection() {
    let transport = WebTransport::streams();
    let server = TestServer::start(&transport, Limits::default()).await;
    let server_addr = server.server.local_addr();
    let relay = Relay::start(server_addr).await;
    let mut config = server.client_config();
    config.url = config.url.replacen(&server_addr.to_string(), &relay.addr.to_string(), 1);
    let conn = within("connect", transport.connect(config)).await.expect("connect");
    // No session layer: had the connection been re-established, this stream would have failed.
    let mut stream = conn.open_stream(StreamOpen::echo(7)).await.expect("open");
    echo(&mut stream, 7, 0..300, 200).await;
    relay.rebind().await;
    echo(&mut stream, 7, 300..600, 200).await;
    stream.sink.finish().await.expect("finish");
    assert!(within("end", stream.source.recv()).await.expect("graceful end").is_none());
}
