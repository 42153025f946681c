//! End-to-end tests of the gRPC transport on 127.0.0.1 against `EchoService`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::config::ResumeFrom;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{
    ClientConfig, Connection, ControlOp, Error, Limits, Message, MessageKind, MessageStream, Server, ServerConfig,
    StreamMode, StreamOpen, Transport,
};
use tlab_grpc::GrpcTransport;
use tlab_testkit::{CountingService, bounded};

const TOKEN: &str = "s3cret";

struct Fixture {
    server: Box<dyn Server>,
    pin: CertPin,
    service: Arc<CountingService>,
}

impl Fixture {
    async fn start(limits: Limits) -> Self {
        // Shows the server's warnings (refusals and their reasons) in the output of a failing test.
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tlab_grpc=debug").try_init();
        let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap());
        let pin = CertPin::Sha256(identity.sha256());
        let service = Arc::new(CountingService::default());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity,
            token: TOKEN.into(),
            limits,
            service: service.clone(),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = GrpcTransport::new().serve(config).await.unwrap();
        Self { server, pin, service }
    }

    fn client_config(&self, token: &str, limits: Limits) -> ClientConfig {
        let mut config = ClientConfig::new(self.server.url(), self.pin.clone(), token);
        config.limits = limits;
        config
    }

    async fn connect(&self) -> Box<dyn Connection> {
        GrpcTransport::new().connect(self.client_config(TOKEN, Limits::default())).await.unwrap()
    }
}


fn payload(stream: u32, seq: u64, size: usize) -> Bytes {
    let mut bytes = vec![(stream as u8) ^ (seq as u8); size];
    if size >= 8 {
        bytes[..8].copy_from_slice(&seq.to_be_bytes());
    }
    Bytes::from(bytes)
}

/// Sends `count` messages on a fresh echo stream and checks they all come back once, in order, then a clean end.
async fn echo_round(conn: &dyn Connection, stream: u32, count: u64, size: usize) {
    let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(stream)).await.unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            sink.send(Message::data(stream, seq, payload(stream, seq, size))).await.unwrap();
        }
        sink.finish().await.unwrap();
    });
    for seq in 0..count {
        let msg = source.recv().await.unwrap().expect("echo ended early");
        assert_eq!((msg.stream, msg.seq, msg.kind), (stream, seq, MessageKind::Data));
        assert_eq!(msg.payload, payload(stream, seq, size));
    }
    assert!(source.recv().await.unwrap().is_none(), "expected a graceful end after the echoes");
    sender.await.unwrap();
}

#[tokio::test]
async fn echo_on_many_streams_of_one_connection() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
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
async fn source_stream_delivers_everything_then_ends() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let open =
            StreamOpen { stream: 3, mode: StreamMode::Source { count: 500, size: 256, interval_us: 0 }, resume: None };
        let MessageStream { mut sink, mut source } = conn.open_stream(open).await.unwrap();
        for seq in 0..500 {
            let msg = source.recv().await.unwrap().expect("source ended early");
            assert_eq!((msg.stream, msg.seq, msg.payload.len()), (3, seq, 256));
        }
        assert!(source.recv().await.unwrap().is_none());
        assert!(matches!(sink.send(Message::data(3, 0, Bytes::new())).await, Err(Error::Unsupported(_))));
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sink_stream_answers_the_count() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let open = StreamOpen { stream: 4, mode: StreamMode::Sink, resume: None };
        let MessageStream { mut sink, mut source } = conn.open_stream(open).await.unwrap();
        for seq in 0..300 {
            sink.send(Message::data(4, seq, payload(4, seq, 64))).await.unwrap();
        }
        sink.finish().await.unwrap();
        let summary = source.recv().await.unwrap().expect("no summary");
        assert_eq!((summary.stream, summary.seq, summary.kind), (4, 0, MessageKind::Data));
        assert_eq!(&summary.payload[..], &300u64.to_be_bytes());
        assert!(source.recv().await.unwrap().is_none());
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn resumable_stream_goes_through_the_bidi_rpc_with_its_open() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let open = StreamOpen {
            stream: 2,
            mode: StreamMode::Echo,
            resume: Some(ResumeFrom { session: 0xfeed, next_expected: 0, reopen: false }),
        };
        let MessageStream { mut sink, mut source } = conn.open_stream(open).await.unwrap();
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
async fn wrong_token_is_unauthorized_before_the_service() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = GrpcTransport::new().connect(fx.client_config("wrong", Limits::default())).await.unwrap();
        assert!(matches!(conn.open_stream(StreamOpen::echo(0)).await, Err(Error::Unauthorized)));
        let source =
            StreamOpen { stream: 0, mode: StreamMode::Source { count: 1, size: 1, interval_us: 0 }, resume: None };
        assert!(matches!(conn.open_stream(source).await, Err(Error::Unauthorized)));
        let MessageStream { mut sink, mut source } =
            conn.open_stream(StreamOpen { stream: 1, mode: StreamMode::Sink, resume: None }).await.unwrap();
        let _ = sink.finish().await;
        assert!(matches!(source.recv().await, Err(Error::Unauthorized)));
        assert_eq!(fx.service.served(), 0);
        // The right token on the same server still works.
        echo_round(&*fx.connect().await, 0, 10, 10).await;
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn pin_mismatch_is_a_tls_error() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let mut config = fx.client_config(TOKEN, Limits::default());
        config.pin = CertPin::Sha256([7; 32]);
        let err = GrpcTransport::new().connect(config).await.err().expect("connect must fail");
        assert!(matches!(err, Error::Tls(_)), "{err}");
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn oversize_fails_that_stream_and_the_server_keeps_serving() {
    bounded(async {
        let fx = Fixture::start(Limits { max_message_size: 1024, max_streams: 64 }).await;
        let roomy = fx.client_config(TOKEN, Limits::default());
        let conn = GrpcTransport::new().connect(roomy).await.unwrap();
        // 1030 B passes tonic's limit (1024 + 64) and fails our payload check; 4096 B fails tonic's.
        for size in [1030, 4096] {
            let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
            sink.send(Message::data(1, 0, payload(1, 0, 100))).await.unwrap();
            assert_eq!(source.recv().await.unwrap().unwrap().seq, 0);
            sink.send(Message::data(1, 1, payload(1, 1, size))).await.unwrap();
            let err = source.recv().await.expect_err("oversize must fail the RPC");
            assert!(matches!(err, Error::Protocol(ref m) if m.contains("ResourceExhausted")), "{size}: {err}");
        }
        // Same connection, another stream; and another client.
        echo_round(&*conn, 2, 20, 1024).await;
        echo_round(&*fx.connect().await, 3, 20, 1024).await;
        // The client refuses to send above its own limit.
        let strict = GrpcTransport::new()
            .connect(fx.client_config(TOKEN, Limits { max_message_size: 10, max_streams: 4 }))
            .await
            .unwrap();
        let mut stream = strict.open_stream(StreamOpen::echo(0)).await.unwrap();
        let err = stream.sink.send(Message::data(0, 0, payload(0, 0, 11))).await.unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { size: 11, limit: 10 }), "{err}");
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_frame_fails_that_stream_only() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let mut healthy = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(2)).await.unwrap();
        // A control message with an unknown operation byte.
        let bad =
            Message { stream: 2, seq: 0, sent_at: 0, kind: MessageKind::Control, payload: Bytes::from_static(&[99]) };
        sink.send(bad).await.unwrap();
        let err = source.recv().await.expect_err("malformed frame must fail the RPC");
        assert!(matches!(err, Error::Protocol(ref m) if m.contains("InvalidArgument")), "{err}");
        healthy.sink.send(Message::data(1, 0, Bytes::from_static(b"still here"))).await.unwrap();
        assert_eq!(&healthy.source.recv().await.unwrap().unwrap().payload[..], b"still here");
        // A source size the SourceRequest cannot carry is refused before anything is sent.
        let before = fx.service.served();
        let oversized_source = StreamOpen {
            stream: 0,
            mode: StreamMode::Source { count: 1, size: 1 << 33, interval_us: 0 },
            resume: None,
        };
        assert!(matches!(conn.open_stream(oversized_source).await, Err(Error::Config(_))));
        assert_eq!(fx.service.served(), before);
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    bounded(async {
        let fx = Fixture::start(Limits { max_message_size: 1024, max_streams: 2 }).await;
        let conn = fx.connect().await;
        let first = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        let _second = conn.open_stream(StreamOpen::echo(1)).await.unwrap();
        let err = conn.open_stream(StreamOpen::echo(2)).await.err().expect("third stream must be refused");
        assert!(matches!(err, Error::TooManyStreams { stream: 2, limit: 2 }), "{err}");
        // Once a stream ends its slot is free again.
        drop(first);
        let reopened = async {
            loop {
                match conn.open_stream(StreamOpen::echo(3)).await {
                    Ok(stream) => return stream,
                    Err(Error::TooManyStreams { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let _third = tokio::time::timeout(Duration::from_secs(5), reopened).await.expect("slot never freed");
        // The client enforces its own limit too.
        let one = GrpcTransport::new()
            .connect(fx.client_config(TOKEN, Limits { max_message_size: 1024, max_streams: 1 }))
            .await
            .unwrap();
        let _only = one.open_stream(StreamOpen::echo(0)).await.unwrap();
        assert!(matches!(
            one.open_stream(StreamOpen::echo(1)).await,
            Err(Error::TooManyStreams { stream: 1, limit: 1 })
        ));
        fx.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn server_shutdown_is_an_error_not_a_graceful_end() {
    bounded(async {
        let fx = Fixture::start(Limits::default()).await;
        let conn = fx.connect().await;
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        sink.send(Message::data(0, 0, Bytes::from_static(b"x"))).await.unwrap();
        assert!(source.recv().await.unwrap().is_some());
        fx.server.shutdown().await;
        let err = source.recv().await.expect_err("a cut connection is not a graceful end");
        assert!(err.is_retryable(), "{err}");
    })
    .await;
}
