//! The client: one TLS connection per logical stream, pinned by [`tlab_core::tls`]. `connect` dials nothing: each
//! stream's open header carries the token, so a wrong address, certificate or token fails the first stream (a
//! probe connection would cost a TCP and a TLS handshake of its own).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tlab_core::tls::{client_config, handshake_error, server_name};
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{ClientConfig, Connection, Error, MessageStream, Milestones, StreamOpen};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tlab_core::server::Watched;
use tokio_rustls::{TlsConnector, TlsStream};

use crate::stream::{SendHalf, Writer, finish};
use crate::wire::{Tls, open_header};

/// A `tcp-tls` client: dials one connection per stream.
pub(crate) struct TcpTlsConnection {
    config: ClientConfig,
    addr: SocketAddr,
    /// Shared by every connection, and with it the TLS session cache.
    tls: TlsConnector,
    /// The sending halves of the streams opened so far (for `close` and the client-side stream limit).
    writers: Mutex<Vec<Weak<SendHalf>>>,
    /// The steps of the first connection dialled (its status byte is read with the frames, not marked).
    milestones: MilestoneLog,
}

impl TcpTlsConnection {
    pub(crate) async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let (addr, _path) = config.authority_and_path()?;
        let tls = TlsConnector::from(Arc::new(client_config(&config.pin, &[])?));
        Ok(Self { config, addr, tls, writers: Mutex::default(), milestones: MilestoneLog::default() })
    }

    /// TCP, TLS and the open header for `open` (the header goes out at once; frames may follow it unanswered).
    async fn dial(&self, open: &str) -> Result<Tls, Error> {
        let header = open_header(&self.config.token, open)?;
        let work = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| Error::Connect { address: self.config.url.clone(), reason: e.to_string() })?;
            self.milestones.mark(Step::TcpConnected);
            tcp.set_nodelay(true)?;
            let mut tls =
                self.tls.connect(server_name(), Watched::unwatched(tcp)).await.map_err(|e| handshake_error(&self.config.url, e))?;
            self.milestones.mark(Step::TlsDone);
            tls.write_all(&header).await?;
            tls.flush().await?;
            Ok(TlsStream::Client(tls))
        };
        tokio::time::timeout(self.config.connect_timeout, work)
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {}", self.config.url)))?
    }

    fn live_writers(&self) -> Vec<Writer> {
        let mut writers = self.writers.lock().unwrap();
        writers.retain(|w| w.strong_count() > 0);
        writers.iter().filter_map(Weak::upgrade).collect()
    }
}

#[async_trait]
impl Connection for TcpTlsConnection {
    /// Does not wait for the status byte: the stream's first `recv` reads it (a refusal arrives there as an error).
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        self.config.limits.check_streams(open.stream, self.live_writers().len())?;
        let tls = self.dial(&open.to_query()).await?;
        let (stream, writer) = crate::stream::split(tls, open.stream, self.config.limits, true);
        self.writers.lock().unwrap().push(Arc::downgrade(&writer));
        Ok(stream)
    }

    /// Finishes every open stream's sending direction; the server then finishes its own.
    async fn close(&self) {
        for writer in self.live_writers() {
            let _ = finish(&writer).await;
        }
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }
}
