//! The `grpc-web` mode: source streams through our client, and the wire as a browser speaks it (HTTP/1.1,
//! `application/grpc-web+proto`, a CORS preflight), written by hand here rather than through our client.

use std::sync::Arc;

use prost::Message as _;
use tlab_core::{Error, Limits, MessageStream, StreamMode, StreamOpen, Transport};
use tlab_grpc::GrpcWebTransport;
use tlab_grpc::proto::{Frame, SourceRequest};
use tlab_testkit::{TestServer, bounded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn source(stream: u32, count: u64, size: usize) -> StreamOpen {
    StreamOpen { stream, mode: StreamMode::Source { count, size, interval_us: 0 }, resume: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_source_streams_deliver_exactly_once() {
    let transport = GrpcWebTransport::new();
    let server = TestServer::start(&transport, Limits::default()).await;
    let conn = transport.connect(server.client_config()).await.expect("connect");
    let mut tasks = Vec::new();
    for id in 0..8 {
        let MessageStream { mut source, .. } = conn.open_stream(source(id, 1000, 64)).await.expect("open");
        tasks.push(tokio::spawn(async move {
            for expected in 0..1000 {
                let msg = source.recv().await.expect("recv").expect("message");
                assert_eq!((msg.stream, msg.seq, msg.payload.len()), (id, expected, 64));
            }
            assert!(source.recv().await.expect("graceful end").is_none());
        }));
    }
    bounded(async {
        for task in tasks {
            task.await.expect("stream verified");
        }
    })
    .await;
    conn.close().await;
}

#[tokio::test]
async fn wrong_token_is_unauthorized_on_the_first_stream() {
    let transport = GrpcWebTransport::new();
    let server = TestServer::start(&transport, Limits::default()).await;
    let mut config = server.client_config();
    config.token = "wrong".into();
    let conn = transport.connect(config).await.expect("connect (the token rides in each call)");
    let outcome = conn.open_stream(source(0, 1, 1)).await.map(|_| ());
    assert!(matches!(outcome, Err(Error::Unauthorized)), "{outcome:?}");
}

/// Sends `request` over a fresh HTTP/1.1 TLS connection and returns the whole response (the server closes it).
async fn http1(server: &TestServer, request: &[u8]) -> Vec<u8> {
    tokio::time::timeout(std::time::Duration::from_secs(20), http1_exchange(server, request)).await.expect("HTTP/1.1 exchange timed out")
}

async fn http1_exchange(server: &TestServer, request: &[u8]) -> Vec<u8> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(
        tlab_core::tls::client_config(&tlab_core::tls::CertPin::Sha256(server.identity.sha256()), &[b"http/1.1"])
            .expect("tls"),
    ));
    let tcp = tokio::net::TcpStream::connect(server.server.local_addr()).await.expect("tcp");
    let mut tls = tls.connect(tlab_core::tls::server_name(), tcp).await.expect("tls handshake");
    tls.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    response
}

/// Undoes HTTP/1.1 chunked transfer coding.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(std::str::from_utf8(&body[..end]).expect("chunk size").trim(), 16).expect("hex");
        if len == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + len]);
        body = &body[end + 2 + len + 2..];
    }
    out
}

#[tokio::test]
async fn a_browser_shaped_call_over_http1_with_cors() {
    let transport = GrpcWebTransport::new();
    let server = TestServer::start(&transport, Limits::default()).await;
    let origin = "https://127.0.0.1:1";

    let preflight = format!(
        "OPTIONS /tlab.v1.Transport/Source HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\naccess-control-request-method: POST\r\n\
         access-control-request-headers: authorization,content-type,x-grpc-web\r\nconnection: close\r\n\r\n"
    );
    let answer = String::from_utf8_lossy(&http1(&server, preflight.as_bytes()).await).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("access-control-allow-origin: {origin}")), "{answer}");
    assert!(answer.contains("authorization"), "preflight must allow the authorization header: {answer}");

    let request = SourceRequest { stream: 4, count: 5, size: 3, interval_us: 0 }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(&request);
    let head = format!(
        "POST /tlab.v1.Transport/Source HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        server.token,
        body.len()
    );
    let response = http1(&server, &[head.as_bytes(), &body].concat()).await;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/grpc-web+proto"), "{head}");
    assert!(head.contains(&format!("access-control-allow-origin: {origin}")), "{head}");
    let mut body = &dechunk(&response[split..])[..];
    let mut seqs = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let message = &body[5..5 + len];
        if body[0] & 0x80 == 0 {
            let frame = Frame::decode(message).expect("a Frame");
            assert_eq!((frame.stream, frame.payload.len()), (4, 3));
            seqs.push(frame.seq);
        } else {
            trailers = String::from_utf8_lossy(message).to_lowercase();
        }
        body = &body[5 + len..];
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert!(trailers.contains("grpc-status:0"), "trailer frame: {trailers:?}");
}
