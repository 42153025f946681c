//! The client: one QUIC connection with an h3 client on it; every logical stream is one `POST` request, which
//! carries the token (a wrong one fails the first stream with `Unauthorized`; no request of its own checks it).

use std::future::poll_fn;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use h3::error::Code;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{ClientConfig, Connection, Error, Limits, MessageStream, Milestones, StreamId, StreamOpen};
use tokio::task::JoinHandle;

use tlab_quic_common::PeerStreams;

use crate::wire::{
    ALPN_H3, BodySink, BodySource, CONTENT_TYPE, MAX_STREAMS_HEADER, STREAM_PATH, Shared, close_code,
    stream_error,
};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
type RequestStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Connects QUIC + HTTP/3 within the connect timeout (the token goes with every request).
pub(crate) async fn connect(config: ClientConfig) -> Result<H3Connection, Error> {
    let (addr, _path) = config.authority_and_path()?;
    let client_config = endpoint_config(&config)?;
    let unspecified: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let mut endpoint = quinn::Endpoint::client(unspecified)?;
    endpoint.set_default_client_config(client_config);
    let auth = HeaderValue::try_from(format!("Bearer {}", config.token))
        .map_err(|_| Error::Config("the token is not valid in an HTTP header".into()))?;

    let setup = async {
        let connect_error = |reason: String| Error::Connect { address: addr.to_string(), reason };
        let server_name = tlab_core::tls::server_name().to_str().into_owned();
        let conn = endpoint
            .connect(addr, &server_name)
            .map_err(|e| connect_error(e.to_string()))?
            .await
            .map_err(|e| handshake_error(e, addr))?;
        let milestones = MilestoneLog::default();
        milestones.mark(Step::QuicHandshake);
        let (mut driver, send_request) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| connect_error(format!("HTTP/3 setup: {e}")))?;
        // The h3 driver handles the control streams (SETTINGS, GOAWAY) for as long as the connection lives.
        let driver = tokio::spawn(async move {
            let closed = poll_fn(|cx| driver.poll_close(cx)).await;
            tracing::debug!(reason = %closed, "HTTP/3 connection closed");
        });
        let connection = H3Connection {
            endpoint: endpoint.clone(),
            conn,
            send_request: Mutex::new(Some(send_request)),
            driver,
            authority: addr.to_string(),
            auth,
            limits: config.limits,
            milestones,
        };
        Ok(connection)
    };
    tokio::time::timeout(config.connect_timeout, setup)
        .await
        .map_err(|_| Error::Timeout(format!("HTTP/3 connect to {addr}")))?
}

/// The quinn client configuration: our pin, ALPN `h3`, `config`'s congestion controller.
pub(crate) fn endpoint_config(config: &ClientConfig) -> Result<quinn::ClientConfig, Error> {
    // HTTP/3 servers open no bidirectional streams (RFC 9114 §6.1).
    tlab_quic_common::client_config(&config.pin, ALPN_H3, config.congestion, PeerStreams::http3(0))
}

/// A failed QUIC handshake: a TLS failure (e.g. the pin did not match) is [`Error::Tls`].
fn handshake_error(error: quinn::ConnectionError, addr: SocketAddr) -> Error {
    match &error {
        // QUIC carries TLS alerts as the transport error codes 0x100..0x200.
        quinn::ConnectionError::TransportError(e) if (0x100..0x200).contains(&u64::from(e.code)) => {
            Error::Tls(e.to_string())
        }
        _ => Error::Connect { address: addr.to_string(), reason: error.to_string() },
    }
}

/// One QUIC connection; its streams are HTTP/3 requests.
pub(crate) struct H3Connection {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
    /// `None` after [`Connection::close`].
    send_request: Mutex<Option<SendRequest>>,
    driver: JoinHandle<()>,
    authority: String,
    auth: HeaderValue,
    limits: Limits,
    milestones: MilestoneLog,
}

impl H3Connection {
    /// Sends a `POST` (headers only) and waits for the response headers.
    async fn request(&self, path_and_query: &str) -> Result<(RequestStream, Response<()>), Error> {
        let mut send_request =
            self.send_request.lock().unwrap().clone().ok_or_else(|| Error::Closed("connection closed".into()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{path_and_query}", self.authority))
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(())
            .map_err(|e| Error::Config(format!("request {path_and_query}: {e}")))?;
        let mut stream = send_request.send_request(req).await.map_err(stream_error)?;
        let response = stream.recv_response().await.map_err(stream_error)?;
        self.milestones.mark(Step::FirstResponse);
        Ok((stream, response))
    }
}

/// The client's view of a refusal.
fn status_error(response: &Response<()>, stream: StreamId) -> Error {
    let status = response.status();
    match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => {
            match response.headers().get(MAX_STREAMS_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()) {
                Some(limit) => Error::TooManyStreams { stream, limit },
                None => Error::Protocol(format!("HTTP/3 status {status} without {MAX_STREAMS_HEADER}")),
            }
        }
        _ => Error::Protocol(format!("HTTP/3 status {status}")),
    }
}

#[async_trait]
impl Connection for H3Connection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let (stream, response) = self.request(&format!("{STREAM_PATH}?{}", open.to_query())).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(&response, open.stream));
        }
        let (send, recv) = stream.split();
        let shared = Shared::new(None);
        Ok(MessageStream {
            sink: Box::new(BodySink::new(send, self.limits, shared.clone())),
            source: Box::new(BodySource::new(recv, self.limits, open.stream, shared)),
        })
    }

    async fn close(&self) {
        self.send_request.lock().unwrap().take();
        self.conn.close(close_code(Code::H3_NO_ERROR), b"client closed");
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }

    async fn rebind(&self, local: SocketAddr) -> Result<(), Error> {
        // quinn sends from the new socket at once; the server validates the new path (keep-alives guarantee
        // traffic even on a receive-only connection) and answers there.
        self.endpoint.rebind(std::net::UdpSocket::bind(local)?)?;
        Ok(())
    }
}

impl Drop for H3Connection {
    fn drop(&mut self) {
        // The driver task holds the connection open; an unclosed connection would otherwise live until idle.
        self.conn.close(close_code(Code::H3_NO_ERROR), b"client dropped");
        self.driver.abort();
    }
}
