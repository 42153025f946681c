//! What both sides share: the ALPN, the application error codes, writing and reading the open header
//! ([`tlab_quic_common::open_header`]) with this mode's error mapping, quinn errors → [`Error`], and the two stream
//! halves that carry [`tlab_core::frame`]s on a QUIC bidirectional stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use bytes::BytesMut;
use quinn::{ConnectionError, ReadError, RecvStream, SendStream, VarInt, WriteError};
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamId, frame};
use tlab_quic_common::open_header::{self, OpenHeaderError};
use tlab_quic_common::{StreamSlot, StreamSlots};

/// ALPN protocol of the raw QUIC mode.
pub(crate) const ALPN: &[u8] = b"tlab-quic/1";
/// Application close code of a graceful close (client `close()`, server shutdown).
pub(crate) const CLOSE_NORMAL: u32 = 0;

/// Application error codes, used in RESET_STREAM / STOP_SENDING (a stream) and CONNECTION_CLOSE (a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Code {
    /// A stream half dropped without a graceful finish (the peer must not take it for one).
    Cancelled = 0x100,
    /// Missing or wrong token (CONNECTION_CLOSE with reason `unauthorized`).
    Unauthorized = 0x101,
    /// A frame declared a payload above the receiver's `max_message_size`.
    TooLarge = 0x102,
    /// A malformed frame or open header.
    Malformed = 0x103,
    /// More streams than `max_streams` open on this connection.
    TooManyStreams = 0x104,
    /// A connection deadline passed (no stream within the first-request deadline, or idle with no stream open): CONNECTION_CLOSE.
    Deadline = 0x105,
}

impl Code {
    fn from_varint(code: VarInt) -> Option<Self> {
        [Self::Cancelled, Self::Unauthorized, Self::TooLarge, Self::Malformed, Self::TooManyStreams, Self::Deadline]
            .into_iter()
            .find(|c| VarInt::from(*c) == code)
    }

    /// The code for a frame the receiver refuses.
    fn for_error(error: &Error) -> Self {
        match error {
            Error::MessageTooLarge { .. } => Self::TooLarge,
            _ => Self::Malformed,
        }
    }
}

impl From<Code> for VarInt {
    fn from(code: Code) -> Self {
        VarInt::from_u32(code as u32)
    }
}

/// Writes a stream's open header ([`open_header::encode`]).
pub(crate) async fn write_header(send: &mut SendStream, text: &str) -> Result<(), Error> {
    let header = open_header::encode(text)?;
    send.write_chunk(header).await.map_err(|e| write_error(e, None))
}

/// Reads the open header [`write_header`] wrote; a reset or lost connection maps as on any stream.
pub(crate) async fn read_header(recv: &mut RecvStream) -> Result<String, Error> {
    open_header::read(recv).await.map_err(|e| match e {
        OpenHeaderError::Read(e) => read_error(e, None),
        other => other.into(),
    })
}

/// The error a failed connection reports; a CONNECTION_CLOSE with [`Code::Unauthorized`] is [`Error::Unauthorized`].
pub(crate) fn connection_error(error: &ConnectionError) -> Error {
    match error {
        ConnectionError::ApplicationClosed(close) if close.error_code == Code::Unauthorized.into() => {
            Error::Unauthorized
        }
        // TLS alerts are transport error codes 0x100–0x1ff (RFC 9001 §4.8): a wrong pin, a missing ALPN.
        ConnectionError::TransportError(e) if (0x100..0x200).contains(&u64::from(e.code)) => Error::Tls(e.to_string()),
        ConnectionError::ConnectionClosed(close) if (0x100..0x200).contains(&u64::from(close.error_code)) => {
            Error::Tls(close.to_string())
        }
        other => Error::Closed(other.to_string()),
    }
}

/// The error a peer's RESET_STREAM or STOP_SENDING with `code` means; `stream` is `None` before it is known.
fn stream_reset_error(code: VarInt, stream: Option<&StreamState>) -> Error {
    match Code::from_varint(code) {
        Some(Code::Unauthorized) => Error::Unauthorized,
        Some(Code::TooLarge) => Error::Protocol("the peer refused a message above its size limit (code 0x102)".into()),
        Some(Code::Malformed) => {
            Error::Protocol("the peer refused a malformed frame or open header (code 0x103)".into())
        }
        Some(Code::TooManyStreams) => Error::TooManyStreams {
            stream: stream.map_or(0, |s| s.stream),
            limit: stream.map_or(0, |s| s.slot.opened_beside()),
        },
        Some(Code::Cancelled | Code::Deadline) | None => {
            Error::Closed(format!("stream reset by the peer (code {:#x})", code.into_inner()))
        }
    }
}

fn read_error(error: ReadError, stream: Option<&StreamState>) -> Error {
    match error {
        ReadError::Reset(code) => stream_reset_error(code, stream),
        ReadError::ConnectionLost(e) => connection_error(&e),
        other => Error::Closed(other.to_string()),
    }
}

fn write_error(error: WriteError, stream: Option<&StreamState>) -> Error {
    match error {
        WriteError::Stopped(code) => stream_reset_error(code, stream),
        WriteError::ConnectionLost(e) => connection_error(&e),
        other => Error::Closed(other.to_string()),
    }
}

/// One stream, shared by both halves: its slot among the connection's open streams (released when both halves are
/// gone) and how the source refused the peer's bytes, if it did.
pub(crate) struct StreamState {
    stream: StreamId,
    slot: StreamSlot,
    /// Set by the source when it refuses the peer's bytes: the code the sink resets with.
    failure: AtomicU32,
}

impl StreamState {
    /// Takes one of `slots`, or refuses the stream when `limits.max_streams` are already open.
    pub(crate) fn acquire(slots: &StreamSlots, limits: &Limits, stream: StreamId) -> Result<Arc<Self>, Error> {
        let slot = slots.acquire(limits, stream)?;
        Ok(Arc::new(Self { stream, slot, failure: AtomicU32::new(0) }))
    }

    fn failure(&self) -> Option<VarInt> {
        match self.failure.load(Ordering::Acquire) {
            0 => None,
            code => Some(VarInt::from_u32(code)),
        }
    }
}

/// Refuses a whole stream: STOP_SENDING and RESET_STREAM with `code`.
pub(crate) fn refuse(send: &mut SendStream, recv: &mut RecvStream, code: Code) {
    let _ = recv.stop(code.into());
    let _ = send.reset(code.into());
}

/// What dropping a sink that was not finished tells the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDrop {
    /// FIN, like quinn's implicit finish: a client dropping its sink has nothing more to send (as with gRPC's
    /// request stream).
    Finish,
    /// RESET_STREAM [`Code::Cancelled`]: a server service that ends without finishing has failed, and the client
    /// must see an error, not a clean end, so that the session layer resumes.
    Reset,
}

/// The two halves of an opened QUIC stream, framing [`Message`]s with [`tlab_core::frame`].
pub(crate) fn message_stream(
    send: SendStream,
    recv: RecvStream,
    limits: Limits,
    state: Arc<StreamState>,
    on_drop: OnDrop,
) -> MessageStream {
    MessageStream {
        sink: Box::new(QuicSink { send, limits, state: state.clone(), finished: false, on_drop }),
        source: Box::new(QuicSource { recv, buf: BytesMut::new(), limits, state, finished: false }),
    }
}

/// Frames onto a QUIC send stream.
struct QuicSink {
    send: SendStream,
    limits: Limits,
    state: Arc<StreamState>,
    finished: bool,
    on_drop: OnDrop,
}

#[async_trait]
impl MessageSink for QuicSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        if let Some(code) = self.state.failure() {
            let _ = self.send.reset(code);
            return Err(Error::Closed("the stream was refused after bad input from the peer".into()));
        }
        // One chunk per frame: quinn queues it without copying and packs queued chunks into full packets.
        self.send.write_chunk(frame::encode(&msg)).await.map_err(|e| write_error(e, Some(&self.state)))
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.send.finish().map_err(|_| Error::Closed("the stream was already reset".into()))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for QuicSink {
    fn drop(&mut self) {
        // quinn finishes a dropped stream implicitly; a reset must be explicit.
        if self.finished {
            return;
        }
        match (self.state.failure(), self.on_drop) {
            (Some(code), _) => drop(self.send.reset(code)),
            (None, OnDrop::Reset) => drop(self.send.reset(Code::Cancelled.into())),
            (None, OnDrop::Finish) => {}
        }
    }
}

/// Frames off a QUIC receive stream.
struct QuicSource {
    recv: RecvStream,
    buf: BytesMut,
    limits: Limits,
    state: Arc<StreamState>,
    finished: bool,
}

impl QuicSource {
    /// Refuses the rest of the peer's direction (and makes the sink reset ours) after bad bytes.
    fn reject(&mut self, error: Error) -> Error {
        let code = Code::for_error(&error);
        tracing::warn!(stream = self.state.stream, quic_stream = %self.recv.id(), error = %error, code = code as u32, "stream refused");
        self.state.failure.store(code as u32, Ordering::Release);
        let _ = self.recv.stop(code.into());
        error
    }
}

#[async_trait]
impl MessageSource for QuicSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match frame::decode_next(&mut self.buf, self.limits.max_message_size) {
                Ok(Some(msg)) => return Ok(Some(msg)),
                Ok(None) if self.finished => return Ok(None),
                Ok(None) => {}
                Err(e) => return Err(self.reject(e)),
            }
            // `read_chunk` is cancel-safe and everything it returned is in `self.buf`: this loop may be dropped.
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => {
                    self.finished = true;
                    return Ok(None);
                }
                Ok(None) => {
                    let error =
                        Error::Protocol(format!("stream finished inside a frame ({} bytes left)", self.buf.len()));
                    return Err(self.reject(error));
                }
                Err(e) => return Err(read_error(e, Some(&self.state))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_errors() {
        for code in [Code::Cancelled, Code::Unauthorized, Code::TooLarge, Code::Malformed, Code::TooManyStreams, Code::Deadline] {
            assert_eq!(Code::from_varint(code.into()), Some(code));
        }
        assert_eq!(Code::from_varint(VarInt::from_u32(7)), None);
        assert!(matches!(stream_reset_error(Code::Unauthorized.into(), None), Error::Unauthorized));
        assert!(matches!(stream_reset_error(Code::TooLarge.into(), None), Error::Protocol(_)));
        assert!(stream_reset_error(Code::Cancelled.into(), None).is_retryable());
        assert!(!stream_reset_error(Code::Malformed.into(), None).is_retryable());
        assert_eq!(Code::for_error(&Error::MessageTooLarge { size: 2, limit: 1 }), Code::TooLarge);
        assert_eq!(Code::for_error(&Error::Protocol("x".into())), Code::Malformed);
    }

    #[test]
    fn refused_stream_reports_the_limit_it_hit() {
        let slots = StreamSlots::default();
        let limits = Limits { max_message_size: 1, max_streams: 2 };
        let first = StreamState::acquire(&slots, &limits, 0).unwrap();
        let second = StreamState::acquire(&slots, &limits, 1).unwrap();
        assert!(matches!(StreamState::acquire(&slots, &limits, 2), Err(Error::TooManyStreams { stream: 2, limit: 2 })));
        assert!(matches!(
            stream_reset_error(Code::TooManyStreams.into(), Some(&second)),
            Error::TooManyStreams { stream: 1, limit: 1 }
        ));
        drop((first, second));
        assert_eq!(slots.open(), 0);
    }
}
