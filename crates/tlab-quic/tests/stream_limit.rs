//! `--max-streams` on the wire, with a bare quinn client (none of our client code): the stream beyond the limit is
//! reset and stopped with `0x104` (docs/PROTOCOL.md, "Raw QUIC"), within a bounded wait, and the streams within the
//! limit keep echoing.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{RecvStream, SendStream, VarInt};
use tlab_core::{Limits, Message, frame};
use tlab_quic::QuicTransport;
use tlab_testkit::TestServer;

/// The server's `--max-streams` in this test.
const MAX_STREAMS: u32 = 3;
/// `0x104`: too many streams.
const TOO_MANY_STREAMS: u32 = 0x104;
/// How long any one step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, step).await.unwrap_or_else(|_| panic!("no outcome within {WAIT:?}: {what}"))
}

/// `u16` big-endian length, then the text.
fn header(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + text.len());
    buf.put_u16(u16::try_from(text.len()).unwrap());
    buf.put_slice(text.as_bytes());
    buf.freeze()
}

/// A quinn connection to `server` (ALPN `tlab-quic/1`, certificate pinned).
async fn connect(server: &TestServer) -> (quinn::Endpoint, quinn::Connection) {
    let pin = tlab_core::tls::CertPin::Sha256(server.identity.sha256());
    let tls = tlab_core::tls::client_config(&pin, &[b"tlab-quic/1"]).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = within("handshake", endpoint.connect_with(config, server.server.local_addr(), "localhost").unwrap())
        .await
        .unwrap();
    (endpoint, conn)
}

/// Opens an echo stream for `stream`: the token header, the open header and one data frame in one write.
async fn open_echo(conn: &quinn::Connection, token: &str, stream: u32, seq: u64) -> (SendStream, RecvStream, Message) {
    let (mut send, recv) = within("stream credit", conn.open_bi()).await.unwrap();
    let msg = Message::data(stream, seq, Bytes::from(format!("stream {stream} seq {seq}")));
    let mut bytes = BytesMut::from(&header(token)[..]);
    bytes.extend_from_slice(&header(&format!("stream={stream}&mode=echo")));
    bytes.extend_from_slice(&frame::encode(&msg));
    send.write_all(&bytes).await.unwrap();
    (send, recv, msg)
}

/// Reads one frame of `msg`'s size and checks it is `msg` echoed.
async fn expect_echo(recv: &mut RecvStream, msg: &Message) {
    let mut echoed = vec![0u8; frame::encode(msg).len()];
    within("echo", recv.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&frame::decode_exact(echoed.into(), 1 << 20).unwrap(), msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_beyond_max_streams_is_reset_and_stopped_with_0x104() {
    let server = TestServer::start(&QuicTransport::new(), Limits { max_streams: MAX_STREAMS, ..Limits::default() }).await;
    let (endpoint, conn) = connect(&server).await;
    let mut open = Vec::new();
    for stream in 0..MAX_STREAMS {
        let (send, mut recv, msg) = open_echo(&conn, &server.token, stream, 0).await;
        // The echo proves the server counted the stream as open before the next one arrives.
        expect_echo(&mut recv, &msg).await;
        open.push((send, recv));
    }

    let (send, mut recv, _) = open_echo(&conn, &server.token, MAX_STREAMS, 0).await;
    let read = within("refusal of the extra stream (reset)", recv.read_to_end(1 << 20)).await;
    assert!(
        matches!(read, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if code == VarInt::from_u32(TOO_MANY_STREAMS)),
        "the extra stream's receive side: {read:?}"
    );
    let stopped = within("refusal of the extra stream (stop)", send.stopped()).await;
    assert!(
        matches!(stopped, Ok(Some(code)) if code == VarInt::from_u32(TOO_MANY_STREAMS)),
        "the extra stream's send side: {stopped:?}"
    );

    // The streams within the limit still echo and end gracefully.
    for (stream, (send, recv)) in (0u32..).zip(open.iter_mut()) {
        let msg = Message::data(stream, 1, Bytes::from_static(b"still open"));
        send.write_all(&frame::encode(&msg)).await.unwrap();
        expect_echo(recv, &msg).await;
        send.finish().unwrap();
        let rest = within("graceful end", recv.read_to_end(1 << 20)).await.unwrap();
        assert!(rest.is_empty(), "stream {stream}: bytes after the last echo");
    }
    conn.close(VarInt::from_u32(0), b"done");
    endpoint.wait_idle().await;
    server.server.shutdown().await;
}
