//! `wt-stream` on the wire, with wtransport's own client (none of our client code): the stream beyond
//! `--max-streams` is refused with `0x52` and a FIN inside a frame with `0x50` (docs/PROTOCOL.md, "WebTransport"),
//! each within a bounded wait, while the session's other streams keep echoing; a source ends its direction with a
//! FIN and leaves the client's open (no STOP_SENDING) until the client's own FIN.

use std::time::Duration;

use bytes::Bytes;
use tlab_core::{Limits, Message, frame};
use tlab_testkit::TestServer;
use tlab_webtransport::WebTransport;
use wtransport::endpoint::ConnectOptions;
use wtransport::error::{StreamReadError, StreamWriteError};
use wtransport::tls::Sha256Digest;
use wtransport::{RecvStream, SendStream, VarInt};

/// `0x50`: malformed frame or open header.
const MALFORMED: u32 = 0x50;
/// `0x52`: more than `max_streams` streams.
const REFUSED: u32 = 0x52;
/// How long any one step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, step).await.unwrap_or_else(|_| panic!("no outcome within {WAIT:?}: {what}"))
}

/// A stream session with `server`, the token in `authorization`, the certificate pinned by its hash.
async fn session(server: &TestServer) -> (wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>, wtransport::Connection) {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(server.identity.sha256())])
        .build();
    let endpoint = wtransport::Endpoint::client(config).unwrap();
    let options = ConnectOptions::builder(format!("https://{}/tlab/wt", server.server.local_addr()))
        .add_header("authorization", format!("Bearer {}", server.token))
        .build();
    let connection = within("session", endpoint.connect(options)).await.unwrap();
    (endpoint, connection)
}

/// Opens a bidirectional stream and writes the open header of an echo stream for `stream`.
async fn open_echo(session: &wtransport::Connection, stream: u32) -> (SendStream, RecvStream) {
    open(session, &format!("stream={stream}&mode=echo")).await
}

/// Opens a bidirectional stream and writes the open header `query`.
async fn open(session: &wtransport::Connection, query: &str) -> (SendStream, RecvStream) {
    let (mut send, recv) = within("stream credit", async { session.open_bi().await.unwrap().await.unwrap() }).await;
    let mut header = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
    header.extend_from_slice(query.as_bytes());
    send.write_all(&header).await.unwrap();
    (send, recv)
}

/// Sends one data frame and checks it comes back unchanged.
async fn echo(send: &mut SendStream, recv: &mut RecvStream, stream: u32, seq: u64) {
    let msg = Message::data(stream, seq, Bytes::from(format!("stream {stream} seq {seq}")));
    let bytes = frame::encode(&msg);
    send.write_all(&bytes).await.unwrap();
    let mut echoed = vec![0u8; bytes.len()];
    within("echo", recv.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(frame::decode_exact(echoed.into(), 1 << 20).unwrap(), msg);
}

/// Reads until the stream ends and returns how: the reset code, or `None` for a graceful FIN.
async fn reset_code(recv: &mut RecvStream) -> Option<VarInt> {
    let mut buf = [0u8; 4096];
    within("the stream's end", async {
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(StreamReadError::Reset(code)) => return Some(code),
                Err(other) => panic!("the stream failed instead of being reset: {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_beyond_max_streams_is_refused_with_0x52() {
    const MAX_STREAMS: u32 = 3;
    let server = TestServer::start(&WebTransport::streams(), Limits { max_streams: MAX_STREAMS, ..Limits::default() }).await;
    let (_endpoint, session) = session(&server).await;
    let mut open = Vec::new();
    for stream in 0..MAX_STREAMS {
        let (mut send, mut recv) = open_echo(&session, stream).await;
        // The echo proves the server holds the stream open before the next one arrives.
        echo(&mut send, &mut recv, stream, 0).await;
        open.push((send, recv));
    }

    let (mut send, mut recv) = open_echo(&session, MAX_STREAMS).await;
    assert_eq!(reset_code(&mut recv).await, Some(VarInt::from_u32(REFUSED)), "the extra stream's receive side");
    let stopped = within("the extra stream's stop", send.stopped()).await;
    assert!(matches!(stopped, StreamWriteError::Stopped(code) if code == VarInt::from_u32(REFUSED)), "{stopped:?}");

    // The streams within the limit still echo and end gracefully.
    for (stream, (send, recv)) in (0u32..).zip(open.iter_mut()) {
        echo(send, recv, stream, 1).await;
        send.finish().await.unwrap();
        assert_eq!(reset_code(recv).await, None, "stream {stream} ends with FIN");
    }
    session.close(VarInt::from_u32(0), b"done");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_inside_a_frame_is_refused_with_0x50() {
    let server = TestServer::start(&WebTransport::streams(), Limits::default()).await;
    let (_endpoint, session) = session(&server).await;
    let (mut bystander_send, mut bystander_recv) = open_echo(&session, 1).await;
    echo(&mut bystander_send, &mut bystander_recv, 1, 0).await;

    let (mut send, mut recv) = open_echo(&session, 2).await;
    echo(&mut send, &mut recv, 2, 0).await;
    // Half of the next frame (its 24-byte header promises a payload that never comes), then FIN.
    let half = frame::encode(&Message::data(2, 1, Bytes::from_static(b"never complete")));
    send.write_all(&half[..half.len() / 2]).await.unwrap();
    send.finish().await.unwrap();
    assert_eq!(reset_code(&mut recv).await, Some(VarInt::from_u32(MALFORMED)), "the server's answer to the cut frame");

    // The session and its other stream go on.
    echo(&mut bystander_send, &mut bystander_recv, 1, 1).await;
    let (mut send, mut recv) = open_echo(&session, 3).await;
    echo(&mut send, &mut recv, 3, 0).await;
    session.close(VarInt::from_u32(0), b"done");
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_does_not_stop_the_clients_direction() {
    let server = TestServer::start(&WebTransport::streams(), Limits::default()).await;
    let (_endpoint, session) = session(&server).await;
    let (mut send, mut recv) = open(&session, "stream=0&mode=source&count=100&size=8").await;
    let mut received = Vec::new();
    within("the source", async {
        let mut buf = [0u8; 4096];
        while let Some(n) = recv.read(&mut buf).await.expect("a FIN, not a reset") {
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert_eq!(received.len(), 100 * (frame::HEADER_LEN + 8), "every message, then the server's FIN");
    // The server's service is done with the stream; our direction stays open for our own FIN.
    let stopped = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    assert!(stopped.is_err(), "the server stopped our direction: {stopped:?}");
    send.write_all(&frame::encode(&Message::data(0, 0, Bytes::from_static(b"late")))).await.expect("still writable");
    within("our FIN", send.finish()).await.expect("a graceful end of our direction");
    server.server.shutdown().await;
}
