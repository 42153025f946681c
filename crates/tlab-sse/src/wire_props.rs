//! Property tests ("fuzz" targets) of the SSE event side: the event-data decoder ([`decode_event_data`]) and the
//! event framer ([`EventFramer`]). `cargo fuzz` needs a nightly toolchain, so they run on stable under proptest.
//! `PROPTEST_CASES` sets the cases (default 256), `TLAB_SEED` the seed (printed).
//!
//! - arbitrary event data never panics and is refused with a typed error or decoded to the one message whose event
//!   it is;
//! - `decode(encode(m)) == m`, and the size limit is checked before decoding;
//! - the framer yields exactly the events of a stream however it is cut into chunks.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tlab_core::{ControlOp, Error, Message};

use crate::wire::{EventFramer, decode_event_data, encode_event};

const MAX_PAYLOAD: usize = 256;

fn runner() -> TestRunner {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("TLAB_SEED={seed}");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 256 };
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (0..1000u32, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD))
            .prop_map(|(stream, seq, payload)| Message::data(stream, seq, Bytes::from(payload))),
        (0..1000u32, any::<u64>()).prop_map(|(stream, arg)| Message::control(stream, ControlOp::Ack, arg)),
    ]
}

/// The `data:` value of an encoded event.
fn data_of(event: &[u8]) -> String {
    let text = std::str::from_utf8(event).expect("events are ASCII");
    text.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line").to_string()
}

#[test]
fn events_round_trip() {
    runner()
        .run(&message(), |msg| {
            let event = encode_event(&msg, &mut BytesMut::new());
            let mut back = decode_event_data(&data_of(&event), MAX_PAYLOAD).expect("own event decodes");
            back.sent_at = msg.sent_at;
            prop_assert_eq!(back, msg);
            Ok(())
        })
        .unwrap();
}

#[test]
fn oversize_data_is_refused_before_decoding() {
    let big = (MAX_PAYLOAD + 1..MAX_PAYLOAD * 4).prop_map(|n| Message::data(0, 0, Bytes::from(vec![7u8; n])));
    runner()
        .run(&big, |msg| {
            let event = encode_event(&msg, &mut BytesMut::new());
            let refused = decode_event_data(&data_of(&event), MAX_PAYLOAD);
            prop_assert!(matches!(refused, Err(Error::MessageTooLarge { .. })), "{refused:?}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_event_data_is_refused_or_decoded_exactly() {
    let data = prop_oneof!["[A-Za-z0-9+/=]{0,400}", ".{0,200}"];
    runner()
        .run(&data, |data| {
            match decode_event_data(&data, MAX_PAYLOAD) {
                // Anything accepted is the canonical encoding of what it decoded to.
                Ok(msg) => prop_assert_eq!(data_of(&encode_event(&msg, &mut BytesMut::new())), data.clone()),
                Err(Error::Protocol(_) | Error::MessageTooLarge { .. }) => {}
                Err(other) => prop_assert!(false, "untyped refusal {other:?}"),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_framer_yields_the_same_events_however_the_stream_is_cut() {
    let case = (proptest::collection::vec(message(), 1..12), proptest::collection::vec(1..64usize, 1..40));
    runner()
        .run(&case, |(messages, cuts)| {
            let events: Vec<Bytes> = messages.iter().map(|m| encode_event(m, &mut BytesMut::new())).collect();
            let stream: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
            let mut framer = EventFramer::default();
            let mut got = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < stream.len() {
                let len = cuts[i % cuts.len()].min(stream.len() - at);
                got.extend(framer.push(Bytes::copy_from_slice(&stream[at..at + len])));
                at += len;
                i += 1;
            }
            prop_assert_eq!(got, events);
            Ok(())
        })
        .unwrap();
}
