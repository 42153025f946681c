//! Regression test of issue 10 (fix 8), spoken with a raw HTTP/2 client (the h2 crate, one DATA frame per gRPC
//! message; none of our client code): thousands of small request messages that the server does not read yet must
//! not make h2 close the whole connection (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames"); the other RPCs on it go
//! on, as docs/PROTOCOL.md promises.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use tlab_core::Limits;
use tlab_core::tls::{CertPin, client_config, server_name};
use tlab_grpc::GrpcTransport;
use tlab_grpc::proto::Frame;
use tlab_testkit::TestServer;
use tokio_rustls::TlsConnector;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// One gRPC length-prefixed message holding `frame`.
fn grpc_message(frame: &Frame) -> Bytes {
    let body = frame.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(0);
    out.put_u32(body.len() as u32);
    out.put_slice(&body);
    out.freeze()
}

fn rpc(server: &TestServer, open: &str) -> http::Request<()> {
    http::Request::post("https://localhost/tlab.v1.Transport/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", server.token))
        .header("tlab-open", open)
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_frames_waiting_to_be_read_do_not_end_the_connection() {
    let server = TestServer::start(&GrpcTransport::new(), Limits::default()).await;
    let tls = client_config(&CertPin::Sha256(server.identity.sha256()), &[b"h2"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.server.local_addr()).await.unwrap();
    let tls = TlsConnector::from(Arc::new(tls)).connect(server_name(), tcp).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);

    // A source never reads its request stream: everything sent on these RPCs waits inside the server's h2.
    let mut sources = Vec::new();
    for stream in 0..3u32 {
        let open = format!("stream={stream}&mode=source&count=1000000&size=8&interval_us=10000");
        let (response, mut body) = client.send_request(rpc(&server, &open), false).unwrap();
        for seq in 0..6000u64 {
            let frame = Frame { stream, seq, sent_at_ns: 1, payload: Bytes::from_static(b"tiny"), control: false };
            body.send_data(grpc_message(&frame), false).unwrap();
        }
        sources.push((response, body));
    }
    // 18,000 small DATA frames (about 30 bytes each) are unread now; h2's old 512 KiB budget took about 2,400.
    // The connection still serves: the sources stream, and a new echo RPC is answered in full.
    for (response, _body) in &mut sources {
        let response = within("source response", response).await.expect("the source RPC is alive");
        assert_eq!(response.status(), 200);
        let mut data = response.into_body();
        let chunk = within("source data", data.data()).await.expect("source data").expect("no stream error");
        assert!(!chunk.is_empty());
    }
    let (response, mut body) = client.send_request(rpc(&server, "stream=9&mode=echo"), false).unwrap();
    let frame = Frame { stream: 9, seq: 0, sent_at_ns: 1, payload: Bytes::from_static(b"hello"), control: false };
    body.send_data(grpc_message(&frame), true).unwrap();
    let mut response = within("echo response", response).await.expect("a new RPC is served").into_body();
    let mut echoed = BytesMut::new();
    while let Some(chunk) = within("echo data", response.data()).await {
        echoed.extend_from_slice(&chunk.expect("no stream error"));
    }
    let trailers = within("trailers", response.trailers()).await.unwrap().expect("grpc trailers");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    assert_eq!(&echoed[..], &grpc_message(&frame)[..], "the echo, unchanged");
    assert!(!connection.is_finished(), "the connection is still up");
    server.server.shutdown().await;
}
