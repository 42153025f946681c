//! Latency histograms (one-way or round trip, as their [`crate::Distribution`] says): HdrHistogram in microseconds,
//! 3 significant digits, serializable as buckets.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::records::MessageRecord;

/// p50 / p90 / p99 / p99.9 / max in microseconds, plus the count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
}

/// A latency histogram (µs, 3 significant digits) that serializes to `[[value_us, count], …]` buckets, so the raw
/// distribution is in the results and every plot can be regenerated from it.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { inner: Histogram::new(3).expect("3 significant digits is valid") }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latency distribution of `messages`, each counted from its scheduled send time
    /// ([`MessageRecord::latency_ns`]).
    pub fn of_messages<'a>(messages: impl IntoIterator<Item = &'a MessageRecord>) -> Self {
        let mut histogram = Self::new();
        for message in messages {
            histogram.record_ns(message.latency_ns());
        }
        histogram
    }

    /// Records one latency given in nanoseconds (stored in µs, at least 1).
    pub fn record_ns(&mut self, ns: u64) {
        self.record_us((ns / 1000).max(1), 1);
    }

    fn record_us(&mut self, us: u64, count: u64) {
        self.inner.record_n(us, count).expect("auto-resizing histogram accepts any value");
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        self.inner.add(&other.inner).expect("auto-resizing histogram accepts any value");
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The value (µs) at quantile `q` in [0, 1].
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.inner.value_at_quantile(q)
    }

    /// The summary percentiles; `None` when empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        (!self.is_empty()).then(|| Percentiles {
            count: self.len(),
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.inner.max(),
            mean_us: self.inner.mean(),
        })
    }

    /// Samples above `threshold_us`, as a share of all samples.
    pub fn share_above_us(&self, threshold_us: u64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let above: u64 = self.inner.iter_recorded().filter(|v| v.value_iterated_to() > threshold_us).map(|v| v.count_at_value()).sum();
        above as f64 / self.len() as f64
    }

    /// `(value_us, share of samples ≥ value_us)` points of the empirical complementary CDF, one per distinct
    /// recorded bucket: the first is 1, the last the largest bucket's share (never 0, so it fits a log axis).
    pub fn ccdf(&self) -> Vec<(u64, f64)> {
        let total = self.len() as f64;
        let mut below = 0u64;
        self.buckets()
            .into_iter()
            .map(|(value, count)| {
                let share = (self.len() - below) as f64 / total;
                below += count;
                (value, share)
            })
            .collect()
    }

    /// `(value_us, count)` of every recorded bucket, ascending.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.inner.iter_recorded().map(|v| (self.inner.highest_equivalent(v.value_iterated_to()), v.count_at_value())).collect()
    }
}

impl Serialize for LatencyHistogram {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.buckets().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LatencyHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(deserializer)?;
        let mut histogram = Self::new();
        for (value, count) in buckets {
            histogram.record_us(value.max(1), count);
        }
        Ok(histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_uniform_sample() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record_ns(us * 1000);
        }
        let p = h.percentiles().unwrap();
        assert_eq!(p.count, 1000);
        // 3 significant digits: values are exact to within 0.1 %.
        assert!(p.p50_us.abs_diff(500) <= 1, "{p:?}");
        assert!(p.p99_us.abs_diff(990) <= 1, "{p:?}");
        assert!(p.p999_us.abs_diff(999) <= 1, "{p:?}");
        assert!(p.max_us.abs_diff(1000) <= 1, "{p:?}");
        assert!((p.mean_us - 500.5).abs() < 1.0, "{p:?}");
        assert!((h.share_above_us(900) - 0.1).abs() < 0.002);
    }

    #[test]
    fn serialization_round_trips_the_distribution() {
        let mut h = LatencyHistogram::new();
        for ns in [1_500u64, 20_000, 20_100, 3_000_000, 3_000_000, 45_000_000] {
            h.record_ns(ns);
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: LatencyHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back.percentiles(), h.percentiles());
        assert_eq!(back.buckets(), h.buckets());
        let ccdf = back.ccdf();
        assert_eq!(ccdf.first().unwrap().1, 1.0);
        assert_eq!(ccdf.last().unwrap().1, 1.0 / 6.0, "the largest sample alone");
        assert!(ccdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record_ns(10_000);
        b.record_ns(20_000);
        b.record_ns(30_000);
        a.merge(&b);
        assert_eq!(a.len(), 3);
    }
}
