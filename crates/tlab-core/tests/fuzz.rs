//! Property tests ("fuzz" targets) of tlab-core's two decoders: the binary frame ([`tlab_core::frame`]) and the
//! stream-open query ([`StreamOpen::from_query`]). `cargo fuzz` needs a nightly toolchain, so these run on stable
//! under proptest: `PROPTEST_CASES` sets the cases per property (default 256 here), `TLAB_SEED` the seed (printed).
//!
//! - arbitrary input never panics, and is either refused with a typed error or decoded to the one value whose
//!   encoding it is (the decoders accept canonical encodings only, so "decoded" never means "misread");
//! - `decode(encode(x)) == x`;
//! - a frame cut short, or followed by extra bytes, is a typed error (or "need more bytes") — never another value.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use tlab_core::config::{ResumeFrom, StreamMode, StreamOpen};
use tlab_core::frame::{HEADER_LEN, decode_exact, decode_next, encode, encode_into};
use tlab_core::message::MAX_STREAM_ID;
use tlab_core::{ControlOp, Error, Message, MessageKind};

const MAX_PAYLOAD: usize = 512;

/// Cases per property (`PROPTEST_CASES`, default 256) and the seed (`TLAB_SEED`, default 1), printed.
fn config() -> Config {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("TLAB_SEED={seed}");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 256 };
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

fn control_op() -> impl Strategy<Value = ControlOp> {
    prop_oneof![
        Just(ControlOp::Resume),
        Just(ControlOp::Ack),
        Just(ControlOp::Ping),
        Just(ControlOp::Pong),
        Just(ControlOp::UnknownSession)
    ]
}

/// Every message the frame can carry: data with any payload, control with one operation byte.
fn message() -> impl Strategy<Value = Message> {
    let data = (0..=MAX_STREAM_ID, any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD)).prop_map(
        |(stream, seq, sent_at, payload)| Message { stream, seq, sent_at, kind: MessageKind::Data, payload: payload.into() },
    );
    let control = (0..=MAX_STREAM_ID, any::<u64>(), any::<u64>(), control_op()).prop_map(|(stream, seq, sent_at, op)| Message {
        stream,
        seq,
        sent_at,
        kind: MessageKind::Control,
        payload: Bytes::copy_from_slice(&[op as u8]),
    });
    prop_oneof![3 => data, 1 => control]
}

/// Bytes that are often almost a frame: a plausible length prefix, then anything.
fn frame_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let raw = proptest::collection::vec(any::<u8>(), 0..2 * HEADER_LEN + 64);
    let prefixed = (0u32..80, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..HEADER_LEN + 100)).prop_map(|(len, control, rest)| {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        if control && bytes.len() > 4 {
            bytes[4] |= 0x80;
        }
        bytes
    });
    prop_oneof![raw, prefixed]
}

fn is_typed_frame_error(e: &Error) -> bool {
    matches!(e, Error::Protocol(_) | Error::MessageTooLarge { .. })
}

#[test]
fn frame_properties() {
    proptest!(config(), |(msg in message())| {
        let wire = encode(&msg);
        prop_assert_eq!(decode_exact(wire.clone(), MAX_PAYLOAD).unwrap(), msg.clone());
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decode_next(&mut buf, MAX_PAYLOAD).unwrap(), Some(msg.clone()));
        prop_assert!(buf.is_empty());
    });
    proptest!(config(), |(msg in message(), cut in any::<prop::sample::Index>())| {
        // Cut short: decode_exact refuses, decode_next waits for more and consumes nothing.
        let wire = encode(&msg);
        let cut = cut.index(wire.len());
        let err = decode_exact(wire.slice(..cut), MAX_PAYLOAD).unwrap_err();
        prop_assert!(matches!(err, Error::Protocol(_)), "{}", err);
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(decode_next(&mut buf, MAX_PAYLOAD).unwrap(), None);
        prop_assert_eq!(&buf[..], &wire[..cut]);
    });
    proptest!(config(), |(msg in message(), extra in proptest::collection::vec(any::<u8>(), 1..64))| {
        // Extended: decode_exact refuses the trailing bytes, decode_next takes the frame and leaves them.
        let mut wire = BytesMut::from(&encode(&msg)[..]);
        wire.put_slice(&extra);
        let err = decode_exact(wire.clone().freeze(), MAX_PAYLOAD).unwrap_err();
        prop_assert!(matches!(err, Error::Protocol(_)), "{}", err);
        prop_assert_eq!(decode_next(&mut wire, MAX_PAYLOAD).unwrap(), Some(msg));
        prop_assert_eq!(&wire[..], &extra[..]);
    });
}

#[test]
fn arbitrary_bytes_are_refused_or_decoded_to_their_own_encoding() {
    proptest!(config(), |(bytes in frame_like_bytes(), limit in 0usize..100)| {
        match decode_exact(Bytes::from(bytes.clone()), limit) {
            Ok(msg) => {
                prop_assert!(msg.payload.len() <= limit);
                prop_assert_eq!(&encode(&msg)[..], &bytes[..]);
            }
            Err(e) => prop_assert!(is_typed_frame_error(&e), "{}", e),
        }
    });
}

#[test]
fn a_byte_stream_decodes_the_same_however_it_is_chunked() {
    let stream = (proptest::collection::vec(message(), 0..6), frame_like_bytes(), proptest::collection::vec(1usize..40, 1..20));
    proptest!(config(), |((messages, tail, chunks) in stream)| {
        let mut wire = BytesMut::new();
        for msg in &messages {
            encode_into(msg, &mut wire);
        }
        wire.put_slice(&tail);
        let whole = drain(&wire, &[wire.len()]);
        let chunked = drain(&wire, &chunk_sizes(&chunks, &wire));
        prop_assert_eq!(&chunked, &whole);
        // The well-formed frames up front always come out, in order, whatever the garbage after them does.
        prop_assert_eq!(&whole.0[..messages.len()], &messages[..]);
        // Everything decoded re-encodes to exactly the bytes it was taken from.
        let mut again = BytesMut::new();
        for msg in &whole.0 {
            encode_into(msg, &mut again);
        }
        prop_assert_eq!(&again[..], &wire[..again.len()]);
    });
}

/// Feeds `wire` in chunks of `sizes` through `decode_next`: the messages, and the error that stopped it, if any.
fn drain(wire: &[u8], sizes: &[usize]) -> (Vec<Message>, Option<String>) {
    let (mut buf, mut out, mut at) = (BytesMut::new(), Vec::new(), 0);
    for &size in sizes {
        let end = (at + size).min(wire.len());
        buf.extend_from_slice(&wire[at..end]);
        at = end;
        loop {
            match decode_next(&mut buf, MAX_PAYLOAD) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

/// Chunk sizes covering all of `wire`: `chunks` repeated, the last one stretched to the end.
fn chunk_sizes(chunks: &[usize], wire: &[u8]) -> Vec<usize> {
    let mut sizes: Vec<usize> = chunks.iter().copied().cycle().take(wire.len()).collect();
    sizes.push(wire.len());
    sizes
}

fn stream_open() -> impl Strategy<Value = StreamOpen> {
    let mode = prop_oneof![
        Just(StreamMode::Echo),
        Just(StreamMode::Sink),
        (any::<u64>(), any::<u32>(), any::<u64>())
            .prop_map(|(count, size, interval_us)| StreamMode::Source { count, size: size as usize, interval_us }),
    ];
    let resume = proptest::option::of((any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(session, next_expected, reopen)| {
        ResumeFrom { session, next_expected, reopen }
    }));
    (0..=MAX_STREAM_ID, mode, resume).prop_map(|(stream, mode, resume)| StreamOpen { stream, mode, resume })
}

/// Queries built from the keys the parser knows (and some it does not) with values that are often almost right.
fn query_soup() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["stream", "mode", "count", "size", "interval_us", "session", "next", "reopen", "token", "x"]);
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("{n:x}")),
        prop::sample::select(vec!["echo", "sink", "source", "", "-1", "18446744073709551616", "2147483648", "1=2"]).prop_map(str::to_owned),
        "[ -~]{0,12}",
    ];
    proptest::collection::vec((key, value, any::<bool>()), 0..8).prop_map(|pairs| {
        pairs.into_iter().map(|(k, v, bare)| if bare { k.to_string() } else { format!("{k}={v}") }).collect::<Vec<_>>().join("&")
    })
}

#[test]
fn open_query_properties() {
    proptest!(config(), |(open in stream_open())| {
        prop_assert_eq!(StreamOpen::from_query(&open.to_query()).unwrap(), open);
    });
    proptest!(config(), |(query in prop_oneof![query_soup(), "\\PC{0,64}"])| {
        // Any query: a protocol error, or a value that its own canonical form parses back to.
        match StreamOpen::from_query(&query) {
            Ok(open) => {
                prop_assert!(open.stream <= MAX_STREAM_ID);
                prop_assert_eq!(StreamOpen::from_query(&open.to_query()).unwrap(), open);
            }
            Err(e) => prop_assert!(matches!(e, Error::Protocol(_)), "{}", e),
        }
    });
}
