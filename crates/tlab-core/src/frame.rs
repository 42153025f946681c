//! The binary frame shared by the byte- and message-oriented transports (WebSocket, SSE uplink and events).
//!
//! ```text
//! 0      4                8                16               24
//! +------+----------------+----------------+----------------+-----------------+
//! | len  | stream | C bit | seq            | sent_at (ns)   | payload (len B) |
//! +------+----------------+----------------+----------------+-----------------+
//! ```
//! All integers are big-endian. `len` is the payload length. The top bit of the stream field marks a session-layer
//! control message ([`MessageKind::Control`]); the other 31 bits are the stream id.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::message::{MAX_STREAM_ID, Message, MessageKind};

/// Bytes of header before the payload.
pub const HEADER_LEN: usize = 24;
const CONTROL_BIT: u32 = 0x8000_0000;

/// Appends the encoding of `msg` to `out`.
pub fn encode_into(msg: &Message, out: &mut BytesMut) {
    debug_assert!(msg.stream <= MAX_STREAM_ID);
    out.reserve(HEADER_LEN + msg.payload.len());
    out.put_u32(msg.payload.len() as u32);
    let flag = if msg.kind == MessageKind::Control { CONTROL_BIT } else { 0 };
    out.put_u32(msg.stream | flag);
    out.put_u64(msg.seq);
    out.put_u64(msg.sent_at);
    out.put_slice(&msg.payload);
}

/// The encoding of `msg` as one buffer.
pub fn encode(msg: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + msg.payload.len());
    encode_into(msg, &mut out);
    out.freeze()
}

/// Decodes exactly one frame occupying all of `bytes` (a WebSocket message, an SSE event, a POST body part).
/// The payload is a slice of `bytes`: no copy.
pub fn decode_exact(bytes: Bytes, max_payload: usize) -> Result<Message, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Protocol(format!("truncated frame of {} bytes", bytes.len())));
    }
    let len = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if len > max_payload {
        return Err(Error::MessageTooLarge { size: len, limit: max_payload });
    }
    match (HEADER_LEN + len).cmp(&bytes.len()) {
        std::cmp::Ordering::Greater => Err(Error::Protocol(format!("truncated frame of {} bytes", bytes.len()))),
        std::cmp::Ordering::Less => Err(Error::Protocol(format!("{} trailing bytes after frame", bytes.len() - HEADER_LEN - len))),
        std::cmp::Ordering::Equal => parse(&bytes[4..HEADER_LEN], bytes.slice(HEADER_LEN..)),
    }
}

/// Builds the message from the 20 header bytes after the length and the payload.
fn parse(mut header: &[u8], payload: Bytes) -> Result<Message, Error> {
    let stream_field = header.get_u32();
    let seq = header.get_u64();
    let sent_at = header.get_u64();
    let kind = if stream_field & CONTROL_BIT != 0 { MessageKind::Control } else { MessageKind::Data };
    let msg = Message { stream: stream_field & !CONTROL_BIT, seq, sent_at, kind, payload };
    if kind == MessageKind::Control && msg.control_op().is_none() {
        return Err(Error::Protocol(format!("unknown control operation on stream {}", msg.stream)));
    }
    Ok(msg)
}

/// Takes the next complete frame off the front of `buf`, or `None` when more bytes are needed.
///
/// A declared payload above `max_payload` is an error as soon as the header arrives, before the payload is buffered.
pub fn decode_next(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Message>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > max_payload {
        return Err(Error::MessageTooLarge { size: len, limit: max_payload });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let header = buf.split_to(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    parse(&header[4..], payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ControlOp;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(stream in 0..=MAX_STREAM_ID, seq: u64, sent_at: u64, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let msg = Message { stream, seq, sent_at, kind: MessageKind::Data, payload: Bytes::from(payload) };
            let decoded = decode_exact(encode(&msg), 4096).unwrap();
            prop_assert_eq!(decoded, msg);
        }

        #[test]
        fn split_anywhere_decodes_the_same(cut in 0usize..80) {
            let a = Message::data(1, 5, Bytes::from_static(b"hello world"));
            let b = Message::control(2, ControlOp::Ack, 9);
            let mut wire = BytesMut::new();
            encode_into(&a, &mut wire);
            encode_into(&b, &mut wire);
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(m) = decode_next(&mut buf, 100).unwrap() { got.push(m); }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(m) = decode_next(&mut buf, 100).unwrap() { got.push(m); }
            prop_assert_eq!(got, vec![a, b]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_exact(Bytes::from(bytes), 64);
        }
    }

    #[test]
    fn oversize_is_rejected_from_the_header_alone() {
        let msg = Message::data(0, 0, Bytes::from(vec![0u8; 1000]));
        let mut buf = BytesMut::from(&encode(&msg)[..HEADER_LEN]);
        let err = decode_next(&mut buf, 999).unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { size: 1000, limit: 999 }), "{err}");
    }

    #[test]
    fn trailing_and_truncated_bytes_are_protocol_errors() {
        let mut wire = BytesMut::from(&encode(&Message::data(0, 0, Bytes::from_static(b"x")))[..]);
        wire.put_u8(0);
        assert!(matches!(decode_exact(wire.freeze(), 10), Err(Error::Protocol(_))));
        assert!(matches!(decode_exact(Bytes::from_static(&[0, 0, 0]), 10), Err(Error::Protocol(_))));
    }

    #[test]
    fn header_layout_is_big_endian_as_documented() {
        let msg = Message { stream: 3, seq: 4, sent_at: 5, kind: MessageKind::Control, payload: Bytes::from_static(&[2]) };
        let wire = encode(&msg);
        assert_eq!(&wire[0..4], &[0, 0, 0, 1]);
        assert_eq!(&wire[4..8], &[0x80, 0, 0, 3]);
        assert_eq!(&wire[8..16], &4u64.to_be_bytes());
        assert_eq!(&wire[16..24], &5u64.to_be_bytes());
        assert_eq!(wire[24], 2);
    }
}
