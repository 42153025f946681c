//! Regression tests of issue 10 that speak the WebSocket wire protocol directly (tokio-tungstenite over our TLS, no
//! tlab client): a source stream ends with `fin` and a Close 1000 whether or not the client finished first, a source
//! opened with `session=` ends by itself after `count` messages, and an oversize message gets its Close 1009 to the
//! client instead of a reset.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tlab_core::frame::{HEADER_LEN, decode_exact, encode};
use tlab_core::tls::{CertPin, client_config, server_name};
use tlab_core::{ControlOp, Limits, Message, MessageKind};
use tlab_testkit::TestServer;
use tlab_ws::WsTransport;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type RawWs = WebSocketStream<TlsStream<tokio::net::TcpStream>>;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A WebSocket to `path_and_query` (token in the query, as a browser sends it), certificate pinned by hash.
async fn raw_ws(server: &TestServer, path_and_query: &str) -> RawWs {
    let addr = server.server.local_addr();
    let tls = client_config(&CertPin::Sha256(server.identity.sha256()), &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(tls)).connect(server_name(), tcp).await.unwrap();
    let request = format!("wss://{addr}{path_and_query}").into_client_request().unwrap();
    within("upgrade", tokio_tungstenite::client_async(request, tls)).await.unwrap().0
}

/// What a source stream delivered: data seqs, text commands, and the close code (None: no Close frame).
struct Received {
    seqs: Vec<u64>,
    texts: Vec<String>,
    close: Option<CloseCode>,
}

/// Reads until the server's Close frame or the end of the connection.
async fn read_to_close(ws: &mut RawWs) -> Received {
    let mut received = Received { seqs: Vec::new(), texts: Vec::new(), close: None };
    while let Some(item) = ws.next().await {
        match item {
            Ok(WsMessage::Binary(bytes)) => received.seqs.push(decode_exact(bytes, 1 << 20).unwrap().seq),
            Ok(WsMessage::Text(text)) => received.texts.push(text.to_string()),
            Ok(WsMessage::Close(frame)) => {
                received.close = frame.map(|f| f.code);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("the connection failed instead of closing: {e} (after {} messages)", received.seqs.len()),
        }
    }
    received
}

fn source_query(server: &TestServer, count: u64) -> String {
    format!("/tlab/ws?stream=0&mode=source&count={count}&size=16&token={}", server.token)
}

#[tokio::test]
async fn a_source_ends_with_fin_and_close_1000_when_the_client_never_finished() {
    let server = TestServer::start(&WsTransport::per_stream(), Limits::default()).await;
    let mut ws = raw_ws(&server, &source_query(&server, 1000)).await;
    let received = within("source", read_to_close(&mut ws)).await;
    assert_eq!(received.seqs, (0..1000).collect::<Vec<_>>());
    assert_eq!(received.texts, ["fin 0"]);
    assert_eq!(received.close, Some(CloseCode::Normal), "a Close 1000 after the fin (a browser's wasClean)");
    // The closing handshake completes: our Close answer is read, then the server closes the connection.
    let _ = ws.close(None).await;
    assert!(within("end", ws.next()).await.is_none_or(|item| item.is_err()));
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_client_fin_before_the_source_is_done_does_not_cut_it_short() {
    let server = TestServer::start(&WsTransport::per_stream(), Limits::default()).await;
    for round in 0..5 {
        let mut ws = raw_ws(&server, &source_query(&server, 1000)).await;
        ws.send(WsMessage::Text("fin 0".into())).await.unwrap();
        let received = within("source", read_to_close(&mut ws)).await;
        assert_eq!(received.seqs.len(), 1000, "round {round}: every message of the source");
        assert_eq!(received.texts, ["fin 0"], "round {round}");
        assert_eq!(received.close, Some(CloseCode::Normal), "round {round}");
    }
    server.server.shutdown().await;
}

#[tokio::test]
async fn an_oversize_message_gets_close_1009_not_a_reset() {
    let limits = Limits::default();
    let server = TestServer::start(&WsTransport::per_stream(), limits).await;
    let too_big = Message::data(0, 0, Bytes::from(vec![1u8; limits.max_message_size + 1]));
    for path in [format!("/tlab/ws?token={}", server.token), format!("/tlab/ws-mux?token={}", server.token)] {
        let mut ws = raw_ws(&server, &path).await;
        if path.contains("mux") {
            ws.send(WsMessage::Text("open stream=0&mode=echo".into())).await.unwrap();
        }
        let frame = encode(&too_big);
        assert_eq!(frame.len(), HEADER_LEN + limits.max_message_size + 1);
        // The server may close while the message is still being written; what it sent must arrive all the same.
        let _ = ws.send(WsMessage::Binary(frame)).await;
        let close = within("close", async {
            loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| f.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("{path}: {e} instead of a Close frame"),
                    None => panic!("{path}: the connection ended without a Close frame"),
                }
            }
        })
        .await;
        assert_eq!(close, Some(CloseCode::Size), "{path}");
    }
    server.server.shutdown().await;
}

#[tokio::test]
async fn echo_over_the_raw_protocol_still_closes_cleanly() {
    let server = TestServer::start(&WsTransport::per_stream(), Limits::default()).await;
    let mut ws = raw_ws(&server, &format!("/tlab/ws?stream=0&mode=echo&token={}", server.token)).await;
    for seq in 0..10 {
        ws.send(WsMessage::Binary(encode(&Message::data(0, seq, Bytes::from_static(b"hello"))))).await.unwrap();
    }
    ws.send(WsMessage::Text("fin 0".into())).await.unwrap();
    let received = within("echo", read_to_close(&mut ws)).await;
    assert_eq!(received.seqs, (0..10).collect::<Vec<_>>());
    assert_eq!(received.texts, ["fin 0"]);
    assert_eq!(received.close, Some(CloseCode::Normal));
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_session_source_ends_by_itself_after_count_messages() {
    let server = TestServer::start(&WsTransport::per_stream(), Limits::default()).await;
    let query = format!("/tlab/ws?stream=0&mode=source&count=100&size=8&session=ab12&next=0&token={}", server.token);
    let mut ws = raw_ws(&server, &query).await;
    let mut data = Vec::new();
    let mut controls = Vec::new();
    // Nothing is sent: no Ack, no Ping, no fin. The server's direction must still end.
    let fin = within("the source's end", async {
        loop {
            match ws.next().await.expect("open").expect("no error") {
                WsMessage::Binary(bytes) => {
                    let msg = decode_exact(bytes, 1 << 20).unwrap();
                    match msg.kind {
                        MessageKind::Data => data.push(msg.seq),
                        MessageKind::Control => controls.push((msg.control_op(), msg.seq)),
                    }
                }
                WsMessage::Text(text) => return text.to_string(),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(controls.first(), Some(&(Some(ControlOp::Resume), 0)), "Resume comes first");
    assert_eq!(data, (0..100).collect::<Vec<_>>());
    assert_eq!(fin, "fin 0");
    // Our finish closes the stream on the server too (it forgets the session): Close 1000.
    ws.send(WsMessage::Text("fin 0".into())).await.unwrap();
    let rest = within("close", read_to_close(&mut ws)).await;
    assert!(rest.seqs.is_empty() && rest.texts.is_empty());
    assert_eq!(rest.close, Some(CloseCode::Normal));
    server.server.shutdown().await;
}
