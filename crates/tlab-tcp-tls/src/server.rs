//! The server: TLS, the open header (token first), the status byte, then the stream handed to the service. Every
//! connection is one stream; a refused or broken connection affects no other. Deadlines and the per-IP cap are
//! [`tlab_core::server`]'s; a connection over the cap reads the status byte `0x03`.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tlab_core::server::{Accepted, PerIpConnections, Watched, accept_tcp, within};
use tlab_core::{Error, Server, ServerConfig, StreamOpen};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsStream};

use crate::wire::{PROBE, Status, Tls, read_field};

/// The transport named in the accept loop's log lines.
const MODE: &str = "tcp-tls";

/// A running `tcp-tls` server.
pub(crate) struct TcpTlsServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl TcpTlsServer {
    /// Binds `config.listen` and accepts in the background.
    pub(crate) async fn start(config: ServerConfig) -> Result<Self, Error> {
        let tls = TlsAcceptor::from(Arc::new(config.identity.server_config(&[])?));
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let per_ip = PerIpConnections::new(config.max_connections_per_ip);
        let deadlines = config.deadlines;
        let config = Arc::new(config);
        let accept = tokio::spawn(accept_tcp(listener, deadlines, per_ip, MODE, move |accepted| {
            serve_connection(accepted, tls.clone(), config.clone())
        }));
        Ok(Self { addr, accept })
    }
}

#[async_trait]
impl Server for TcpTlsServer {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self) -> String {
        format!("tls://{}", self.addr)
    }

    async fn shutdown(self: Box<Self>) {
        // The accept task owns the set of connection tasks: aborting it drops (and so aborts) them all.
        self.accept.abort();
        let _ = self.accept.await;
    }
}

/// What an open header asked for.
enum Route {
    Stream(StreamOpen),
    Probe,
    Refuse(Status),
}

async fn serve_connection(accepted: Accepted, acceptor: TlsAcceptor, config: Arc<ServerConfig>) -> Result<(), Error> {
    let Accepted { tcp, permit, clock, .. } = accepted;
    let deadlines = clock.deadlines();
    let mut tls = within(deadlines.handshake, "TLS handshake", acceptor.accept(Watched::new(tcp, clock.clone())))
        .await?
        .map_err(|e| Error::Tls(e.to_string()))?;
    clock.handshake_done();
    let header = async {
        let token = read_field(&mut tls).await?;
        let open = read_field(&mut tls).await?;
        Ok::<_, Error>((token, open))
    };
    let (token, open) = within(deadlines.first_request, "open header", header).await??;
    clock.request_seen();
    let route = if permit.is_none() { Route::Refuse(Status::TooManyConnections) } else { route(token, open, &config.token) };
    let mut tls: Tls = TlsStream::Server(tls);
    match route {
        Route::Refuse(status) => {
            tracing::warn!(?status, "tcp-tls open refused");
            tls.write_all(&[status as u8]).await?;
            tls.shutdown().await?;
        }
        Route::Probe => {
            tls.write_all(&[Status::Accepted as u8]).await?;
            tls.shutdown().await?;
        }
        Route::Stream(open) => {
            tls.write_all(&[Status::Accepted as u8]).await?;
            tls.flush().await?;
            let (stream, _writer) = crate::stream::split(tls, open.stream, config.limits, false);
            config.service.serve(open, stream).await;
        }
    }
    Ok(())
}

/// Decides on an open header: the token is checked first (compared verbatim), then the open query.
fn route(token: Option<String>, open: Option<String>, expected: &str) -> Route {
    if token.as_deref() != Some(expected) {
        return Route::Refuse(Status::Unauthorized);
    }
    match open.as_deref() {
        Some(PROBE) => Route::Probe,
        Some(query) => StreamOpen::from_query(query).map_or(Route::Refuse(Status::Malformed), Route::Stream),
        None => Route::Refuse(Status::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(token: &str, open: &str) -> Route {
        route(Some(token.into()), Some(open.into()), "good")
    }

    #[test]
    fn token_first_then_the_open_query() {
        assert!(matches!(decide("bad", "stream=1"), Route::Refuse(Status::Unauthorized)));
        assert!(matches!(decide("bad", "mode=teleport"), Route::Refuse(Status::Unauthorized)));
        assert!(matches!(route(None, Some("stream=1".into()), "good"), Route::Refuse(Status::Unauthorized)));
        assert!(matches!(decide("good", "mode=teleport"), Route::Refuse(Status::Malformed)));
        assert!(matches!(route(Some("good".into()), None, "good"), Route::Refuse(Status::Malformed)));
        assert!(matches!(decide("good", PROBE), Route::Probe));
        assert!(matches!(decide("good", "stream=4&mode=sink"), Route::Stream(open) if open.stream == 4));
    }
}
