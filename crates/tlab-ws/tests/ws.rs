//! Integration tests of both WebSocket modes against a real server on 127.0.0.1 with the echo service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tlab_core::frame::encode;
use tlab_service::EchoService;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::tls::{CertPin, Identity, client_config, server_name};
use tlab_core::{
    ClientConfig, Connection, Error, Limits, Message, MessageStream, Server, ServerConfig, StreamMode, StreamOpen, Transport,
};
use tlab_ws::WsTransport;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TOKEN: &str = "secret-token";
const MODES: [fn() -> WsTransport; 2] = [WsTransport::per_stream, WsTransport::multiplexed];

/// Fails the test instead of hanging.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

struct Fixture {
    server: Box<dyn Server>,
    identity: Arc<Identity>,
}

impl Fixture {
    async fn start(transport: WsTransport, limits: Limits) -> Self {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tlab_ws=debug").try_init();
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
        let server = transport.serve(config).await.unwrap();
        Self { server, identity }
    }

    fn client(&self, token: &str) -> ClientConfig {
        ClientConfig::new(self.server.url(), CertPin::Sha256(self.identity.sha256()), token)
    }

    async fn connect(&self, transport: WsTransport) -> Box<dyn Connection> {
        within("connect", transport.connect(self.client(TOKEN))).await.unwrap()
    }
}

/// Sends `count` messages on `stream`, finishes, and checks every echo arrives once, in order, then the end.
async fn echo_round(mut stream: MessageStream, id: u32, count: u64, size: usize) {
    let payload = Bytes::from(vec![id as u8; size]);
    let writer = async {
        for seq in 0..count {
            stream.sink.send(Message::data(id, seq, payload.clone())).await.unwrap();
        }
        stream.sink.finish().await.unwrap();
    };
    let reader = async {
        for seq in 0..count {
            let msg = stream.source.recv().await.unwrap().expect("an echo, not the end");
            assert_eq!((msg.stream, msg.seq, &msg.payload), (id, seq, &payload));
        }
        assert!(stream.source.recv().await.unwrap().is_none(), "graceful end after the echoes");
    };
    within("echo round", async { tokio::join!(writer, reader) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_several_streams_exactly_once_in_order() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits::default()).await;
        let conn = fx.connect(mode()).await;
        let mut rounds = Vec::new();
        for id in 0..4 {
            let stream = within("open", conn.open_stream(StreamOpen::echo(id))).await.unwrap();
            rounds.push(echo_round(stream, id, 300, 100 + id as usize * 500));
        }
        futures::future::join_all(rounds).await;
        conn.close().await;
        fx.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_client_mode_talks_to_either_server_mode() {
    for server_mode in MODES {
        let fx = Fixture::start(server_mode(), Limits::default()).await;
        for client_mode in MODES {
            let conn = fx.connect(client_mode()).await;
            let stream = within("open", conn.open_stream(StreamOpen::echo(7))).await.unwrap();
            echo_round(stream, 7, 20, 10).await;
        }
        fx.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_sink_modes() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits::default()).await;
        let conn = fx.connect(mode()).await;

        let source = StreamOpen { stream: 1, mode: StreamMode::Source { count: 500, size: 64, interval_us: 0 }, resume: None };
        let mut stream = within("open", conn.open_stream(source)).await.unwrap();
        within("source", async {
            for seq in 0..500 {
                let msg = stream.source.recv().await.unwrap().unwrap();
                assert_eq!((msg.seq, msg.payload.len()), (seq, 64));
            }
            assert!(stream.source.recv().await.unwrap().is_none());
        })
        .await;

        let sink = StreamOpen { stream: 2, mode: StreamMode::Sink, resume: None };
        let mut stream = within("open", conn.open_stream(sink)).await.unwrap();
        within("sink", async {
            for seq in 0..300 {
                stream.sink.send(Message::data(2, seq, Bytes::from_static(b"x"))).await.unwrap();
            }
            stream.sink.finish().await.unwrap();
            // The count comes after this side finished: half-close must leave the other direction open.
            let count = stream.source.recv().await.unwrap().unwrap();
            assert_eq!(count.payload.as_ref(), &300u64.to_be_bytes());
            assert!(stream.source.recv().await.unwrap().is_none());
        })
        .await;
        fx.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_unauthorized() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits::default()).await;
        // ws-mux's upgrade in `connect` carries the token; ws dials nothing before its first stream's upgrade.
        for token in ["wrong", ""] {
            let first_stream = async { mode().connect(fx.client(token)).await?.open_stream(StreamOpen::echo(0)).await.map(drop) };
            let result = within("first stream", first_stream).await;
            assert!(matches!(result, Err(Error::Unauthorized)), "{}: {:?}", mode().name(), result.err());
        }
        fx.server.shutdown().await;
    }
}

/// A raw WebSocket connection (our TLS, tokio-tungstenite) to `path`, with the token only in the query.
async fn raw_ws(fx: &Fixture, path: &str) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let addr = fx.server.local_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = client_config(&CertPin::Sha256(fx.identity.sha256()), &[b"http/1.1"]).unwrap();
    let tls = TlsConnector::from(Arc::new(tls)).connect(server_name(), tcp).await.unwrap();
    let request = format!("wss://{addr}{path}").into_client_request().unwrap();
    within("raw handshake", tokio_tungstenite::client_async(request, tls)).await.unwrap().0
}

/// The close code the server answers `bad` with.
async fn close_code_after(fx: &Fixture, path: &str, prelude: Option<WsMessage>, bad: WsMessage) -> CloseCode {
    let mut ws = raw_ws(fx, path).await;
    if let Some(m) = prelude {
        ws.send(m).await.unwrap();
    }
    ws.send(bad).await.unwrap();
    within("close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(Some(frame)))) => return frame.code,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_that_connection_only() {
    let fx = Fixture::start(WsTransport::multiplexed(), Limits { max_message_size: 1000, max_streams: 16 }).await;
    let tok = format!("token={TOKEN}");
    let survivor = fx.connect(WsTransport::multiplexed()).await;
    let open = Some(WsMessage::Text("open stream=0&mode=echo".into()));
    let garbage = WsMessage::Binary(Bytes::from_static(b"not a frame"));
    let cases = [
        (format!("/tlab/ws-mux?{tok}"), open.clone(), garbage.clone(), CloseCode::Protocol),
        (format!("/tlab/ws?stream=0&{tok}"), None, garbage, CloseCode::Protocol),
        (format!("/tlab/ws-mux?{tok}"), None, WsMessage::Text("hello".into()), CloseCode::Protocol),
        (format!("/tlab/ws-mux?{tok}"), None, WsMessage::Text("open mode=teleport".into()), CloseCode::Protocol),
        // Frame of stream 5 on the connection of stream 0.
        (format!("/tlab/ws?stream=0&{tok}"), None, WsMessage::Binary(encode(&Message::data(5, 0, Bytes::new()))), CloseCode::Protocol),
        // Declared payload above the limit, and a message tungstenite cuts by size.
        (format!("/tlab/ws-mux?{tok}"), open, WsMessage::Binary(encode(&Message::data(0, 0, Bytes::from(vec![0; 1001])))), CloseCode::Size),
        (format!("/tlab/ws?{tok}"), None, WsMessage::Binary(Bytes::from(vec![0; 5000])), CloseCode::Size),
    ];
    for (path, prelude, bad, expected) in cases {
        assert_eq!(close_code_after(&fx, &path, prelude, bad).await, expected, "{path}");
    }
    let stream = within("open", survivor.open_stream(StreamOpen::echo(3))).await.unwrap();
    echo_round(stream, 3, 50, 1000).await;
    fx.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_is_rejected_and_others_still_served() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits { max_message_size: 1000, ..Limits::default() }).await;
        // The client refuses to send above its own limit.
        let mut strict = fx.client(TOKEN);
        strict.limits.max_message_size = 1000;
        let conn = within("connect", mode().connect(strict)).await.unwrap();
        let mut stream = within("open", conn.open_stream(StreamOpen::echo(0))).await.unwrap();
        let err = stream.sink.send(Message::data(0, 0, Bytes::from(vec![0; 1001]))).await.unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { size: 1001, limit: 1000 }), "{err}");

        // A client with a larger limit gets its connection closed by the server.
        let mut lax = fx.client(TOKEN);
        lax.limits.max_message_size = 1 << 20;
        let conn = within("connect", mode().connect(lax)).await.unwrap();
        let mut stream = within("open", conn.open_stream(StreamOpen::echo(0))).await.unwrap();
        stream.sink.send(Message::data(0, 0, Bytes::from(vec![0; 5000]))).await.unwrap();
        let result = within("recv after oversize", stream.source.recv()).await;
        // Not retryable: the server blamed this client (close 1009).
        assert!(matches!(result, Err(Error::Protocol(_))), "{}: {result:?}", mode().name());

        let other = fx.connect(mode()).await;
        let stream = within("open", other.open_stream(StreamOpen::echo(1))).await.unwrap();
        echo_round(stream, 1, 10, 1000).await;
        fx.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused() {
    let fx = Fixture::start(WsTransport::multiplexed(), Limits { max_streams: 2, ..Limits::default() }).await;
    let conn = fx.connect(WsTransport::multiplexed()).await;
    let first = within("open", conn.open_stream(StreamOpen::echo(0))).await.unwrap();
    let second = within("open", conn.open_stream(StreamOpen::echo(1))).await.unwrap();
    let mut third = within("open", conn.open_stream(StreamOpen::echo(2))).await.unwrap();
    let _ = third.sink.send(Message::data(2, 0, Bytes::from_static(b"dropped by the server"))).await;
    let refusal = within("refusal", third.source.recv()).await;
    assert!(matches!(refusal, Err(Error::TooManyStreams { stream: 2, limit: 2 })), "{refusal:?}");
    echo_round(first, 0, 20, 10).await;
    echo_round(second, 1, 20, 10).await;

    // The client enforces its own limit before asking.
    let mut config = fx.client(TOKEN);
    config.limits.max_streams = 1;
    let conn = within("connect", WsTransport::multiplexed().connect(config)).await.unwrap();
    let _kept = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
    assert!(matches!(conn.open_stream(StreamOpen::echo(1)).await, Err(Error::TooManyStreams { stream: 1, limit: 1 })));
    fx.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_killed_without_close_frame_is_an_error() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits::default()).await;
        let conn = fx.connect(mode()).await;
        let mut stream = within("open", conn.open_stream(StreamOpen::echo(0))).await.unwrap();
        stream.sink.send(Message::data(0, 0, Bytes::from_static(b"hi"))).await.unwrap();
        assert!(within("echo", stream.source.recv()).await.unwrap().is_some());
        fx.server.shutdown().await;
        let result = within("recv after kill", stream.source.recv()).await;
        assert!(matches!(result, Err(ref e) if e.is_retryable()), "{}: {result:?}", mode().name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilient_session_runs_on_both_modes() {
    for mode in MODES {
        let fx = Fixture::start(mode(), Limits::default()).await;
        let transport: Arc<dyn Transport> = Arc::new(mode());
        let session = within("session", ResilientSession::connect(transport, fx.client(TOKEN), SessionConfig::default())).await.unwrap();
        let stream = within("open", session.open_stream(StreamOpen { stream: 4, mode: StreamMode::Echo, resume: None })).await.unwrap();
        echo_round(stream, 4, 200, 32).await;
        session.close().await;
        fx.server.shutdown().await;
    }
}

#[test]
fn names_and_capabilities() {
    let (ws, mux) = (WsTransport::per_stream(), WsTransport::multiplexed());
    assert_eq!((ws.name(), mux.name()), ("ws", "ws-mux"));
    assert!(!ws.capabilities().multiplexed && mux.capabilities().multiplexed);
    for caps in [ws.capabilities(), mux.capabilities()] {
        assert!(caps.bidirectional && caps.reliable && caps.ordered);
        assert!(!caps.datagrams && !caps.native_migration && !caps.native_reconnect);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_name_the_mode_path() {
    for (mode, path) in [(WsTransport::per_stream(), "/tlab/ws"), (WsTransport::multiplexed(), "/tlab/ws-mux")] {
        let fx = Fixture::start(mode, Limits::default()).await;
        assert_eq!(fx.server.url(), format!("wss://{}{path}", fx.server.local_addr()));
        fx.server.shutdown().await;
    }
}
