//! What both sides share: names on the wire, the request-body halves that carry our frames (one implementation for
//! client and server), and h3 errors → [`Error`]. The QUIC transport settings and the stream counter come from
//! `tlab-quic-common`.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use h3::error::{Code, StreamError};
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, StreamId, frame};
use tlab_quic_common::StreamSlot;

/// ALPN protocol of HTTP/3.
pub(crate) const ALPN_H3: &[u8] = b"h3";
/// Path of the request that carries one logical stream (`POST`); the open query follows it.
pub(crate) const STREAM_PATH: &str = "/tlab/h3";
/// Path of the token probe (`GET`, answered 204 or 401) that [`tlab_core::Connection`] sends once on connect.
pub(crate) const AUTH_PATH: &str = "/tlab/h3/auth";
/// Response header of a 429 refusing a stream: the server's `max_streams`.
pub(crate) const MAX_STREAMS_HEADER: &str = "tlab-max-streams";
/// Content type of the response body (and, from well-behaved clients, of the request body).
pub(crate) const CONTENT_TYPE: &str = "application/octet-stream";
/// A QUIC application close code from an h3 [`Code`].
pub(crate) fn close_code(code: Code) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.value()).expect("h3 codes are valid varints")
}

/// The [`Error`] of a failed h3 request-stream operation.
pub(crate) fn stream_error(error: StreamError) -> Error {
    match &error {
        StreamError::RemoteTerminate { code, .. } if *code == Code::H3_MESSAGE_ERROR => {
            Error::Protocol(format!("the peer rejected the stream (bad or oversize frame): {error}"))
        }
        StreamError::StreamError { code, .. } if *code != Code::H3_NO_ERROR => Error::Protocol(error.to_string()),
        StreamError::HeaderTooBig { .. } => Error::Protocol(error.to_string()),
        // Connection lost, timed out or closed, stream reset or cancelled, GOAWAY: a new connection may succeed.
        _ => Error::Closed(error.to_string()),
    }
}

/// The receiving direction of a request body (the server's request, the client's response).
pub(crate) trait RecvBody: Send + 'static {
    /// Appends the next DATA chunk to `out`: `Ready(Ok(true))`, or `Ready(Ok(false))` at the end of the body.
    fn poll_recv_into(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<Result<bool, StreamError>>;
}

/// The sending direction of a request body.
#[async_trait]
pub(crate) trait SendBody: Send + 'static {
    /// Sends one DATA frame.
    async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError>;
    /// Ends the body (QUIC FIN).
    async fn finish(&mut self) -> Result<(), StreamError>;
    /// Resets the direction with `code`.
    fn stop_stream(&mut self, code: Code);
}

/// Implements [`RecvBody`] and [`SendBody`] for the client's and the server's request-stream halves, whose
/// methods have the same names and meaning but live on two unrelated types.
macro_rules! body_halves {
    ($($stream:ident),*) => {$(
        impl RecvBody for h3::$stream::RequestStream<h3_quinn::RecvStream, Bytes> {
            fn poll_recv_into(&mut self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<Result<bool, StreamError>> {
                self.poll_recv_data(cx).map_ok(|data| data.map(|data| out.put(data)).is_some())
            }
        }

        #[async_trait]
        impl SendBody for h3::$stream::RequestStream<h3_quinn::SendStream<Bytes>, Bytes> {
            async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
                h3::$stream::RequestStream::send_data(self, data).await
            }

            async fn finish(&mut self) -> Result<(), StreamError> {
                h3::$stream::RequestStream::finish(self).await
            }

            fn stop_stream(&mut self, code: Code) {
                h3::$stream::RequestStream::stop_stream(self, code)
            }
        }
    )*};
}

body_halves!(client, server);

/// State both halves of one stream share: whether the receiving half rejected the peer's bytes, so that the
/// sending half resets with the matching code.
pub(crate) struct Shared {
    rejected: AtomicBool,
    /// Counted against the server's `max_streams` while either half lives.
    _slot: Option<StreamSlot>,
}

impl Shared {
    pub(crate) fn new(slot: Option<StreamSlot>) -> Arc<Self> {
        Arc::new(Self { rejected: AtomicBool::new(false), _slot: slot })
    }

    /// The code the sending half resets with when it is dropped unfinished.
    fn abort_code(&self) -> Code {
        if self.rejected.load(Ordering::Acquire) { Code::H3_MESSAGE_ERROR } else { Code::H3_REQUEST_CANCELLED }
    }
}

/// Our frames into a body: one DATA frame per message.
pub(crate) struct BodySink<S: SendBody> {
    body: S,
    limits: Limits,
    finished: bool,
    shared: Arc<Shared>,
}

impl<S: SendBody> BodySink<S> {
    pub(crate) fn new(body: S, limits: Limits, shared: Arc<Shared>) -> Self {
        Self { body, limits, finished: false, shared }
    }
}

#[async_trait]
impl<S: SendBody> MessageSink for BodySink<S> {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        if self.finished {
            return Err(Error::Closed("stream already finished".into()));
        }
        self.body.send_data(frame::encode(&msg)).await.map_err(stream_error)
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if !std::mem::replace(&mut self.finished, true) {
            self.body.finish().await.map_err(stream_error)?;
        }
        Ok(())
    }
}

impl<S: SendBody> Drop for BodySink<S> {
    fn drop(&mut self) {
        // Dropped without `finish`: an abort, which the peer must see as an error, not as a graceful end (quinn
        // would otherwise finish the stream when it is dropped).
        if !self.finished {
            self.body.stop_stream(self.shared.abort_code());
        }
    }
}

enum SourceState<R> {
    Open(R),
    Ended,
    Failed(String),
}

/// Our frames out of a body. DATA frames need not align with our frames, so bytes accumulate in `buf` until
/// [`frame::decode_next`] finds a whole one.
pub(crate) struct BodySource<R: RecvBody> {
    state: SourceState<R>,
    buf: BytesMut,
    limits: Limits,
    stream: StreamId,
    shared: Arc<Shared>,
}

impl<R: RecvBody> BodySource<R> {
    pub(crate) fn new(body: R, limits: Limits, stream: StreamId, shared: Arc<Shared>) -> Self {
        Self { state: SourceState::Open(body), buf: BytesMut::new(), limits, stream, shared }
    }

    /// The peer sent something that is not our frame: stop the stream in both directions. The sending half resets
    /// with H3_MESSAGE_ERROR when the service drops it.
    fn reject(&mut self, error: Error) -> Error {
        tracing::warn!(stream = self.stream, error = %error, "HTTP/3 stream rejected: bad frame in the body");
        self.shared.rejected.store(true, Ordering::Release);
        self.fail(error)
    }

    /// Stops reading: dropping the body makes quinn send STOP_SENDING (code 0). (h3-quinn 0.0.10's own
    /// `stop_sending` panics while a read is pending, which h3 leaves behind after returning buffered data.)
    fn fail(&mut self, error: Error) -> Error {
        self.state = SourceState::Failed(error.to_string());
        self.buf = BytesMut::new();
        error
    }
}

#[async_trait]
impl<R: RecvBody> MessageSource for BodySource<R> {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match frame::decode_next(&mut self.buf, self.limits.max_message_size) {
                Ok(Some(msg)) => return Ok(Some(msg)),
                Ok(None) => {}
                Err(e) => return Err(self.reject(e)),
            }
            let body = match &mut self.state {
                SourceState::Open(body) => body,
                SourceState::Ended => return Ok(None),
                SourceState::Failed(reason) => return Err(Error::Closed(reason.clone())),
            };
            let buf = &mut self.buf;
            // Cancel-safe: a chunk is appended to `buf` in the same poll that takes it from h3.
            match poll_fn(|cx| body.poll_recv_into(cx, buf)).await {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => {
                    self.state = SourceState::Ended;
                    return Ok(None);
                }
                Ok(false) => {
                    let error = Error::Protocol(format!("body ended inside a frame ({} bytes left)", self.buf.len()));
                    return Err(self.reject(error));
                }
                Err(e) => return Err(self.fail(stream_error(e))),
            }
        }
    }
}
