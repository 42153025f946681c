//! CLOCK_MONOTONIC in nanoseconds: the one time base for `sent_at` and receive times.
//!
//! Client and server share a host (network namespaces share the monotonic clock), so one-way latency is simply
//! `receive time - sent_at`. Wall-clock time is never used for latency.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let mut last = monotonic_ns();
        for _ in 0..10_000 {
            let now = monotonic_ns();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn monotonic_agrees_with_std_instant() {
        let start_ns = monotonic_ns();
        let start = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ours = monotonic_ns() - start_ns;
        let std_elapsed = start.elapsed().as_nanos() as u64;
        assert!(ours.abs_diff(std_elapsed) < 5_000_000, "ours {ours} ns vs std {std_elapsed} ns");
    }
}
