//! One logical stream on one TLS connection: frames written by the sink, cut off a buffer by the source. The
//! sending half sits behind a lock shared by both halves and the client's connection, so that the source can answer
//! a protocol violation with a refusal frame and `close` can finish every stream.
//!
//! A **refusal frame** is a control frame (control bit set) whose payload is [`REFUSAL`] followed by a UTF-8 reason.
//! A side that receives bytes it cannot accept (an oversize or undecodable frame, a frame of another stream) sends
//! one, finishes its direction, and reads and discards what still arrives for up to [`LINGER`] so that its close
//! does not reset the connection before the peer has read the refusal. The peer reports it as
//! [`Error::Protocol`]: a refusal no reconnect can cure.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use tlab_core::frame::{HEADER_LEN, decode_next, encode_into};
use tlab_core::{Error, Limits, Message, MessageKind, MessageSink, MessageSource, MessageStream, StreamId};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::wire::{Status, Tls};

/// Spare buffer room asked for before each read.
const READ_CHUNK: usize = 16 << 10;

/// The first payload byte of a refusal frame (the session layer's control operations are 1–4).
pub(crate) const REFUSAL: u8 = 0xFF;

/// How long a refusing side keeps reading (and discarding) before it drops the connection.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// The sending half of one connection; `None` once this side finished (TLS close_notify and TCP FIN sent).
pub(crate) type SendHalf = tokio::sync::Mutex<Option<WriteHalf<Tls>>>;

/// A shared [`SendHalf`].
pub(crate) type Writer = Arc<SendHalf>;

/// Finishes the sending direction of `writer` if it is still open.
pub(crate) async fn finish(writer: &Writer) -> Result<(), Error> {
    match writer.lock().await.take() {
        Some(mut half) => Ok(half.shutdown().await?),
        None => Ok(()),
    }
}

/// Splits `tls` into the halves of stream `stream`. `await_status`: the server's status byte comes first (the
/// client side). Returns the writer too, for the owner's `close`.
pub(crate) fn split(tls: Tls, stream: StreamId, limits: Limits, await_status: bool) -> (MessageStream, Writer) {
    let (reader, writer) = tokio::io::split(tls);
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(Some(writer)));
    let halves = MessageStream {
        sink: Box::new(FrameSink { writer: writer.clone(), stream, limits, buf: BytesMut::new() }),
        source: Box::new(FrameSource {
            reader,
            writer: writer.clone(),
            buf: BytesMut::new(),
            stream,
            max_payload: limits.max_message_size,
            await_status,
            ended: false,
            refused: false,
        }),
    };
    (halves, writer)
}

struct FrameSink {
    writer: Writer,
    stream: StreamId,
    limits: Limits,
    buf: BytesMut,
}

#[async_trait]
impl MessageSink for FrameSink {
    async fn send(&mut self, mut msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        msg.stream = self.stream;
        self.buf.clear();
        encode_into(&msg, &mut self.buf);
        let mut writer = self.writer.lock().await;
        let half = writer.as_mut().ok_or_else(|| Error::Closed(format!("stream {} already finished", self.stream)))?;
        half.write_all(&self.buf).await?;
        Ok(half.flush().await?)
    }

    async fn finish(&mut self) -> Result<(), Error> {
        finish(&self.writer).await
    }
}

/// Why the source cannot go on.
enum Failure {
    /// The peer refused (status byte or refusal frame): nothing to answer.
    Peer(Error),
    /// This side refuses what the peer sent: answered with a refusal frame.
    Ours(Error),
}

struct FrameSource {
    reader: ReadHalf<Tls>,
    /// For the refusal frame.
    writer: Writer,
    buf: BytesMut,
    stream: StreamId,
    max_payload: usize,
    /// The status byte has not been read yet.
    await_status: bool,
    /// The peer finished gracefully.
    ended: bool,
    /// This side has sent its refusal frame.
    refused: bool,
}

impl FrameSource {
    /// What is complete in the buffer: the status byte, then frames. `Ok(None)`: more bytes needed.
    fn take(&mut self) -> Result<Option<Message>, Failure> {
        if self.await_status {
            if self.buf.is_empty() {
                return Ok(None);
            }
            Status::check(self.buf.get_u8()).map_err(Failure::Peer)?;
            self.await_status = false;
        }
        if let Some(reason) = self.peer_refusal() {
            return match reason {
                Some(reason) => Err(Failure::Peer(Error::Protocol(format!("the peer refused the stream: {reason}")))),
                None => Ok(None),
            };
        }
        match decode_next(&mut self.buf, self.max_payload).map_err(Failure::Ours)? {
            Some(msg) if msg.stream != self.stream => Err(Failure::Ours(Error::Protocol(format!(
                "frame of stream {} on the connection of stream {}",
                msg.stream, self.stream
            )))),
            other => Ok(other),
        }
    }

    /// `Some` when the buffer starts with a refusal frame: `Some(None)` while it is incomplete, then its reason.
    fn peer_refusal(&self) -> Option<Option<String>> {
        let header = self.buf.get(..HEADER_LEN + 1)?;
        let len = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let control = header[4] & 0x80 != 0;
        if !control || header[HEADER_LEN] != REFUSAL || len > self.max_payload {
            return None;
        }
        let frame = self.buf.get(..HEADER_LEN + len);
        Some(frame.map(|f| String::from_utf8_lossy(&f[HEADER_LEN + 1..]).into_owned()))
    }

    /// Answers this side's refusal of the peer's bytes: a refusal frame, the end of this direction, then the
    /// lingering read (see the module docs). Errors are ignored: the connection is being given up anyway.
    async fn refuse(&mut self, error: &Error) {
        self.refused = true;
        tracing::warn!(stream = self.stream, %error, "tcp-tls: refusing the stream");
        if let Some(mut half) = self.writer.lock().await.take() {
            let mut payload = vec![REFUSAL];
            payload.extend_from_slice(error.to_string().as_bytes());
            let refusal = Message { stream: self.stream, seq: 0, sent_at: 0, kind: MessageKind::Control, payload: Bytes::from(payload) };
            let mut frame = BytesMut::new();
            encode_into(&refusal, &mut frame);
            let _ = half.write_all(&frame).await;
            let _ = half.shutdown().await;
        }
        let mut sink = vec![0u8; READ_CHUNK];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(self.reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

#[async_trait]
impl MessageSource for FrameSource {
    /// Cancel-safe: bytes are only ever moved into `buf` (by `read_buf`) or out of it (by `take`, synchronously).
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.take() {
                Ok(Some(msg)) => return Ok(Some(msg)),
                Ok(None) => {}
                Err(Failure::Peer(e)) => return Err(e),
                Err(Failure::Ours(e)) => {
                    if !self.refused {
                        self.refuse(&e).await;
                    }
                    return Err(e);
                }
            }
            self.buf.reserve(READ_CHUNK);
            let read = self.reader.read_buf(&mut self.buf).await.map_err(|e| match e.kind() {
                // rustls reports a TCP end without close_notify so: a broken connection, not a graceful end.
                std::io::ErrorKind::UnexpectedEof => Error::Closed("connection ended without TLS close_notify".into()),
                _ => Error::Io(e),
            })?;
            if read == 0 {
                if self.await_status {
                    return Err(Error::Closed("the server closed before answering the open header".into()));
                }
                if !self.buf.is_empty() {
                    return Err(Error::Protocol(format!("connection finished inside a frame ({} bytes left)", self.buf.len())));
                }
                self.ended = true;
            }
        }
    }
}
