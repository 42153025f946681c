//! Property tests ("fuzz" target) of the QUIC open header (`tlab_quic_common::open_header`, used by `quic` and
//! `wt-stream`), read from real quinn streams of one live connection. `cargo fuzz` needs a nightly toolchain, so this
//! runs on stable under proptest: `PROPTEST_CASES` sets the cases per property (default 64 here: each case is a
//! stream on the wire), `TLAB_SEED` the seed (printed).
//!
//! - `read(encode(text)) == text`, and the bytes after the header stay on the stream;
//! - arbitrary bytes: a typed error, or the text whose header is exactly the bytes' front;
//! - a header cut short by the end of the stream is `FinishedEarly`, never a shorter text.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use tlab_quic_common::open_header::{self, OpenHeaderError, PREFIX_LEN};
use tlab_quic_common::testing::Pair;

/// Cases per property (`PROPTEST_CASES`, default 64) and the seed (`TLAB_SEED`, default 1), printed.
fn config() -> Config {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("TLAB_SEED={seed}");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 64 };
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

/// Sends `bytes` on a new stream and finishes it; reads one header at the other end, then the rest of the stream.
fn send_and_read(runtime: &tokio::runtime::Runtime, pair: &Pair, bytes: &[u8]) -> (Result<String, OpenHeaderError>, Vec<u8>) {
    runtime.block_on(async {
        let (mut send, _recv) = pair.client.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let (_send, mut recv) = pair.server.accept_bi().await.unwrap();
        let header = open_header::read(&mut recv).await;
        let rest = match header {
            Ok(_) => recv.read_to_end(1 << 20).await.unwrap(),
            Err(_) => Vec::new(),
        };
        (header, rest)
    })
}

#[test]
fn open_header_properties() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pair = runtime.block_on(Pair::connect_default());
    proptest!(config(), |(text in "\\PC{0,300}", after in proptest::collection::vec(any::<u8>(), 0..64))| {
        let mut bytes = open_header::encode(&text).unwrap().to_vec();
        bytes.extend_from_slice(&after);
        let (header, rest) = send_and_read(&runtime, &pair, &bytes);
        prop_assert_eq!(header.unwrap(), text);
        prop_assert_eq!(rest, after);
    });
    proptest!(config(), |(text in "\\PC{0,300}", cut in any::<prop::sample::Index>())| {
        let bytes = open_header::encode(&text).unwrap();
        let cut = cut.index(bytes.len());
        let (header, _) = send_and_read(&runtime, &pair, &bytes[..cut]);
        prop_assert!(matches!(header, Err(OpenHeaderError::FinishedEarly)), "cut at {}: {:?}", cut, header);
    });
    let arbitrary = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (0u16..40, proptest::collection::vec(any::<u8>(), 0..60)).prop_map(|(len, rest)| [&len.to_be_bytes()[..], &rest].concat()),
    ];
    proptest!(config(), |(bytes in arbitrary)| {
        match send_and_read(&runtime, &pair, &bytes) {
            (Ok(text), rest) => {
                let header = open_header::encode(&text).unwrap();
                prop_assert_eq!(&bytes[..header.len()], &header[..]);
                prop_assert_eq!(&bytes[header.len()..], &rest[..]);
            }
            (Err(OpenHeaderError::FinishedEarly), _) => {
                let declared = bytes.get(..PREFIX_LEN).map(|p| usize::from(u16::from_be_bytes([p[0], p[1]])));
                prop_assert!(declared.is_none_or(|len| bytes.len() < PREFIX_LEN + len));
            }
            (Err(OpenHeaderError::NotUtf8), _) => {
                let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                prop_assert!(std::str::from_utf8(&bytes[PREFIX_LEN..PREFIX_LEN + len]).is_err());
            }
            (Err(e), _) => prop_assert!(false, "unexpected error {:?}", e),
        }
    });
}
