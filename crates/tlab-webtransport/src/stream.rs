//! Mode `wt-stream`: one logical stream is one WebTransport bidirectional stream carrying [`tlab_core::frame`]s both
//! ways after the open header. Both ends use these halves; the data path reads and writes quinn chunks directly
//! (no copy into intermediate buffers beyond the frame encoding, no task in between).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::BytesMut;
use tlab_core::frame;
use tlab_core::server::LINGER;
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamId};
use tlab_quic_common::StreamSlot;
use wtransport::{RecvStream, SendStream};

use crate::wire::{CODE_ABORTED, CODE_PROTOCOL, SessionGuard, code, read_error, write_error};

/// Which end holds a stream.
pub(crate) enum Side {
    /// The client: a stream counts as open (holds its `slot`) until its receiving half is gone; a sending half
    /// dropped unfinished ends its direction gracefully (a receive-only stream may simply drop it).
    Client {
        /// The stream's place among the connection's open streams.
        slot: StreamSlot,
    },
    /// The server: the service finishes what it ends normally, so a sending half dropped unfinished means the
    /// stream failed, and the client sees a reset rather than a graceful end. A receiving half dropped before the
    /// client's FIN (a source never reads) is drained instead of stopped: a FIN ends a direction, and a browser's
    /// writer fails on STOP_SENDING.
    Server,
}

/// The halves of stream `stream` over one bidirectional stream; each keeps the session open while it lives.
pub(crate) fn message_stream(
    send: SendStream,
    recv: RecvStream,
    stream: StreamId,
    limits: Limits,
    session: Arc<SessionGuard>,
    side: Side,
) -> MessageStream {
    let (slot, server) = match side {
        Side::Client { slot } => (Some(slot), false),
        Side::Server => (None, true),
    };
    let rejected = Arc::new(AtomicBool::new(false));
    MessageStream {
        sink: Box::new(StreamSink {
            send,
            stream,
            limits,
            finished: false,
            abort_unfinished: server,
            rejected: rejected.clone(),
            _session: session.clone(),
        }),
        source: Box::new(StreamSource {
            recv: Some(recv),
            drain_on_drop: server,
            ended: false,
            buf: BytesMut::new(),
            stream,
            max_payload: limits.max_message_size,
            rejected,
            _session: session,
            _slot: slot,
        }),
    }
}

struct StreamSink {
    send: SendStream,
    stream: StreamId,
    limits: Limits,
    finished: bool,
    abort_unfinished: bool,
    /// Set by the source when it refused the peer's bytes: an unfinished drop then resets with [`CODE_PROTOCOL`].
    rejected: Arc<AtomicBool>,
    _session: Arc<SessionGuard>,
}

#[async_trait]
impl MessageSink for StreamSink {
    async fn send(&mut self, mut msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        if self.finished {
            return Err(Error::Closed(format!("stream {} already finished", self.stream)));
        }
        msg.stream = self.stream;
        // quinn takes the chunk as is: the encoded frame is the only copy of the payload.
        self.send.quic_stream_mut().write_chunk(frame::encode(&msg)).await.map_err(write_error)
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if !self.finished {
            self.finished = true;
            // Returns at once; quinn delivers what is queued and the FIN even after the stream is dropped.
            self.send.quic_stream_mut().finish().map_err(|e| Error::Closed(format!("finish: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for StreamSink {
    /// See [`Side`]; otherwise quinn finishes a dropped stream by itself.
    fn drop(&mut self) {
        if self.abort_unfinished && !self.finished {
            let reason = if self.rejected.load(Ordering::Acquire) { CODE_PROTOCOL } else { CODE_ABORTED };
            let _ = self.send.reset(code(reason));
        }
    }
}

struct StreamSource {
    /// Taken only by [`StreamSource::drop`].
    recv: Option<RecvStream>,
    /// See [`Side::Server`].
    drain_on_drop: bool,
    /// The peer's direction ended (FIN, reset, stopped by us, or the connection's end).
    ended: bool,
    buf: BytesMut,
    stream: StreamId,
    max_payload: usize,
    /// Shared with the sink; see [`StreamSink::rejected`].
    rejected: Arc<AtomicBool>,
    _session: Arc<SessionGuard>,
    /// See [`Side::Client`].
    _slot: Option<StreamSlot>,
}

/// Upper bound of one read; quinn hands out what it has, usually one packet's worth.
const READ_CHUNK: usize = 64 << 10;

impl StreamSource {
    /// Refuses the peer's bytes: logs why, stops its direction with `0x50` and makes the sink reset ours with it.
    fn reject(&mut self, error: Error) -> Error {
        tracing::warn!(stream = self.stream, error = %error, "closing WebTransport stream: bad frame");
        self.rejected.store(true, Ordering::Release);
        self.ended = true;
        let _ = self.recv().quic_stream_mut().stop(wtransport::quinn::VarInt::from_u32(CODE_PROTOCOL));
        error
    }

    fn recv(&mut self) -> &mut RecvStream {
        self.recv.as_mut().expect("present until drop")
    }
}

impl Drop for StreamSource {
    /// On the server, reads and discards the client's direction until its FIN (or [`LINGER`]) instead of letting
    /// quinn stop it with code 0.
    fn drop(&mut self) {
        if !self.drain_on_drop || self.ended {
            return;
        }
        let (Some(mut recv), Ok(runtime)) = (self.recv.take(), tokio::runtime::Handle::try_current()) else { return };
        runtime.spawn(async move {
            let drained = tokio::time::timeout(LINGER, async {
                while let Ok(Some(_)) = recv.quic_stream_mut().read_chunk(READ_CHUNK, false).await {}
            });
            if drained.await.is_err() {
                tracing::debug!("no FIN from the client within {LINGER:?}: stopping its direction");
            }
        });
    }
}

#[async_trait]
impl MessageSource for StreamSource {
    /// Cancel-safe: bytes move from quinn into `buf` only when a read completes, and a frame leaves `buf` only when
    /// it is returned.
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match frame::decode_next(&mut self.buf, self.max_payload) {
                Ok(Some(msg)) => return Ok(Some(msg)),
                Ok(None) => {}
                Err(e) => return Err(self.reject(e)),
            }
            let read = self.recv().quic_stream_mut().read_chunk(READ_CHUNK, true).await.map_err(read_error);
            self.ended = !matches!(read, Ok(Some(_)));
            match read? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    let e = Error::Protocol(format!("stream {} ended inside a frame ({} bytes left)", self.stream, self.buf.len()));
                    return Err(self.reject(e));
                }
            }
        }
    }
}
