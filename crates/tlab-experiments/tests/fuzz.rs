//! Property tests ("fuzz" targets) of the two TOML formats users write: suites ([`Suite::parse`]) and link profiles
//! ([`Profile::from_str`], tlab-netem-model's parser, reached here through tlab-netem's re-export). `cargo fuzz`
//! needs a nightly toolchain, so these run on stable under proptest: `PROPTEST_CASES` sets the cases per property
//! (default 128 here), `TLAB_SEED` the seed (printed).
//!
//! Inputs are every shipped suite and profile, mutated the ways hand-edited files go wrong — cut short, a number
//! replaced by an edge value (negative, huge, NaN, infinite, a string), a line dropped or doubled, garbage inserted —
//! and arbitrary text. Properties: parsing never panics, it is deterministic, and what it accepts can be used (a
//! profile builds a link; a suite shards into its cells).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use tlab_experiments::suite::Suite;
use tlab_netem::{Link, Profile};

/// Cases per property (`PROPTEST_CASES`, default 128) and the seed (`TLAB_SEED`, default 1), printed.
fn config() -> Config {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("TLAB_SEED={seed}");
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { Config::default().cases } else { 128 };
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `*.toml` directly in `dir` (relative to the repository root), with its path.
fn shipped(dir: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no TOML files in {dir}");
    files
}

/// One way a hand-edited file goes wrong.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut after this many bytes (moved back to a character boundary).
    Truncate(prop::sample::Index),
    /// The n-th number replaced by this text.
    Number(prop::sample::Index, &'static str),
    /// The n-th line removed.
    DropLine(prop::sample::Index),
    /// The n-th line written twice.
    DoubleLine(prop::sample::Index),
    /// Text inserted at a byte offset (moved back to a character boundary).
    Insert(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge = prop::sample::select(vec![
        "-1", "0", "-0.0", "1e309", "nan", "inf", "-inf", "18446744073709551616", "4294967296", "0.999999", "1.5", "\"x\"",
        "[]", "{}",
    ]);
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Mutation::Truncate),
        (index(), edge).prop_map(|(i, v)| Mutation::Number(i, v)),
        index().prop_map(Mutation::DropLine),
        index().prop_map(Mutation::DoubleLine),
        (index(), "[ -~\n]{1,16}").prop_map(|(i, s)| Mutation::Insert(i, s)),
    ]
}

fn boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut text = text.to_string();
    for m in mutations {
        text = match m {
            Mutation::Truncate(i) => text[..boundary(&text, i.index(text.len() + 1))].to_string(),
            Mutation::Number(i, value) => {
                let numbers: Vec<(usize, usize)> = number_spans(&text);
                if numbers.is_empty() {
                    continue;
                }
                let (start, end) = numbers[i.index(numbers.len())];
                format!("{}{value}{}", &text[..start], &text[end..])
            }
            Mutation::DropLine(i) | Mutation::DoubleLine(i) => {
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let n = i.index(lines.len());
                if matches!(m, Mutation::DropLine(_)) {
                    lines.remove(n);
                } else {
                    lines.insert(n, lines[n]);
                }
                lines.join("\n")
            }
            Mutation::Insert(i, s) => {
                let at = boundary(&text, i.index(text.len() + 1));
                format!("{}{s}{}", &text[..at], &text[at..])
            }
        };
    }
    text
}

/// Byte spans of the numbers in `text` (runs of digits, `.`, `_`, `e` and signs that start with a digit or sign).
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'-');
        if starts {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || matches!(bytes[i], b'.' | b'_' | b'e' | b'E')) {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn catalogue() -> Vec<(&'static str, tlab_core::Capabilities)> {
    tlab_transports::catalogue()
}

fn check_suite(text: &str, origin: &Path) {
    let catalogue = catalogue();
    let first = Suite::parse(text, origin, &catalogue);
    let second = Suite::parse(text, origin, &catalogue);
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "parsing is deterministic");
    if let Ok(suite) = first {
        assert_eq!(suite.shard(1, 1).len(), suite.cells.len(), "one shard holds every cell");
    }
}

fn check_profile(text: &str, origin: &Path) {
    let first = Profile::from_str(text, origin);
    let second = Profile::from_str(text, origin);
    assert_eq!(format!("{first:?}"), format!("{second:?}"), "parsing is deterministic");
    if let Ok(profile) = first {
        let _ = Link::from_profile(&profile, 1);
    }
}

#[test]
fn shipped_suites_parse_as_they_are() {
    for (path, text) in shipped("experiments") {
        Suite::parse(&text, &path, &catalogue()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn mutated_suites_never_panic() {
    let files = shipped("experiments");
    proptest!(config(), |(file in any::<prop::sample::Index>(), mutations in proptest::collection::vec(mutation(), 1..4))| {
        let (path, text) = &files[file.index(files.len())];
        check_suite(&apply(text, &mutations), path);
    });
}

#[test]
fn mutated_profiles_never_panic() {
    let mut files = shipped("netem/profiles");
    files.extend(shipped("experiments/profiles"));
    proptest!(config(), |(file in any::<prop::sample::Index>(), mutations in proptest::collection::vec(mutation(), 1..4))| {
        let (path, text) = &files[file.index(files.len())];
        check_profile(&apply(text, &mutations), path);
    });
}

#[test]
fn arbitrary_text_never_panics() {
    let origin = repo().join("experiments/fuzz.toml");
    proptest!(config(), |(text in "\\PC{0,200}")| {
        check_suite(&text, &origin);
        check_profile(&text, &origin);
    });
}
