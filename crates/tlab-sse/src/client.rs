//! The client: reqwest for the event stream and the POST uplink, eventsource-stream to parse the events. The
//! token rides in every request, so a wrong one (or a wrong certificate) fails the first stream; `connect` sends
//! nothing. reqwest does not show its TCP and TLS steps: the milestones have the first response headers only.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _, stream};
use http::{HeaderValue, StatusCode, header};
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{
    ClientConfig, Connection, Error, Limits, MessageKind, MessageSink, MessageSource, MessageStream, Milestones,
    StreamId, StreamOpen,
};
use tlab_core::{Message, frame, tls};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Mode;
use crate::wire::{self, EVENTS, EventFramer, MESSAGES, PREFIX};

/// A stream's `send` waits while this many encoded bytes are queued behind the POST in flight.
const UPLINK_HIGH_WATER: usize = 1 << 20;
/// How long an event stream that ended without `event: end` waits for the answer to the POST in flight, which says
/// whether the server closed the stream because of what was posted (a `413` or `400`: no reconnect can cure that).
const POST_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Prepares the HTTP client; the first stream's request opens the first connection.
pub(crate) async fn connect(mode: Mode, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
    tls::crypto_provider();
    let (addr, path) = config.authority_and_path()?;
    let path = path.trim_end_matches('/');
    let base = format!("https://{addr}{}", if path.is_empty() { PREFIX } else { path });
    let auth = HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
    let alpn: &[u8] = match mode {
        Mode::Http1 => b"http/1.1",
        Mode::Http2 => b"h2",
    };
    let tls = tls::client_config(&config.pin, &[alpn])?;
    let first = build_client(mode, &tls, config.connect_timeout)?;
    Ok(Box::new(SseConnection {
        mode,
        base,
        conn: rand::random(),
        auth,
        limits: config.limits,
        tls,
        connect_timeout: config.connect_timeout,
        first,
        first_taken: AtomicBool::new(false),
        closed: watch::Sender::new(false),
        milestones: MilestoneLog::default(),
    }))
}

fn build_client(mode: Mode, tls: &rustls::ClientConfig, connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(connect_timeout)
        // hyper's HTTP/1.1 server closes a connection idle for 30 s (header read timeout): stop reusing one before.
        .pool_idle_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .no_proxy();
    let builder = match mode {
        Mode::Http1 => builder.http1_only(),
        Mode::Http2 => builder.http2_prior_knowledge(),
    };
    builder.build().map_err(|e| Error::Config(format!("HTTP client: {}", error_chain(&e))))
}

struct SseConnection {
    mode: Mode,
    /// `https://host:port/tlab/sse`.
    base: String,
    /// This connection's id (`conn=`), which scopes its stream ids on the server.
    conn: u64,
    auth: HeaderValue,
    limits: Limits,
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    /// The client of `connect`: every stream's in `sse-h2`, the first stream's in `sse-h1` (reusing its connection).
    first: reqwest::Client,
    first_taken: AtomicBool,
    closed: watch::Sender<bool>,
    milestones: MilestoneLog,
}

impl SseConnection {
    /// The HTTP client of a new stream: shared in `sse-h2`, its own (own connections) in `sse-h1`.
    fn stream_client(&self) -> Result<reqwest::Client, Error> {
        match self.mode {
            Mode::Http2 => Ok(self.first.clone()),
            Mode::Http1 if !self.first_taken.swap(true, Ordering::Relaxed) => Ok(self.first.clone()),
            Mode::Http1 => build_client(self.mode, &self.tls, self.connect_timeout),
        }
    }
}

#[async_trait]
impl Connection for SseConnection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        if *self.closed.borrow() {
            return Err(Error::Closed("connection closed".into()));
        }
        let client = self.stream_client()?;
        let url = format!("{}{EVENTS}?{}&conn={:x}", self.base, open.to_query(), self.conn);
        let response = client
            .get(&url)
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| request_error(&url, e))?;
        self.milestones.mark(Step::FirstResponse);
        let response = expect_status(response, StatusCode::OK, open.stream, &self.limits).await?;
        if response.version() != self.mode.version() {
            return Err(Error::Protocol(format!(
                "expected {:?}, the server answered {:?}",
                self.mode.version(),
                response.version()
            )));
        }
        let mut framer = EventFramer::default();
        let events = response
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(chunk) => stream::iter(framer.push(chunk)).map(Ok).left_stream(),
                Err(e) => stream::once(std::future::ready(Err(e))).right_stream(),
            })
            .flatten()
            .eventsource();
        let uplink = Arc::new(Uplink::default());
        let post = PostLoop {
            uplink: uplink.clone(),
            client,
            url: format!("{}{MESSAGES}?conn={:x}&stream={}", self.base, self.conn, open.stream),
            auth: self.auth.clone(),
            stream: open.stream,
            limits: self.limits,
        };
        Ok(MessageStream {
            sink: Box::new(PostSink {
                uplink: uplink.clone(),
                task: Some(tokio::spawn(post.run(self.closed.subscribe()))),
                limits: self.limits,
            }),
            source: Box::new(EventSource {
                uplink,
                events: Box::pin(events),
                closed: self.closed.subscribe(),
                ended: false,
                max_payload: self.limits.max_message_size,
            }),
        })
    }

    async fn close(&self) {
        self.closed.send_replace(true);
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }
}

/// Resolves once the connection is closed (never if it is dropped without `close`: its streams live on).
async fn connection_closed(closed: &mut watch::Receiver<bool>) {
    if closed.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The response when it has the expected status, else the error the status means.
async fn expect_status(
    response: reqwest::Response,
    expected: StatusCode,
    stream: StreamId,
    limits: &Limits,
) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status == expected {
        return Ok(response);
    }
    let server_limit = response.headers().get(wire::MAX_STREAMS_HEADER).and_then(|v| v.to_str().ok()?.parse().ok());
    let reason = response.text().await.unwrap_or_default();
    Err(match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => {
            Error::TooManyStreams { stream, limit: server_limit.unwrap_or(limits.max_streams) }
        }
        StatusCode::NOT_FOUND => Error::Closed(format!("stream {stream} is gone: {reason}")),
        _ => Error::Protocol(format!("HTTP {status}: {reason}")),
    })
}

/// `e` and its causes. `io::Error::source` skips the error it wraps, so step into those explicitly (that is where
/// a TLS failure hides).
fn causes<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&e| match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        Some(inner) => Some(inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

fn error_chain(e: &(dyn StdError + 'static)) -> String {
    causes(e).map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

/// A failed request as the abstraction's error: TLS (pin mismatch), connect, or a connection that broke.
fn request_error(url: &str, e: reqwest::Error) -> Error {
    match causes(&e).find_map(|e| e.downcast_ref::<rustls::Error>()) {
        Some(tls_error) => Error::Tls(tls_error.to_string()),
        None if e.is_connect() => Error::Connect { address: url.to_string(), reason: error_chain(&e) },
        None => Error::Closed(error_chain(&e)),
    }
}

/// Receives the server's events.
struct EventSource {
    /// The stream's uplink: its refusal explains an event stream the server ended.
    uplink: Arc<Uplink>,
    events: Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>,
    closed: watch::Receiver<bool>,
    ended: bool,
    max_payload: usize,
}

#[async_trait]
impl MessageSource for EventSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        if self.ended {
            return Ok(None);
        }
        // Both futures are cancel-safe: the event stream keeps its state between polls.
        let next = tokio::select! {
            biased;
            next = self.events.next() => next,
            () = connection_closed(&mut self.closed) => return Err(Error::Closed("connection closed".into())),
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(EventStreamError::Transport(e))) => {
                return Err(Error::Closed(format!("event stream broke: {}", error_chain(&e))));
            }
            Some(Err(e)) => return Err(Error::Protocol(format!("bad event stream: {e}"))),
            None => return Err(self.uplink.refusal().await.unwrap_or_else(|| {
                Error::Closed("event stream ended without `event: end`".into())
            })),
        };
        let expected_kind = match event.event.as_str() {
            "message" => MessageKind::Data,
            "control" => MessageKind::Control,
            "end" => {
                self.ended = true;
                return Ok(None);
            }
            other => return Err(Error::Protocol(format!("unknown event type `{other}`"))),
        };
        let msg = wire::decode_event_data(&event.data, self.max_payload)?;
        if msg.kind != expected_kind {
            return Err(Error::Protocol(format!("`{}` event carries a {:?} frame", event.event, msg.kind)));
        }
        Ok(Some(msg))
    }
}

/// Frames waiting for the next POST of one stream.
#[derive(Default)]
struct Uplink {
    state: Mutex<UplinkState>,
    /// Wakes the POST loop: something was queued, finished, or the sink dropped.
    wake: Notify,
    /// Wakes a `send` waiting for the queue to drain.
    space: Notify,
    /// Wakes those waiting for the POST in flight to be answered.
    answered: Notify,
}

impl Uplink {
    /// The server's refusal of what this stream posted (a non-retryable error), once the POST in flight, if any,
    /// is answered (waiting at most [`POST_ANSWER_WAIT`]).
    async fn refusal(&self) -> Option<Error> {
        let deadline = tokio::time::Instant::now() + POST_ANSWER_WAIT;
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            {
                let state = self.state.lock().unwrap();
                if !state.posting || state.refused.is_some() {
                    return state.refused.clone().map(Error::Protocol);
                }
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                return None;
            }
        }
    }
}

#[derive(Default)]
struct UplinkState {
    queued: BytesMut,
    fin: bool,
    sink_dropped: bool,
    /// Why the POST loop stopped; later sends fail with it.
    failed: Option<String>,
    /// A POST is on its way or waiting for its answer.
    posting: bool,
    /// Why the server refused a POST, when no new connection could help (`413` too large, `400` malformed).
    refused: Option<String>,
}

/// Sends by queueing encoded frames for the stream's POST loop.
struct PostSink {
    uplink: Arc<Uplink>,
    task: Option<JoinHandle<Result<(), Error>>>,
    limits: Limits,
}

#[async_trait]
impl MessageSink for PostSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        loop {
            {
                let mut state = self.uplink.state.lock().unwrap();
                if let Some(reason) = &state.failed {
                    return Err(Error::Closed(format!("uplink failed: {reason}")));
                }
                if state.fin {
                    // The session layer still acks and pings after finishing; the server stops reading at `fin`,
                    // so such control messages have no reader. Data after `finish` is a caller error.
                    return match msg.kind {
                        MessageKind::Control => Ok(()),
                        MessageKind::Data => Err(Error::Closed("stream already finished".into())),
                    };
                }
                if state.queued.len() < UPLINK_HIGH_WATER {
                    frame::encode_into(&msg, &mut state.queued);
                    drop(state);
                    self.uplink.wake.notify_one();
                    return Ok(());
                }
            }
            self.uplink.space.notified().await;
        }
    }

    async fn finish(&mut self) -> Result<(), Error> {
        let Some(task) = self.task.take() else { return Ok(()) };
        self.uplink.state.lock().unwrap().fin = true;
        self.uplink.wake.notify_one();
        task.await.map_err(|e| Error::Transport(format!("uplink task: {e}")))?
    }
}

impl Drop for PostSink {
    fn drop(&mut self) {
        self.uplink.state.lock().unwrap().sink_dropped = true;
        self.uplink.wake.notify_one();
    }
}

/// One stream's uplink: one POST in flight at a time, carrying everything queued meanwhile.
struct PostLoop {
    uplink: Arc<Uplink>,
    client: reqwest::Client,
    url: String,
    auth: HeaderValue,
    stream: StreamId,
    limits: Limits,
}

impl PostLoop {
    async fn run(self, mut closed: watch::Receiver<bool>) -> Result<(), Error> {
        let result = self.post_until_done(&mut closed).await;
        if let Err(e) = &result {
            let mut state = self.uplink.state.lock().unwrap();
            state.failed = Some(e.to_string());
            if !e.is_retryable() {
                state.refused = Some(e.to_string());
            }
            drop(state);
            self.uplink.space.notify_one();
        }
        self.uplink.state.lock().unwrap().posting = false;
        self.uplink.answered.notify_waiters();
        result
    }

    async fn post_until_done(&self, closed_rx: &mut watch::Receiver<bool>) -> Result<(), Error> {
        let closed = || Error::Closed("connection closed".into());
        loop {
            let next = {
                let mut state = self.uplink.state.lock().unwrap();
                state.posting = !state.queued.is_empty() || state.fin;
                if state.posting {
                    Some((state.queued.split().freeze(), state.fin))
                } else if state.sink_dropped {
                    return Ok(());
                } else {
                    None
                }
            };
            let Some((body, fin)) = next else {
                tokio::select! {
                    () = self.uplink.wake.notified() => continue,
                    () = connection_closed(closed_rx) => return Err(closed()),
                }
            };
            self.uplink.space.notify_one();
            tokio::select! {
                result = self.post(body, fin) => result?,
                () = connection_closed(closed_rx) => return Err(closed()),
            }
            self.uplink.state.lock().unwrap().posting = false;
            self.uplink.answered.notify_waiters();
            if fin {
                return Ok(());
            }
        }
    }

    async fn post(&self, body: Bytes, fin: bool) -> Result<(), Error> {
        let url = if fin { format!("{}&fin=1", self.url) } else { self.url.clone() };
        let response = self
            .client
            .post(&url)
            .header(header::AUTHORIZATION, self.auth.clone())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| request_error(&url, e))?;
        expect_status(response, StatusCode::NO_CONTENT, self.stream, &self.limits).await.map(drop)
    }
}
