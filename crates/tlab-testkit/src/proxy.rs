//! A loopback forwarder for TCP and UDP on the same port whose connections can all be cut at once, to kill a
//! transport mid-stream: TCP connections are reset; UDP flows (QUIC) are blackholed for [`UDP_OUTAGE`], long
//! enough for the session layer to declare the peer dead, then forward again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long [`ChaosProxy::kill_all`] silences UDP flows.
pub const UDP_OUTAGE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct UdpState {
    flows: HashMap<SocketAddr, Arc<UdpSocket>>,
    silent_until: Option<Instant>,
}

impl UdpState {
    fn silenced(&self) -> bool {
        self.silent_until.is_some_and(|t| Instant::now() < t)
    }
}

/// Forwards every TCP connection and UDP flow it receives to a target; [`ChaosProxy::kill_all`] cuts them all.
pub struct ChaosProxy {
    local_addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    udp: Arc<Mutex<UdpState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 (TCP and UDP, same port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let (listener, front) = bind_pair().await?;
        let local_addr = listener.local_addr()?;
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = connections.clone();
        let tcp = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(target).await else { continue };
                for socket in [&client, &server] {
                    let _ = socket.set_nodelay(true);
                    // Linger 0: dropping the socket sends RST, like a middlebox or a crashed peer would.
                    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
                }
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                registry.lock().unwrap().push(forward);
            }
        });
        let udp: Arc<Mutex<UdpState>> = Arc::default();
        let udp_task = tokio::spawn(forward_udp(Arc::new(front), target, udp.clone()));
        Ok(Self { local_addr, connections, udp, tasks: vec![tcp, udp_task] })
    }

    /// Where clients connect (TCP and UDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resets every TCP connection forwarded so far and silences every UDP flow for [`UDP_OUTAGE`]; new TCP
    /// connections are still accepted. Returns how many connections and flows were cut.
    pub fn kill_all(&self) -> usize {
        let mut connections = self.connections.lock().unwrap();
        let live = connections.iter().filter(|h| !h.is_finished()).count();
        for handle in connections.drain(..) {
            handle.abort();
        }
        let mut udp = self.udp.lock().unwrap();
        udp.silent_until = Some(Instant::now() + UDP_OUTAGE);
        live + udp.flows.len()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.kill_all();
    }
}

/// A TCP listener and a UDP socket on the same free loopback port.
async fn bind_pair() -> std::io::Result<(TcpListener, UdpSocket)> {
    let mut last_error = None;
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        match UdpSocket::bind(listener.local_addr()?).await {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

async fn forward_udp(front: Arc<UdpSocket>, target: SocketAddr, state: Arc<Mutex<UdpState>>) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, client)) = front.recv_from(&mut buf).await {
        let existing = state.lock().unwrap().flows.get(&client).cloned();
        let upstream = match existing {
            Some(upstream) => upstream,
            None => {
                let Ok(upstream) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                if upstream.connect(target).await.is_err() {
                    continue;
                }
                let upstream = Arc::new(upstream);
                state.lock().unwrap().flows.insert(client, upstream.clone());
                tokio::spawn(backward_udp(upstream.clone(), front.clone(), client, state.clone()));
                upstream
            }
        };
        if !state.lock().unwrap().silenced() {
            let _ = upstream.send(&buf[..n]).await;
        }
    }
}

async fn backward_udp(upstream: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr, state: Arc<Mutex<UdpState>>) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = upstream.recv(&mut buf).await {
        if !state.lock().unwrap().silenced() {
            let _ = front.send_to(&buf[..n], client).await;
        }
    }
}
