//! End-to-end tests of the raw QUIC transport on 127.0.0.1 against `EchoService`, including a hand-made quinn
//! client that sends what a well-behaved client never does.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{
    ClientConfig, Connection, ControlOp, Error, Limits, Message, MessageKind, MessageStream, Server, ServerConfig,
    StreamMode, StreamOpen, Transport, frame,
};
use tlab_core::config::CongestionControl;
use tlab_quic::QuicTransport;
use tlab_testkit::{CountingService, bounded};

const TOKEN: &str = "s3cret";

struct Fixture {
    server: Box<dyn Server>,
    pin: CertPin,
    service: Arc<CountingService>,
}

impl Fixture {
    async fn start(limits: Limits) -> Self {
        Self::start_with(limits, CongestionControl::default()).await
    }

    async fn start_with(limits: Limits, congestion: CongestionControl) -> Self {
        // Shows the server's warnings (refusals and their reasons) in the output of a failing test.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tlab_quic=debug").try_init();
        let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap());
        let pin = CertPin::Sha256(identity.sha256());
        let service = Arc::new(CountingService::default());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity,
            token: TOKEN.into(),
            limits,
            service: service.clone(),
            congestion,
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = QuicTransport::new().serve(config).await.unwrap();
        Self { server, pin, service }
    }

    fn client_config(&self, token: &str, limits: Limits) -> ClientConfig {
        let mut config = ClientConfig::new(self.server.url(), self.pin.clone(), token);
        config.limits = limits;
        config
    }

    async fn connect_with(&self, token: &str, limits: Limits) -> Result<Box<dyn Connection>, Error> {
        QuicTransport::new().connect(self.client_config(token, limits)).await
    }

    async fn connect(&self) -> Box<dyn Connection> {
        self.connect_with(TOKEN, Limits::default()).await.unwrap()
    }

    /// A bare quinn connection speaking ALPN `tlab-quic/1` (its streams must start with the token header).
    async fn raw(&self) -> quinn::Connection {
        let tls = tlab_core::tls::client_config(&self.pin, &[b"tlab-quic/1"]).unwrap();
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.connect_with(config, self.server.local_addr(), "localhost").unwrap().await.unwrap()
    }
}

/// The open header: `u16` big-endian length, then the text.
fn header(text: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u16(text.len() as u16);
    buf.put_slice(text.as_bytes());
    buf.freeze()
}

/// What a stream starts with: the token header, then the open header.
fn opening(query: &str) -> Bytes {
    [header(TOKEN), header(query)].concat().into()
}


fn payload(stream: u32, seq: u64, size: usize) -> Bytes {
    let mut bytes = vec![(stream as u8) ^ (seq as u8); size];
    if size >= 8 {
        bytes[..8].copy_from_slice(&seq.to_be_bytes());
    }
    Bytes::from(bytes)
}

/// Sends `count` messages on a fresh echo stream, `pause` apart, and checks each comes back once, in order; then a
/// clean end. `midway` runs once half of the echoes have arrived.
async fn echo_round_with(
    conn: &dyn Connection,
    stream: u32,
    count: u64,
    size: usize,
    pause: Duration,
    midway: impl Future<Output = ()>,
) {
    let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(stream)).await.unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            sink.send(Message::data(stream, seq, payload(stream, seq, size))).await.unwrap();
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        sink.finish().await.unwrap();
    });
    let mut midway = Some(midway);
    for seq in 0..count {
        if seq == count / 2
            && let Some(midway) = midway.take()
        {
            midway.await;
        }
        let msg = source.recv().await.unwrap().expect("echo ended early");
        assert_eq!((msg.stream, msg.seq, msg.kind), (stream, seq, MessageKind::Data));
        assert_eq!(msg.payload, payload(stream, seq, size));
    }
    assert!(source.recv().await.unwrap().is_none(), "expected a graceful end after the echoes");
    sender.await.unwrap();
}

async fn echo_round(conn: &dyn Connection, stream: u32, count: u64, size: usize) {
    echo_round_with(conn, stream, count, size, Duration::ZERO, async {}).await;
}

#[tokio::test]
async fn echo_on_many_streams_of_one_connection() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        assert!(fx.server.url().starts_with("quic://127.0.0.1:"));
        let conn: Arc<dyn Connection> = fx.connect().await.into();
        let rounds: Vec<_> = (0..6)
            .map(|stream| {
                let conn = conn.clone();
                tokio::spawn(async move { echo_round(&*conn, stream, 1000, 100 + stream as usize * 300).await })
            })
            .collect();
        for round in rounds {
            round.await.unwrap();
        }
        assert_eq!(fx.service.served(), 6);
        conn.close().await;
        assert!(matches!(conn.open_stream(StreamOpen::echo(9)).await, Err(Error::Closed(_))));
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn source_and_sink_streams() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let open =
            StreamOpen { stream: 3, mode: StreamMode::Source { count: 500, size: 256, interval_us: 0 }, resume: None };
        let MessageStream { source: mut from_server, .. } = conn.open_stream(open).await.unwrap();
        for seq in 0..500 {
            let msg = from_server.recv().await.unwrap().expect("source ended early");
            assert_eq!((msg.stream, msg.seq, msg.payload.len()), (3, seq, 256));
        }
        assert!(from_server.recv().await.unwrap().is_none());

        let open = StreamOpen { stream: 4, mode: StreamMode::Sink, resume: None };
        let MessageStream { mut sink, mut source } = conn.open_stream(open).await.unwrap();
        for seq in 0..300 {
            sink.send(Message::data(4, seq, payload(4, seq, 64))).await.unwrap();
        }
        sink.finish().await.unwrap();
        let summary = source.recv().await.unwrap().expect("no summary");
        assert_eq!((summary.stream, summary.seq), (4, 0));
        assert_eq!(&summary.payload[..], &300u64.to_be_bytes());
        assert!(source.recv().await.unwrap().is_none());
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn resumable_stream_starts_with_resume() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let resume = Some(tlab_core::config::ResumeFrom { session: 0xfeed, next_expected: 0, reopen: false });
        let MessageStream { mut sink, mut source } =
            conn.open_stream(StreamOpen { stream: 2, mode: StreamMode::Echo, resume }).await.unwrap();
        let first = source.recv().await.unwrap().unwrap();
        assert_eq!((first.stream, first.control_op(), first.seq), (2, Some(ControlOp::Resume), 0));
        sink.send(Message::data(2, 0, Bytes::from_static(b"hello"))).await.unwrap();
        let echo = source.recv().await.unwrap().unwrap();
        assert_eq!((echo.seq, &echo.payload[..]), (0, &b"hello"[..]));
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_token_fails_the_first_stream_before_the_service() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        for token in ["wrong", ""] {
            let conn = fx.connect_with(token, Limits::default()).await.expect("the token costs no round trip in connect");
            let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
            // The send may already see the close; the receive must.
            let _ = sink.send(Message::data(0, 0, Bytes::from_static(b"secret"))).await;
            let outcome = source.recv().await;
            assert!(matches!(outcome, Err(Error::Unauthorized)), "token {token:?}: {outcome:?}");
        }
        // A client sending an open query where the token belongs: refused, the connection closed with 0x101.
        let raw = fx.raw().await;
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&header("stream=0&mode=echo")).await.unwrap();
        send.write_all(&header("stream=0&mode=echo")).await.unwrap();
        let err = recv.read_to_end(64).await.unwrap_err();
        let closed = raw.closed().await;
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(0x101) && &c.reason[..] == b"unauthorized"),
            "{closed:?} / {err:?}"
        );
        assert_eq!(fx.service.served(), 0);
        echo_round(&*fx.connect().await, 0, 10, 10).await;
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn oversize_is_refused_on_that_stream_only() {
    bounded(async {
        let fx = Fixture::start(Limits { max_message_size: 1000, ..Limits::default() }).await;
        let strict = fx.connect_with(TOKEN, Limits { max_message_size: 10, ..Limits::default() }).await.unwrap();
        let mut stream = strict.open_stream(StreamOpen::echo(0)).await.unwrap();
        let refused = stream.sink.send(Message::data(0, 0, Bytes::from(vec![0u8; 11]))).await;
        assert!(matches!(refused, Err(Error::MessageTooLarge { size: 11, limit: 10 })), "{refused:?}");

        let conn = fx.connect().await;
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        sink.send(Message::data(1, 0, Bytes::from(vec![1u8; 1001]))).await.unwrap();
        let outcome = source.recv().await;
        assert!(matches!(&outcome, Err(Error::Protocol(reason)) if reason.contains("0x102")), "{outcome:?}");
        // The same connection and another client are still served.
        echo_round(&*conn, 2, 50, 1000).await;
        echo_round(&*fx.connect().await, 3, 50, 1000).await;
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_header_or_frame_resets_that_stream_only() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let good = fx.connect().await;
        let raw = fx.raw().await;
        let reset_code = |e: quinn::ReadToEndError| match e {
            quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) => code.into_inner(),
            other => panic!("expected a stream reset, got {other:?}"),
        };
        // An open query that does not parse.
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&opening("stream=x")).await.unwrap();
        assert_eq!(reset_code(recv.read_to_end(1 << 20).await.unwrap_err()), 0x103);
        // A valid header, then a frame with an unknown control operation.
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&opening("stream=1&mode=echo")).await.unwrap();
        let mut bad = BytesMut::from(&frame::encode(&Message::control(1, ControlOp::Ping, 0))[..]);
        let last = bad.len() - 1;
        bad[last] = 99;
        send.write_all(&bad).await.unwrap();
        assert_eq!(reset_code(recv.read_to_end(1 << 20).await.unwrap_err()), 0x103);
        // A token header that ends the stream before its declared length.
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&[0, 50, b's']).await.unwrap();
        send.finish().unwrap();
        assert_eq!(reset_code(recv.read_to_end(1 << 20).await.unwrap_err()), 0x103);
        // The raw connection itself still carries a well-formed stream, and so does the other client.
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        let msg = Message::data(5, 0, Bytes::from_static(b"ok"));
        send.write_all(&opening("stream=5&mode=echo")).await.unwrap();
        send.write_all(&frame::encode(&msg)).await.unwrap();
        send.finish().unwrap();
        let echoed = recv.read_to_end(1 << 20).await.unwrap();
        assert_eq!(frame::decode_exact(echoed.into(), 100).unwrap(), msg);
        echo_round(&*good, 0, 100, 100).await;
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    bounded(async {
        let fx = Fixture::start(Limits { max_streams: 2, ..Limits::default() }).await;
        let conn = fx.connect().await;
        let mut open = Vec::new();
        for id in 0..2 {
            let mut stream = conn.open_stream(StreamOpen::echo(id)).await.unwrap();
            stream.sink.send(Message::data(id, 0, Bytes::from_static(b"x"))).await.unwrap();
            assert_eq!(stream.source.recv().await.unwrap().unwrap().seq, 0);
            open.push(stream);
        }
        // QUIC stream credit allows one more (limit + 1); the server's own count refuses it with 0x104.
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(2)).await.unwrap();
        let _ = sink.send(Message::data(2, 0, Bytes::from_static(b"x"))).await;
        let refused = source.recv().await;
        assert!(matches!(refused, Err(Error::TooManyStreams { stream: 2, limit: 2 })), "{refused:?}");
        // The streams within the limit still work.
        for (id, stream) in open.iter_mut().enumerate() {
            stream.sink.send(Message::data(id as u32, 1, Bytes::from_static(b"y"))).await.unwrap();
            assert_eq!(stream.source.recv().await.unwrap().unwrap().seq, 1);
        }
        // The client refuses above its own limit without asking the server.
        let mine = fx.connect_with(TOKEN, Limits { max_streams: 1, ..Limits::default() }).await.unwrap();
        let _first = mine.open_stream(StreamOpen::echo(0)).await.unwrap();
        assert!(matches!(
            mine.open_stream(StreamOpen::echo(1)).await,
            Err(Error::TooManyStreams { stream: 1, limit: 1 })
        ));
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rebind_migrates_the_same_connection() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let new_local = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // A plain (not resumable) stream cannot outlive its QUIC connection: if it delivers every echo, exactly once
        // and in order, across the rebind, the connection migrated instead of being re-established.
        echo_round_with(&*conn, 7, 2000, 200, Duration::from_micros(500), async {
            conn.rebind(new_local).await.expect("rebind");
        })
        .await;
        assert_eq!(fx.service.served(), 1);
        // The new path keeps working for new streams too.
        echo_round(&*conn, 8, 100, 100).await;
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn every_congestion_controller_carries_traffic() {
    bounded(async {
        for congestion in CongestionControl::ALL {
            let fx = Fixture::start_with(Limits::default(), congestion).await;
            let mut config = fx.client_config(TOKEN, Limits::default());
            config.congestion = congestion;
            let conn = QuicTransport::new().connect(config).await.unwrap();
            echo_round(&*conn, 0, 200, 4096).await;
            fx.server.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn server_going_away_is_a_retryable_error_not_a_clean_end() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        sink.send(Message::data(0, 0, Bytes::from_static(b"x"))).await.unwrap();
        assert!(source.recv().await.unwrap().is_some());
        fx.server.shutdown().await;
        let outcome = source.recv().await;
        assert!(matches!(&outcome, Err(e) if e.is_retryable()), "{outcome:?}");
    })
    .await;
}
