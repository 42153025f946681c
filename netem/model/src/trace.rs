//! Mahimahi packet-delivery traces: parsing, the opportunity timeline, and the generators that produced the traces
//! shipped in `netem/traces/`.
//!
//! Format: one integer millisecond timestamp per line, non-decreasing. Each line is one opportunity to deliver up to
//! [`DeliveryTrace::BYTES_PER_OPPORTUNITY`] bytes; a timestamp repeated `n` times is `n` opportunities in that
//! millisecond. After the last line the trace starts over, shifted by its last timestamp (its period), so
//! opportunity `i` of cycle `m` is at `m·period + t[i]`. An opportunity that finds the queue empty is wasted.
//!
//! The files in `netem/traces/` come from [`DeliveryTrace::constant_rate`] and [`DeliveryTrace::cellular`] with the
//! parameters listed in `netem/model/tests/shipped.rs`, which checks them; `TLAB_BLESS=1 cargo test -p
//! tlab-netem-model --test shipped` rewrites them.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Why a trace file was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    /// The trace has no timestamps at all.
    #[error("the trace has no timestamps")]
    Empty,
    /// A line is not a non-negative integer number of milliseconds.
    #[error("line {line}: `{text}` is not a non-negative integer millisecond timestamp")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A timestamp is smaller than the one before it.
    #[error("line {line}: timestamp {value} is smaller than the previous one")]
    Decreasing {
        /// 1-based line number.
        line: usize,
        /// The offending timestamp.
        value: u64,
    },
    /// The last timestamp is 0, so the trace would wrap without time passing.
    #[error("the last timestamp must be greater than 0 (it is the period after which the trace wraps)")]
    ZeroPeriod,
}

/// A parsed Mahimahi delivery trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryTrace {
    timestamps_ms: Vec<u64>,
}

impl DeliveryTrace {
    /// Bytes each delivery opportunity may carry (Mahimahi's MTU-sized slot).
    pub const BYTES_PER_OPPORTUNITY: u32 = 1500;

    /// Parses trace text (blank lines are ignored).
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut timestamps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() {
                continue;
            }
            let value = line_text
                .parse::<u64>()
                .map_err(|_| TraceError::BadLine { line: i + 1, text: line_text.to_owned() })?;
            if timestamps.last().is_some_and(|&last| value < last) {
                return Err(TraceError::Decreasing { line: i + 1, value });
            }
            timestamps.push(value);
        }
        Self::from_timestamps(timestamps)
    }

    /// Builds a trace from millisecond timestamps, checking the same rules as [`DeliveryTrace::parse`].
    pub fn from_timestamps(timestamps_ms: Vec<u64>) -> Result<Self, TraceError> {
        let Some(&last) = timestamps_ms.last() else { return Err(TraceError::Empty) };
        if let Some(i) = timestamps_ms.windows(2).position(|w| w[1] < w[0]) {
            return Err(TraceError::Decreasing { line: i + 2, value: timestamps_ms[i + 1] });
        }
        if last == 0 {
            return Err(TraceError::ZeroPeriod);
        }
        Ok(Self { timestamps_ms })
    }

    /// The timestamps, one per opportunity.
    pub fn timestamps_ms(&self) -> &[u64] {
        &self.timestamps_ms
    }

    /// Time after which the trace repeats (its last timestamp).
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms())
    }

    fn period_ms(&self) -> u64 {
        // Non-empty and positive by construction.
        self.timestamps_ms[self.timestamps_ms.len() - 1]
    }

    /// Time of opportunity number `index` (counting across wraps) since the trace started.
    pub fn opportunity(&self, index: u64) -> Duration {
        let n = self.timestamps_ms.len() as u64;
        let cycle = index / n;
        let within = self.timestamps_ms[(index % n) as usize];
        Duration::from_millis(cycle * self.period_ms() + within)
    }

    /// Index of the first opportunity at or after `t` (time since the trace started).
    pub fn first_opportunity_at_or_after(&self, t: Duration) -> u64 {
        let n = self.timestamps_ms.len() as u64;
        let period_ns = u128::from(self.period_ms()) * 1_000_000;
        let t_ns = t.as_nanos();
        let mut cycle = (t_ns / period_ns) as u64;
        let mut rem_ns = t_ns % period_ns;
        if rem_ns == 0 && cycle > 0 {
            // The previous cycle's last opportunities fall exactly on `t`.
            cycle -= 1;
            rem_ns = period_ns;
        }
        let k = self.timestamps_ms.partition_point(|&ts| u128::from(ts) * 1_000_000 < rem_ns) as u64;
        // k == n rolls over to the next cycle's first opportunity, which is ≥ t since rem < period.
        cycle * n + k
    }

    /// Mean capacity in bits per second over one period.
    pub fn mean_bits_per_second(&self) -> f64 {
        let bits = self.timestamps_ms.len() as f64 * f64::from(Self::BYTES_PER_OPPORTUNITY) * 8.0;
        bits / self.period().as_secs_f64()
    }

    /// The trace in Mahimahi's file format.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.timestamps_ms.len() * 6);
        for ts in &self.timestamps_ms {
            out.push_str(&ts.to_string());
            out.push('\n');
        }
        out
    }

    /// Generates a constant-rate trace of `duration_ms` milliseconds: each millisecond gets the opportunities its
    /// share of `mbit` Mbit/s allows, carrying fractions over (12 Mbit/s = one opportunity per millisecond).
    pub fn constant_rate(mbit: f64, duration_ms: u64) -> Self {
        Self::from_rate_fn(duration_ms, |_| mbit)
    }

    /// Generates a cellular-like trace of `duration_ms` milliseconds, deterministic in `seed`: the rate is a
    /// random walk that every `step_ms` multiplies the previous rate by a factor in `[0.7, 1.4)`, clamped to
    /// `[min_mbit, max_mbit]`; with probability `stall_probability` a step is an outage with no opportunities
    /// (a handover or fade).
    pub fn cellular(
        seed: u64,
        duration_ms: u64,
        min_mbit: f64,
        max_mbit: f64,
        step_ms: u64,
        stall_probability: f64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (duration_ms, step_ms) = (duration_ms.max(1), step_ms.max(1));
        let steps = duration_ms.div_ceil(step_ms) as usize;
        let mut rate = (min_mbit + max_mbit) / 2.0;
        let mut rates = Vec::with_capacity(steps);
        for _ in 0..steps {
            rate = (rate * rng.random_range(0.7..1.4)).clamp(min_mbit, max_mbit);
            rates.push(if rng.random_bool(stall_probability) { 0.0 } else { rate });
        }
        Self::from_rate_fn(duration_ms, |ms| rates[((ms - 1) / step_ms) as usize])
    }

    /// Builds a trace over milliseconds `1..=duration_ms` from a per-millisecond rate, always ending with an
    /// opportunity at `duration_ms` so that the period is exactly `duration_ms`.
    fn from_rate_fn(duration_ms: u64, mbit_at: impl Fn(u64) -> f64) -> Self {
        let duration_ms = duration_ms.max(1);
        let slot_bits = f64::from(Self::BYTES_PER_OPPORTUNITY) * 8.0;
        let mut credit = 0.0;
        let mut timestamps = Vec::new();
        for ms in 1..=duration_ms {
            credit += mbit_at(ms) * 1000.0; // bits per millisecond
            while credit >= slot_bits {
                timestamps.push(ms);
                credit -= slot_bits;
            }
        }
        if timestamps.last() != Some(&duration_ms) {
            timestamps.push(duration_ms);
        }
        Self { timestamps_ms: timestamps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_mahimahi_format_and_rejects_bad_lines() {
        let t = DeliveryTrace::parse("1\n1\n3\n\n10\n").unwrap();
        assert_eq!(t.timestamps_ms(), &[1, 1, 3, 10]);
        assert_eq!(t.period(), Duration::from_millis(10));
        assert_eq!(DeliveryTrace::parse(""), Err(TraceError::Empty));
        assert_eq!(DeliveryTrace::parse("0\n0\n"), Err(TraceError::ZeroPeriod));
        assert_eq!(DeliveryTrace::parse("5\n4\n"), Err(TraceError::Decreasing { line: 2, value: 4 }));
        assert_eq!(DeliveryTrace::parse("1\n-2\n"), Err(TraceError::BadLine { line: 2, text: "-2".into() }));
        assert_eq!(DeliveryTrace::parse("1.5\n"), Err(TraceError::BadLine { line: 1, text: "1.5".into() }));
    }

    #[test]
    fn opportunities_wrap_at_the_last_timestamp() {
        let t = DeliveryTrace::parse("2\n5\n").unwrap();
        let times: Vec<u64> = (0..6).map(|i| t.opportunity(i).as_millis() as u64).collect();
        assert_eq!(times, [2, 5, 7, 10, 12, 15]);
        assert_eq!(t.first_opportunity_at_or_after(Duration::ZERO), 0);
        assert_eq!(t.first_opportunity_at_or_after(Duration::from_millis(2)), 0);
        assert_eq!(t.first_opportunity_at_or_after(Duration::from_micros(2001)), 1);
        assert_eq!(t.first_opportunity_at_or_after(Duration::from_millis(6)), 2);
        assert_eq!(t.first_opportunity_at_or_after(Duration::from_millis(10)), 3);
        assert_eq!(t.first_opportunity_at_or_after(Duration::from_micros(10_001)), 4);
    }

    #[test]
    fn generators_hit_their_rates() {
        let c = DeliveryTrace::constant_rate(12.0, 1000);
        assert_eq!(c.timestamps_ms().len(), 1000);
        assert!((c.mean_bits_per_second() - 12e6).abs() < 1.0);
        let cell = DeliveryTrace::cellular(7, 10_000, 5.0, 40.0, 100, 0.01);
        assert_eq!(cell.period(), Duration::from_secs(10));
        let mean = cell.mean_bits_per_second();
        assert!((4e6..=41e6).contains(&mean), "mean {mean}");
        assert_eq!(cell, DeliveryTrace::cellular(7, 10_000, 5.0, 40.0, 100, 0.01));
    }
}
