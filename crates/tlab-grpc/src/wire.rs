//! What both sides share: `Frame` ↔ [`Message`], gRPC status ↔ [`Error`], metadata names, the per-connection
//! stream counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tlab_core::message::MAX_STREAM_ID;
use tlab_core::{Error, Limits, Message, MessageKind, StreamId};
use tonic::{Code, Status};

use crate::proto::Frame;

/// ALPN protocol of gRPC.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol of HTTP/1.1, which the gRPC-Web server accepts beside `h2` (browsers may use either).
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Metadata entry carrying [`tlab_core::StreamOpen::to_query`] on `Stream` (and, for the stream id, `Sink`) calls.
pub(crate) const OPEN_METADATA: &str = "tlab-open";
/// Metadata entry of a RESOURCE_EXHAUSTED status refusing a stream: the server's `max_streams`.
pub(crate) const MAX_STREAMS_METADATA: &str = "tlab-max-streams";
/// Room for the protobuf fields and length prefix around a payload of `max_message_size` bytes; a received gRPC
/// message above `max_message_size + FRAME_OVERHEAD` is refused by tonic before it is buffered.
pub(crate) const FRAME_OVERHEAD: usize = 64;
/// Frames buffered between a stream half and the HTTP/2 connection (backpressure beyond that).
pub(crate) const CHANNEL_CAPACITY: usize = 32;

pub(crate) fn to_frame(msg: Message) -> Frame {
    Frame {
        stream: msg.stream,
        seq: msg.seq,
        sent_at_ns: msg.sent_at,
        control: msg.kind == MessageKind::Control,
        payload: msg.payload,
    }
}

/// Checks a received frame the way [`tlab_core::frame::decode_next`] checks the binary frame.
pub(crate) fn to_message(frame: Frame, limits: &Limits) -> Result<Message, Error> {
    limits.check_size(frame.payload.len())?;
    if frame.stream > MAX_STREAM_ID {
        return Err(Error::Protocol(format!("stream id {} above {MAX_STREAM_ID}", frame.stream)));
    }
    let kind = if frame.control { MessageKind::Control } else { MessageKind::Data };
    let msg = Message { stream: frame.stream, seq: frame.seq, sent_at: frame.sent_at_ns, kind, payload: frame.payload };
    if kind == MessageKind::Control && msg.control_op().is_none() {
        return Err(Error::Protocol(format!("unknown control operation on stream {}", msg.stream)));
    }
    Ok(msg)
}

/// The status a server answers when a received frame fails [`to_message`].
pub(crate) fn status_for(error: &Error) -> Status {
    match error {
        Error::MessageTooLarge { .. } => Status::resource_exhausted(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

/// The client's view of a non-OK status; `stream` names the stream in [`Error::TooManyStreams`].
pub(crate) fn error_from_status(status: &Status, stream: StreamId) -> Error {
    let detail = format!("gRPC status {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unauthenticated => Error::Unauthorized,
        Code::ResourceExhausted => {
            let limit = status.metadata().get(MAX_STREAMS_METADATA).and_then(|v| v.to_str().ok()?.parse().ok());
            match limit {
                Some(limit) => Error::TooManyStreams { stream, limit },
                None => Error::Protocol(detail),
            }
        }
        Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented | Code::FailedPrecondition | Code::DataLoss => {
            Error::Protocol(detail)
        }
        Code::DeadlineExceeded => Error::Timeout(detail),
        // Cancelled, Unknown, Internal, Unavailable, Aborted, …: what a broken connection or reset stream gives.
        _ => Error::Closed(detail),
    }
}

/// One open stream counted against `max_streams`; released when dropped (both halves of a stream share it).
pub(crate) struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    /// Counts one more stream on `open`, or refuses it when `limits.max_streams` are already open.
    pub(crate) fn acquire(open: &Arc<AtomicUsize>, limits: &Limits, stream: StreamId) -> Result<Arc<Self>, Error> {
        let before = open.fetch_add(1, Ordering::AcqRel);
        let slot = Arc::new(Self(open.clone()));
        limits.check_streams(stream, before)?;
        Ok(slot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tlab_core::ControlOp;

    #[test]
    fn frames_round_trip() {
        let limits = Limits::default();
        for msg in [Message::data(3, 7, Bytes::from_static(b"abc")), Message::control(4, ControlOp::Ack, 9)] {
            assert_eq!(to_message(to_frame(msg.clone()), &limits).unwrap(), msg);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let limits = Limits { max_message_size: 2, max_streams: 1 };
        let frame = |stream, control, payload: &'static [u8]| Frame {
            stream,
            seq: 0,
            sent_at_ns: 0,
            payload: Bytes::from_static(payload),
            control,
        };
        let big = to_message(frame(0, false, b"abc"), &limits).unwrap_err();
        assert!(matches!(big, Error::MessageTooLarge { size: 3, limit: 2 }));
        assert_eq!(status_for(&big).code(), Code::ResourceExhausted);
        let bad_op = to_message(frame(0, true, &[99]), &limits).unwrap_err();
        assert!(matches!(bad_op, Error::Protocol(_)));
        assert_eq!(status_for(&bad_op).code(), Code::InvalidArgument);
        assert!(matches!(to_message(frame(MAX_STREAM_ID + 1, false, b""), &limits), Err(Error::Protocol(_))));
    }

    #[test]
    fn statuses_map_to_errors() {
        assert!(matches!(error_from_status(&Status::unauthenticated("x"), 0), Error::Unauthorized));
        let mut refused = Status::resource_exhausted("too many");
        refused.metadata_mut().insert(MAX_STREAMS_METADATA, "4".parse().unwrap());
        assert!(matches!(error_from_status(&refused, 5), Error::TooManyStreams { stream: 5, limit: 4 }));
        assert!(matches!(error_from_status(&Status::resource_exhausted("big"), 0), Error::Protocol(_)));
        assert!(error_from_status(&Status::unavailable("gone"), 0).is_retryable());
    }

    #[test]
    fn slots_count_and_release() {
        let open = Arc::new(AtomicUsize::new(0));
        let limits = Limits { max_message_size: 1, max_streams: 1 };
        let first = StreamSlot::acquire(&open, &limits, 0).unwrap();
        assert!(matches!(StreamSlot::acquire(&open, &limits, 1), Err(Error::TooManyStreams { stream: 1, limit: 1 })));
        drop(first);
        let second = StreamSlot::acquire(&open, &limits, 2).unwrap();
        assert_eq!(open.load(Ordering::Acquire), 1);
        drop(second);
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
