//! HTTP/3-specific behaviour beyond the conformance suite: status codes of refused requests (seen by a raw h3
//! client), the token in the query, stream limits, bad frames inside a valid request, pinning, a vanished server.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tlab_core::tls::CertPin;
use tlab_core::{Error, Limits, Message, MessageStream, StreamOpen, Transport, frame};
use tlab_h3::H3Transport;
use tlab_testkit::TestServer;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut).await.expect("test timed out")
}

type RawSender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A plain h3 client (any certificate) on its own QUIC connection, to send requests our client never sends.
async fn raw_client(server: &TestServer) -> (RawSender, quinn::Endpoint) {
    let tls = tlab_core::tls::client_config(&CertPin::AnyCertificate, &[b"h3"]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(server.server.local_addr(), "localhost").unwrap().await.unwrap();
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn)).await.unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    (sender, endpoint)
}

/// Sends a body-less request and returns the status and the whole response body.
async fn raw_request(sender: &mut RawSender, method: &str, target: &str, auth: Option<&str>) -> (u16, Bytes) {
    let mut req = http::Request::builder().method(method).uri(format!("https://localhost{target}"));
    if let Some(token) = auth {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut stream = sender.send_request(req.body(()).unwrap()).await.unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (response.status().as_u16(), body.freeze())
}

#[tokio::test]
async fn refused_requests_get_their_status_and_the_token_may_be_in_the_query() {
    let server = TestServer::start(&H3Transport::new(), Limits::default()).await;
    let token = server.token.clone();
    bounded(async {
        let (mut sender, _endpoint) = raw_client(&server).await;
        assert_eq!(raw_request(&mut sender, "POST", "/tlab/h3?stream=0", None).await.0, 401);
        assert_eq!(raw_request(&mut sender, "POST", "/tlab/h3?stream=0", Some("wrong")).await.0, 401);
        assert_eq!(raw_request(&mut sender, "GET", "/tlab/h3/auth", Some("wrong")).await.0, 401);
        assert_eq!(raw_request(&mut sender, "GET", "/tlab/h3/auth", Some(&token)).await.0, 204);
        assert_eq!(raw_request(&mut sender, "POST", "/elsewhere", Some(&token)).await.0, 404);
        assert_eq!(raw_request(&mut sender, "GET", "/tlab/h3?stream=0", Some(&token)).await.0, 405);
        assert_eq!(raw_request(&mut sender, "POST", "/tlab/h3?mode=teleport", Some(&token)).await.0, 400);
        // A source stream authorized by the query alone: its response body is three whole frames.
        let target = format!("/tlab/h3?stream=4&mode=source&count=3&size=5&token={token}");
        let (status, body) = raw_request(&mut sender, "POST", &target, None).await;
        assert_eq!(status, 200);
        let mut buf = BytesMut::from(&body[..]);
        for seq in 0..3 {
            let msg = frame::decode_next(&mut buf, 100).unwrap().expect("whole frame");
            assert_eq!((msg.stream, msg.seq, msg.payload.len()), (4, seq, 5));
        }
        assert!(buf.is_empty(), "{} bytes after the frames", buf.len());
    })
    .await;
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let transport = H3Transport::new();
    let server = TestServer::start(&transport, Limits { max_streams: 2, ..Limits::default() }).await;
    bounded(async {
        let conn = transport.connect(server.client_config()).await.unwrap();
        let mut streams = Vec::new();
        for id in 0..2 {
            streams.push(conn.open_stream(StreamOpen::echo(id)).await.unwrap());
        }
        let refused = conn.open_stream(StreamOpen::echo(2)).await.err();
        assert!(matches!(refused, Some(Error::TooManyStreams { stream: 2, limit: 2 })), "{refused:?}");
        for (id, MessageStream { sink, source }) in streams.iter_mut().enumerate() {
            sink.send(Message::data(id as u32, 0, Bytes::from_static(b"still served"))).await.unwrap();
            assert_eq!(source.recv().await.unwrap().unwrap().payload, &b"still served"[..]);
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_frame_resets_only_its_own_request() {
    let transport = H3Transport::new();
    let server = TestServer::start(&transport, Limits { max_message_size: 1000, ..Limits::default() }).await;
    bounded(async {
        let conn = transport.connect(server.client_config()).await.unwrap();
        let mut good = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        // An unknown control operation and a payload above the server's limit: each is a bad frame.
        let unknown_op = Message { payload: Bytes::from_static(&[99]), ..Message::control(1, tlab_core::ControlOp::Ping, 0) };
        for (id, bad) in [(1, unknown_op), (2, Message::data(2, 0, Bytes::from(vec![0u8; 2000])))] {
            let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(id)).await.unwrap();
            sink.send(bad).await.unwrap();
            let outcome = source.recv().await;
            assert!(matches!(outcome, Err(Error::Protocol(_))), "stream {id}: {outcome:?}");
        }
        for seq in 0..20 {
            good.sink.send(Message::data(0, seq, Bytes::from_static(b"fine"))).await.unwrap();
            assert_eq!(good.source.recv().await.unwrap().unwrap().seq, seq);
        }
        good.sink.finish().await.unwrap();
        assert!(good.source.recv().await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn wrong_pin_fails_in_connect_and_wrong_token_on_the_first_stream() {
    let transport = H3Transport::new();
    let server = TestServer::start(&transport, Limits::default()).await;
    bounded(async {
        let mut wrong_pin = server.client_config();
        wrong_pin.pin = CertPin::Sha256([0; 32]);
        let outcome = transport.connect(wrong_pin).await.err();
        assert!(matches!(outcome, Some(Error::Tls(_))), "{outcome:?}");
        let mut wrong_token = server.client_config();
        wrong_token.token = "nope".into();
        let conn = transport.connect(wrong_token).await.expect("the token costs no round trip in connect");
        let outcome = conn.open_stream(StreamOpen::echo(0)).await.err();
        assert!(matches!(outcome, Some(Error::Unauthorized)), "{outcome:?}");
    })
    .await;
}

#[tokio::test]
async fn a_vanished_server_is_a_retryable_error_not_an_end() {
    let transport = H3Transport::new();
    let server = TestServer::start(&transport, Limits::default()).await;
    bounded(async {
        let conn = transport.connect(server.client_config()).await.unwrap();
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        sink.send(Message::data(0, 0, Bytes::from_static(b"x"))).await.unwrap();
        assert!(source.recv().await.unwrap().is_some());
        server.server.shutdown().await;
        let outcome = source.recv().await;
        assert!(matches!(&outcome, Err(e) if e.is_retryable()), "{outcome:?}");
    })
    .await;
}
