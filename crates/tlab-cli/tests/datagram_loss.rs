//! Datagrams are lost only by the link (needs root, as CI runs): 5,000 wt-datagram echoes through the shipped
//! `lossy-2` profile (2 % Bernoulli loss each way, 20 ms each way) must lose a count inside the binomial 99.9 %
//! interval for p = 1 − 0.98² (a message is lost when its datagram or its echo is).
//!
//! Pacing matters for the binomial model, not for the mean: quinn sends datagrams under congestion control, so when
//! the window is the limit (at 500 Hz on this link after a few losses) several datagrams share one QUIC packet and
//! one packet loss takes them together — losses stop being independent and the count's variance grows, which is what
//! made 17 and 22 of 300 look like excess loss. At 100 Hz (one 256-byte message every 10 ms, ≈ 30 kB/s, below what
//! even quinn's minimum window carries in 40 ms) each datagram travels alone.

mod support;

use support::{is_root, run_suite};

const MESSAGES: u64 = 5000;
const LINK_LOSS: f64 = 0.02;

const SUITE: &str = r#"
name = "datagram-loss"
seed = 5
repetitions = 1
transports = ["wt-datagram"]
profiles = ["lossy-2"]
cell_timeout_s = 120
backend = "tun"

[[experiment]]
kind = "latency"
pattern = "echo"
messages = 5000
size = 256
rate_hz = 100
"#;

#[test]
fn paced_datagram_loss_through_two_percent_each_way_is_binomial() {
    assert!(is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    let (dir, out) = run_suite("datagram-loss", SUITE, &[], &[]);
    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(runs.lines().next().expect("one run")).unwrap();
    assert_eq!(record["status"], "ok", "{record}");
    let missing = record["metrics"]["missing"].as_f64().expect("missing") as u64;
    assert_eq!(record["metrics"]["duplicates"].as_f64(), Some(0.0), "{record}");
    let p = 1.0 - (1.0 - LINK_LOSS).powi(2);
    let (low, high) = binomial_interval(MESSAGES, p, 0.999);
    eprintln!("{missing} of {MESSAGES} echoes lost; binomial 99.9 % interval {low}..={high}");
    assert!(
        (low..=high).contains(&missing),
        "{missing} of {MESSAGES} echoes lost; a 2 %-each-way link alone loses {low}..={high} (99.9 %, p = {p:.4})"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The central `level` interval of Binomial(n, p): the smallest `low` and `high` with P(X < low) ≤ (1 − level)/2
/// and P(X > high) ≤ (1 − level)/2, from the exact probabilities.
fn binomial_interval(n: u64, p: f64, level: f64) -> (u64, u64) {
    let tail = (1.0 - level) / 2.0;
    // pmf(k) by the ratio pmf(k+1)/pmf(k) = (n−k)/(k+1) · p/(1−p), from pmf(0) = (1−p)^n (≈ 1e-88 here, no underflow).
    let mut pmf = vec![(1.0 - p).powf(n as f64)];
    for k in 0..n {
        let next = pmf[k as usize] * (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
        pmf.push(next);
    }
    let mut below = 0.0;
    let low = (0..=n).find(|&k| {
        below += pmf[k as usize];
        below > tail
    });
    let mut above = 0.0;
    let high = (0..=n).rev().find(|&k| {
        above += pmf[k as usize];
        above > tail
    });
    (low.expect("the pmf sums to 1"), high.expect("the pmf sums to 1"))
}

#[test]
fn binomial_interval_matches_the_normal_approximation_here() {
    // n p = 198, sd = 13.8: the 99.9 % interval is about 198 ± 3.29 sd.
    let (low, high) = binomial_interval(MESSAGES, 1.0 - 0.98f64.powi(2), 0.999);
    assert!((150..=157).contains(&low) && (240..=247).contains(&high), "{low}..={high}");
    assert_eq!(binomial_interval(10, 0.5, 0.0), (5, 5));
}
