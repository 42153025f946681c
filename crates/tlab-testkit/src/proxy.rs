//! A TCP forwarder on loopback whose connections can all be cut at once, to kill a transport mid-stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every TCP connection it accepts to a target; [`ChaosProxy::kill_all`] resets them all.
pub struct ChaosProxy {
    local_addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local_addr = listener.local_addr()?;
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = connections.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(target).await else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let forward = tokio::spawn(async move {
                    // Linger 0: dropping the sockets sends RST, like a middlebox or a crashed peer would.
                    for socket in [&client, &server] {
                        let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                registry.lock().unwrap().push(forward);
            }
        });
        Ok(Self { local_addr, connections, acceptor })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resets every connection forwarded so far; new connections are still accepted. Returns how many were cut.
    pub fn kill_all(&self) -> usize {
        let mut connections = self.connections.lock().unwrap();
        let live = connections.iter().filter(|h| !h.is_finished()).count();
        for handle in connections.drain(..) {
            handle.abort();
        }
        live
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.kill_all();
    }
}
