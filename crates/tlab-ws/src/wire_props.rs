//! Property tests ("fuzz" targets) of the WebSocket text commands ([`Control::parse`]): `cargo fuzz` needs a nightly
//! toolchain, so they run on stable under proptest. `PROPTEST_CASES` sets the cases (default 256), `TLAB_SEED` the
//! seed (printed).
//!
//! - arbitrary text never panics and is either refused with a typed `Protocol` error or parsed to a command whose
//!   own text parses back to it;
//! - `parse(to_text(c)) == c` for every command.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tlab_core::config::{ResumeFrom, StreamMode, StreamOpen};
use tlab_core::message::MAX_STREAM_ID;
use tlab_core::Error;

use crate::wire::Control;

fn runner() -> TestRunner {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("TLAB_SEED={seed}");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 256 };
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() })
}

fn command() -> impl Strategy<Value = Control> {
    let mode = prop_oneof![
        Just(StreamMode::Echo),
        Just(StreamMode::Sink),
        (any::<u64>(), 0..1_000_000usize, any::<u64>())
            .prop_map(|(count, size, interval_us)| StreamMode::Source { count, size, interval_us }),
    ];
    let resume = proptest::option::of((any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
        |(session, next_expected, reopen)| ResumeFrom { session, next_expected, reopen },
    ));
    prop_oneof![
        (0..=MAX_STREAM_ID, mode, resume).prop_map(|(stream, mode, resume)| Control::Open(StreamOpen { stream, mode, resume })),
        (0..=MAX_STREAM_ID).prop_map(Control::Fin),
        (0..=MAX_STREAM_ID, any::<u32>()).prop_map(|(stream, limit)| Control::Refused { stream, limit }),
    ]
}

#[test]
fn commands_round_trip() {
    runner()
        .run(&command(), |c| {
            prop_assert_eq!(Control::parse(&c.to_text()).expect("own text parses"), c);
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_text_is_refused_or_parsed_to_its_own_command() {
    // Words the parser knows, glued to arbitrary rest, reach every branch; fully arbitrary text reaches the rest.
    let text = prop_oneof![
        ("(open|fin|refused|OPEN|fin ) ?", ".{0,80}").prop_map(|(word, rest)| format!("{word}{rest}")),
        ".{0,120}",
    ];
    runner()
        .run(&text, |text| {
            match Control::parse(&text) {
                // Numbers may be spelled `+3` or `03` and an open query ignores unknown keys, so the accepted text
                // need not be canonical; what it parsed to must be a command whose own text parses back to it.
                Ok(c) => prop_assert_eq!(Control::parse(&c.to_text()).expect("canonical text parses"), c),
                Err(Error::Protocol(_)) => {}
                Err(other) => prop_assert!(false, "untyped refusal {other:?} for {text:?}"),
            }
            Ok(())
        })
        .unwrap();
}
