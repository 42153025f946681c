//! The wire format shared by client and server: paths, query keys, and the encoding of one message as one SSE event.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use tlab_core::frame::{self, HEADER_LEN};
use tlab_core::{Error, Message, MessageKind, StreamOpen};

/// Path prefix of every route; [`tlab_core::Server::url`] ends with it.
pub(crate) const PREFIX: &str = "/tlab/sse";
/// `GET`: opens a stream and returns its server→client event stream.
pub(crate) const EVENTS: &str = "/events";
/// `POST`: client→server frames of one stream.
pub(crate) const MESSAGES: &str = "/messages";
/// `GET`: 204 when the token is valid; lets `connect` fail fast on a wrong token or certificate.
pub(crate) const AUTH: &str = "/auth";

/// Response header of a 429 (too many streams) carrying the server's limit.
pub(crate) const MAX_STREAMS_HEADER: &str = "x-tlab-max-streams";

/// First bytes of every event stream: a comment telling the client the stream is open.
pub(crate) const HELLO: &[u8] = b": ok\n\n";
/// The event that ends the server's direction gracefully.
pub(crate) const END: &[u8] = b"event: end\ndata:\n\n";

/// The value of `key` in a raw `a=1&b=2` query (no percent-decoding: every value we use is plain ASCII).
pub(crate) fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// The `conn=<hex>` id of a query.
pub(crate) fn conn_id(query: &str) -> Result<u64, Error> {
    let hex = query_value(query, "conn").ok_or_else(|| Error::Protocol("`conn` is missing".into()))?;
    u64::from_str_radix(hex, 16).map_err(|_| Error::Protocol(format!("conn `{hex}` is not hex")))
}

/// The stream an events request opens. SSE-native resume: with a `Last-Event-ID` and a `session` but no explicit
/// `next`, the client wants everything after the last event it saw.
pub(crate) fn stream_open(query: &str, last_event_id: Option<&str>) -> Result<StreamOpen, Error> {
    let mut open = StreamOpen::from_query(query)?;
    if let (Some(resume), Some(last), None) = (open.resume.as_mut(), last_event_id, query_value(query, "next")) {
        let last: u64 =
            last.trim().parse().map_err(|_| Error::Protocol(format!("Last-Event-ID `{last}` is not a seq")))?;
        resume.next_expected = last + 1;
        // A browser's automatic reconnect: it saw events before, so the session must be known.
        resume.reopen = true;
    }
    Ok(open)
}

/// One message as one SSE event: `id: <seq>` (data only), `event: message|control`, `data: <base64 frame>`.
/// `scratch` is reused for the binary frame between calls.
pub(crate) fn encode_event(msg: &Message, scratch: &mut BytesMut) -> Bytes {
    scratch.clear();
    frame::encode_into(msg, scratch);
    let b64_len = base64::encoded_len(scratch.len(), true).expect("frame length fits in usize");
    let mut out = BytesMut::with_capacity(48 + b64_len);
    match msg.kind {
        MessageKind::Data => write!(out, "id: {}\nevent: message\ndata: ", msg.seq).expect("BytesMut grows"),
        MessageKind::Control => out.put_slice(b"event: control\ndata: "),
    }
    let start = out.len();
    out.resize(start + b64_len, 0);
    STANDARD.encode_slice(&scratch[..], &mut out[start..]).expect("buffer sized by encoded_len");
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The message in an event's `data`, checking the size limit before decoding anything.
pub(crate) fn decode_event_data(data: &str, max_payload: usize) -> Result<Message, Error> {
    let limit = base64::encoded_len(HEADER_LEN + max_payload, true).unwrap_or(usize::MAX);
    if data.len() > limit {
        let size = (data.len() / 4 * 3).saturating_sub(HEADER_LEN);
        return Err(Error::MessageTooLarge { size, limit: max_payload });
    }
    let bytes = STANDARD.decode(data).map_err(|e| Error::Protocol(format!("event data is not base64: {e}")))?;
    // Decoding from the Vec we own avoids the copy `frame::decode_exact` would make.
    let mut buf = BytesMut::from(Bytes::from(bytes));
    match frame::decode_next(&mut buf, max_payload)? {
        Some(msg) if buf.is_empty() => Ok(msg),
        _ => Err(Error::Protocol(format!("event data is not exactly one frame ({} bytes)", data.len() / 4 * 3))),
    }
}

/// Cuts an event stream into whole events (each ending with a blank line) before the event parser sees it: that
/// parser copies its remaining buffer on every line and rescans an incomplete line on every chunk, which is
/// quadratic when handed whole network reads or large events piecewise.
#[derive(Default)]
pub(crate) struct EventFramer {
    partial: BytesMut,
}

impl EventFramer {
    /// The events that `chunk` completes, in order; an incomplete tail is kept for the next chunk.
    pub(crate) fn push(&mut self, mut chunk: Bytes) -> Vec<Bytes> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let straddles = self.partial.ends_with(b"\n") && chunk.first() == Some(&b'\n');
            match if straddles { Some(1) } else { blank_line_end(&chunk) } {
                Some(end) => {
                    self.partial.extend_from_slice(&chunk.split_to(end));
                    events.push(self.partial.split().freeze());
                }
                None => {
                    self.partial.extend_from_slice(&chunk);
                    return events;
                }
            }
        }
        while let Some(end) = blank_line_end(&chunk) {
            events.push(chunk.split_to(end));
        }
        self.partial.extend_from_slice(&chunk);
        events
    }
}

/// The index just after the first `\n\n` of `bytes`.
fn blank_line_end(bytes: &[u8]) -> Option<usize> {
    memchr::memmem::find(bytes, b"\n\n").map(|i| i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlab_core::ControlOp;
    use tlab_core::config::ResumeFrom;

    #[test]
    fn events_round_trip_and_look_as_documented() {
        let mut scratch = BytesMut::new();
        let data = Message::data(3, 7, Bytes::from_static(b"hello"));
        let event = encode_event(&data, &mut scratch);
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("id: 7\nevent: message\ndata: ") && text.ends_with("\n\n"), "{text}");
        let b64 = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        assert_eq!(b64, STANDARD.encode(frame::encode(&data)));
        assert_eq!(decode_event_data(b64, 5).unwrap(), data);

        let control = Message::control(3, ControlOp::Ack, 9);
        let text = String::from_utf8(encode_event(&control, &mut scratch).to_vec()).unwrap();
        assert!(text.starts_with("event: control\ndata: "), "{text}");
        let b64 = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        assert_eq!(decode_event_data(b64, 5).unwrap(), control);
    }

    #[test]
    fn bad_event_data_is_rejected() {
        let big = STANDARD.encode(frame::encode(&Message::data(0, 0, Bytes::from(vec![0u8; 100]))));
        assert!(matches!(decode_event_data(&big, 10), Err(Error::MessageTooLarge { limit: 10, .. })));
        assert!(matches!(decode_event_data("!!!!", 10), Err(Error::Protocol(_))));
        assert!(matches!(decode_event_data(&STANDARD.encode([0u8; 30]), 10), Err(Error::Protocol(_))));
    }

    #[test]
    fn last_event_id_sets_next_only_without_an_explicit_one() {
        let resume = |open: StreamOpen| open.resume.map(|r| r.next_expected);
        assert_eq!(resume(stream_open("stream=1&session=ab", Some("41")).unwrap()), Some(42));
        assert_eq!(resume(stream_open("stream=1&session=ab&next=5", Some("41")).unwrap()), Some(5));
        assert_eq!(resume(stream_open("stream=1&session=ab", None).unwrap()), Some(0));
        assert_eq!(stream_open("stream=1", Some("41")).unwrap().resume, None);
        assert!(matches!(stream_open("session=ab", Some("x")), Err(Error::Protocol(_))));
        let open = stream_open("stream=2&session=ff&conn=1&token=t", Some("0")).unwrap();
        assert_eq!(open.resume, Some(ResumeFrom { session: 0xff, next_expected: 1, reopen: true }));
    }

    #[test]
    fn query_helpers() {
        assert_eq!(query_value("a=1&conn=ff&fin", "fin"), Some(""));
        assert_eq!(conn_id("stream=1&conn=ff").unwrap(), 0xff);
        assert!(conn_id("stream=1").is_err() && conn_id("conn=xyz").is_err());
    }

    #[test]
    fn framer_yields_whole_events_wherever_chunks_are_cut() {
        let wire = b": ok\n\nid: 0\nevent: message\ndata: AAAA\n\nevent: end\ndata:\n\n";
        for cut in 0..wire.len() {
            for cut2 in cut..wire.len() {
                let mut framer = EventFramer::default();
                let mut events = Vec::new();
                for part in [&wire[..cut], &wire[cut..cut2], &wire[cut2..]] {
                    events.extend(framer.push(Bytes::copy_from_slice(part)));
                }
                let expected = [&b": ok\n\n"[..], b"id: 0\nevent: message\ndata: AAAA\n\n", b"event: end\ndata:\n\n"];
                assert_eq!(events, expected, "cuts at {cut}, {cut2}");
            }
        }
    }
}
