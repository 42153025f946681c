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

    /// `std::time::Instant` reads CLOCK_MONOTONIC on Linux, so an interval measured by one clock and nested inside an
    /// interval measured by the other is never the longer one. A wrong unit or conversion, or a clock that runs at
    /// another rate, breaks that ordering; the test has no tolerance and no bound on how long anything takes.
    #[test]
    fn monotonic_ns_is_the_clock_std_instant_reads() {
        for round in 0..100 {
            let outer_ours = monotonic_ns();
            let inner_std = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_micros(200));
            let inner_std = inner_std.elapsed().as_nanos() as u64;
            let outer_ours = monotonic_ns() - outer_ours;
            assert!(inner_std <= outer_ours, "round {round}: std {inner_std} ns inside ours {outer_ours} ns");

            let outer_std = std::time::Instant::now();
            let inner_ours = monotonic_ns();
            std::thread::sleep(std::time::Duration::from_micros(200));
            let inner_ours = monotonic_ns() - inner_ours;
            let outer_std = outer_std.elapsed().as_nanos() as u64;
            assert!(inner_ours <= outer_std, "round {round}: ours {inner_ours} ns inside std {outer_std} ns");
        }
    }
}
