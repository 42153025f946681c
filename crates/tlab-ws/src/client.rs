//! The client: TCP, TLS pinned by [`tlab_core::tls`], the upgrade with `Authorization: Bearer`, then one connection
//! per stream ([`PerStreamConnection`]: `connect` dials nothing, each stream's upgrade carries the token and its
//! open query) or one shared connection ([`MuxConnection`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tlab_core::tls::{client_config, handshake_error, server_name};
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{ClientConfig, Connection, Error, MessageStream, Milestones, StreamOpen};
use tlab_core::server::Watched;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::link::Link;
use crate::mux::{self, Mux, Side};
use crate::wire::{ALPN, Control, PATH_MUX, PATH_PER_STREAM, Ws, ws_config};

/// Opens WebSocket connections to one server (the TLS configuration, and so its session cache, is shared).
struct Dialer {
    config: ClientConfig,
    addr: SocketAddr,
    /// The URL's path without our endpoint suffix, so that either mode finds its endpoint from either URL.
    base: String,
    tls: TlsConnector,
    /// The steps of the first connection dialled.
    milestones: MilestoneLog,
}

impl Dialer {
    fn new(config: ClientConfig) -> Result<Self, Error> {
        let (addr, path) = config.authority_and_path()?;
        let path = path.split('?').next().unwrap_or_default();
        let base = path.strip_suffix(PATH_MUX).or_else(|| path.strip_suffix(PATH_PER_STREAM)).unwrap_or(path);
        let base = base.trim_end_matches('/').to_string();
        let tls = TlsConnector::from(Arc::new(client_config(&config.pin, &[ALPN])?));
        Ok(Self { config, addr, base, tls, milestones: MilestoneLog::default() })
    }

    /// A WebSocket connection to `target` (path and query below the base path).
    async fn open(&self, target: &str) -> Result<Ws, Error> {
        let work = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| Error::Connect { address: self.config.url.clone(), reason: e.to_string() })?;
            self.milestones.mark(Step::TcpConnected);
            tcp.set_nodelay(true)?;
            let tls = self.tls.connect(server_name(), Watched::unwatched(tcp)).await.map_err(|e| handshake_error(&self.config.url, e))?;
            self.milestones.mark(Step::TlsDone);
            let mut request =
                format!("wss://{}{}{target}", self.addr, self.base).into_client_request().map_err(|e| Error::Config(e.to_string()))?;
            let bearer = HeaderValue::from_str(&format!("Bearer {}", self.config.token))
                .map_err(|_| Error::Config("the token is not a valid HTTP header value".into()))?;
            request.headers_mut().insert(header::AUTHORIZATION, bearer);
            let ws_config = ws_config(&self.config.limits);
            let (ws, _) = client_async_with_config(request, TlsStream::Client(tls), Some(ws_config)).await.map_err(|e| self.refused(e))?;
            self.milestones.mark(Step::FirstResponse);
            Ok(ws)
        };
        tokio::time::timeout(self.config.connect_timeout, work)
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {}", self.config.url)))?
    }

    fn refused(&self, e: WsError) -> Error {
        let reason = match e {
            WsError::Http(response) if response.status() == StatusCode::UNAUTHORIZED => return Error::Unauthorized,
            WsError::Http(response) => format!("upgrade answered with HTTP {}", response.status()),
            other => other.to_string(),
        };
        Error::Connect { address: self.config.url.clone(), reason }
    }
}

/// Mode `ws`: every stream dials its own connection.
pub(crate) struct PerStreamConnection {
    dialer: Dialer,
    /// The streams opened so far (for `close` and the client-side stream limit).
    links: Mutex<Vec<Weak<Link>>>,
}

impl PerStreamConnection {
    /// Dials nothing: a wrong URL, certificate or token fails the first stream (a probe would cost a connection).
    pub(crate) async fn connect(config: ClientConfig) -> Result<Self, Error> {
        Ok(Self { dialer: Dialer::new(config)?, links: Mutex::default() })
    }

    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap();
        links.retain(|l| l.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }
}

#[async_trait]
impl Connection for PerStreamConnection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let limits = self.dialer.config.limits;
        limits.check_streams(open.stream, self.live_links().len())?;
        let ws = self.dialer.open(&format!("{PATH_PER_STREAM}?{}", open.to_query())).await?;
        let (stream, link) = crate::link::stream(ws, open.stream, limits);
        self.links.lock().unwrap().push(Arc::downgrade(&link));
        Ok(stream)
    }

    async fn close(&self) {
        let links = self.live_links();
        futures::future::join_all(links.iter().map(|l| l.writer.close(CloseCode::Normal, "client closed"))).await;
    }

    fn milestones(&self) -> Milestones {
        self.dialer.milestones.get()
    }
}

/// Mode `ws-mux`: one connection, read by a background task that stops when this and every stream are dropped.
pub(crate) struct MuxConnection {
    mux: Arc<Mux>,
    milestones: Milestones,
}

impl MuxConnection {
    pub(crate) async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let dialer = Dialer::new(config)?;
        let ws = dialer.open(PATH_MUX).await?;
        let limits = dialer.config.limits;
        let (mux, reader, stop) = Mux::new(ws, limits);
        tokio::spawn(mux::read_loop(Arc::downgrade(&mux), reader, stop, Side::Client, limits.max_message_size));
        Ok(Self { mux, milestones: dialer.milestones.get() })
    }
}

#[async_trait]
impl Connection for MuxConnection {
    /// Does not wait for an answer: a refusal (`refused`) arrives as `Err(TooManyStreams)` from the stream's `recv`.
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let stream = self.mux.open(open.stream)?;
        self.mux.writer.send_control(&Control::Open(open)).await?;
        Ok(stream)
    }

    async fn close(&self) {
        self.mux.writer.close(CloseCode::Normal, "client closed").await;
    }

    fn milestones(&self) -> Milestones {
        self.milestones
    }
}
