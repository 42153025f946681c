//! Connection deadlines and the per-IP cap of every server, checked on the wire with raw clients (TLS or QUIC only,
//! none of our transport clients): silent connections are closed within the configured deadline and the server's
//! descriptors come back to their baseline; the connection beyond `max_connections_per_ip` gets its mode's
//! documented refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlab_core::server::Deadlines;
use tlab_core::tls::{self, CertPin, Identity};
use tlab_core::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The deadline every phase gets in the silent-connection tests.
const DEADLINE: Duration = Duration::from_secs(1);
/// Generous slack on top of a deadline before a test gives up (no performance claim is made).
const SLACK: Duration = Duration::from_secs(5);
/// Silent connections opened per mode.
const SILENT: usize = 8;

const TCP_MODES: [&str; 6] = ["ws", "ws-mux", "sse-h1", "sse-h2", "grpc", "tcp-tls"];
const QUIC_MODES: [&str; 4] = ["quic", "h3", "wt-stream", "wt-datagram"];

/// The tests count this process's descriptors: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Running {
    server: Box<dyn Server>,
    pin: CertPin,
}

async fn serve(name: &str, deadlines: Deadlines, max_connections_per_ip: Option<u32>) -> Running {
    tlab_testkit::init_tracing();
    let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap());
    let pin = CertPin::Sha256(identity.sha256());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity,
        token: "t0ken".into(),
        limits: tlab_core::Limits::default(),
        service: Arc::new(tlab_service::EchoService::default()),
        congestion: tlab_core::config::CongestionControl::default(),
        deadlines,
        max_connections_per_ip,
        allow_origin: Default::default(),
    };
    let server = tlab_transports::by_name(name).unwrap().serve(config).await.unwrap();
    Running { server, pin }
}

/// The ALPN a real client of `mode` offers.
fn alpn(mode: &str) -> Vec<&'static [u8]> {
    match mode {
        "ws" | "ws-mux" | "sse-h1" => vec![b"http/1.1"],
        "sse-h2" | "grpc" => vec![b"h2"],
        "quic" => vec![b"tlab-quic/1"],
        "h3" | "wt-stream" | "wt-datagram" => vec![b"h3"],
        _ => vec![],
    }
}

/// How many of this process's descriptors are TCP sockets whose local port is `port` (the server's listener and
/// its accepted connections): socket inodes from /proc/net/tcp matched against the links in /proc/self/fd.
fn server_descriptors(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && fields[9] != "0" {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| inodes.contains(&link.to_string_lossy().into_owned()))
        .count()
}

/// A TCP connection that completes TLS with `mode`'s ALPN and then sends nothing.
async fn silent_tls(addr: SocketAddr, pin: &CertPin, mode: &str) -> TlsStream<TcpStream> {
    let config = tls::client_config(pin, &alpn(mode)).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config)).connect(tls::server_name(), tcp).await.unwrap()
}

/// Reads (and discards, e.g. an HTTP/2 SETTINGS frame) until the server ends the connection.
async fn closed_by_server(mut tls: TlsStream<TcpStream>, within: Duration, mode: &str) {
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(within, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{mode}: the server kept a silent connection open for {within:?}");
}

/// Polls (bounded) until the server has no more descriptors open than `baseline`.
async fn descriptors_back_to(port: u16, baseline: usize, mode: &str) {
    let mut now = server_descriptors(port);
    for _ in 0..50 {
        if now <= baseline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = server_descriptors(port);
    }
    panic!("{mode}: the server has {now} descriptors open, {baseline} before the silent connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_are_closed_and_their_descriptors_freed() {
    let _serial = serial();
    for mode in TCP_MODES {
        let running = serve(mode, Deadlines::all(DEADLINE), None).await;
        let port = running.server.local_addr().port();
        let baseline = server_descriptors(port);
        assert_eq!(baseline, 1, "{mode}: the listener");
        let mut silent = Vec::new();
        for _ in 0..SILENT {
            silent.push(silent_tls(running.server.local_addr(), &running.pin, mode).await);
        }
        assert_eq!(server_descriptors(port), baseline + SILENT, "{mode}: one server descriptor per connection");
        for tls in silent {
            closed_by_server(tls, DEADLINE * 2 + SLACK, mode).await;
        }
        descriptors_back_to(port, baseline, mode).await;
        running.server.shutdown().await;
    }
}

/// A quinn client endpoint offering `mode`'s ALPN, sending nothing after the handshake.
fn quic_client(pin: &CertPin, mode: &str) -> (quinn::Endpoint, quinn::ClientConfig) {
    let crypto = tls::client_config(pin, &alpn(mode)).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap()));
    (quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_quic_connections_are_closed() {
    let _serial = serial();
    for mode in QUIC_MODES {
        let running = serve(mode, Deadlines::all(DEADLINE), None).await;
        let (endpoint, config) = quic_client(&running.pin, mode);
        let mut silent = Vec::new();
        for _ in 0..SILENT {
            let connecting = endpoint.connect_with(config.clone(), running.server.local_addr(), "localhost").unwrap();
            silent.push(connecting.await.unwrap());
        }
        for conn in silent {
            let closed = tokio::time::timeout(DEADLINE * 2 + SLACK, conn.closed()).await;
            assert!(closed.is_ok(), "{mode}: the server kept a silent QUIC connection open");
            // quinn's own idle timeout (10 s) would say TimedOut; the server's deadline closes it actively.
            assert!(!matches!(closed, Ok(quinn::ConnectionError::TimedOut)), "{mode}: {closed:?}");
        }
        endpoint.close(0u32.into(), b"done");
        running.server.shutdown().await;
    }
}

/// What the server answers on the connection beyond the per-IP cap (one raw request of the mode's first kind).
async fn refusal_over_tcp(mode: &str, tls: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let request: Vec<u8> = match mode {
        "ws" | "ws-mux" => b"GET /tlab/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            .to_vec(),
        "sse-h1" => b"GET /tlab/sse/auth HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t0ken\r\n\r\n".to_vec(),
        "tcp-tls" => b"\x00\x05t0ken\x00\x05probe".to_vec(),
        other => unreachable!("{other}"),
    };
    tls.write_all(&request).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(SLACK, tls.read(&mut answer)).await.map_or(0, |r| r.unwrap_or(0));
    answer.truncate(n);
    answer
}

fn is_refusal(mode: &str, answer: &[u8]) -> bool {
    if mode == "tcp-tls" { answer == [0x03] } else { answer.starts_with(b"HTTP/1.1 429") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_beyond_the_per_ip_cap_is_refused_as_documented() {
    let _serial = serial();
    const CAP: u32 = 2;
    for mode in ["ws", "ws-mux", "sse-h1", "tcp-tls"] {
        let running = serve(mode, Deadlines::default(), Some(CAP)).await;
        let addr = running.server.local_addr();
        let mut held = Vec::new();
        for _ in 0..CAP {
            held.push(silent_tls(addr, &running.pin, mode).await);
        }
        let mut over = silent_tls(addr, &running.pin, mode).await;
        let answer = refusal_over_tcp(mode, &mut over).await;
        assert!(is_refusal(mode, &answer), "{mode}: {:?}", String::from_utf8_lossy(&answer));
        // Closing a held connection makes room again.
        drop((held.pop(), over));
        let mut room = false;
        for _ in 0..50 {
            let mut again = silent_tls(addr, &running.pin, mode).await;
            let answer = refusal_over_tcp(mode, &mut again).await;
            if !answer.is_empty() && !is_refusal(mode, &answer) {
                room = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(room, "{mode}: still refused after a connection closed");
        running.server.shutdown().await;
    }
    for mode in ["quic", "h3"] {
        let running = serve(mode, Deadlines::default(), Some(CAP)).await;
        let (endpoint, config) = quic_client(&running.pin, mode);
        let addr = running.server.local_addr();
        let mut held = Vec::new();
        for _ in 0..CAP {
            held.push(endpoint.connect_with(config.clone(), addr, "localhost").unwrap().await.unwrap());
        }
        let refused = endpoint.connect_with(config.clone(), addr, "localhost").unwrap().await;
        match refused {
            Err(quinn::ConnectionError::ConnectionClosed(close)) => {
                assert_eq!(close.error_code, quinn::TransportErrorCode::CONNECTION_REFUSED, "{mode}")
            }
            other => panic!("{mode}: expected CONNECTION_REFUSED, got {other:?}"),
        }
        endpoint.close(0u32.into(), b"done");
        running.server.shutdown().await;
    }
}
