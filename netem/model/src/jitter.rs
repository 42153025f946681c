//! How jitter draws a packet's extra delay: independently per packet when reordering is allowed, or from a delay
//! process that varies with time, not with packets, when order must be kept.
//!
//! Why a process: with independent draws, keeping order means `departure = max(t + d + X, last departure)`, and
//! the `max` inflates the delay more the more packets there are (10 ms of jitter added 10.0 / 11.2 / 20.5 / 30.6 ms
//! at 10 / 100 / 1,000 / 10,000 packets/s), so a transport that sends more got a worse link. [`DelayProcess`]
//! instead gives every packet the value `Y(t)` of one function of time at its arrival `t`, so the delay a packet
//! sees has the same distribution at any packet rate, and `t + Y(t)` never decreases, so order is kept without any
//! `max` over packets.
//!
//! The process: time is cut into slots of [`slot_per_mean`] × the mean (20, or 60 for Pareto); each slot `k` draws its own value `X_k`
//! from the configured distribution. A constant `X_k` per slot would have exactly the configured distribution but
//! would reorder packets across a downward step; so each step down is smoothed into a slope no steeper than −1
//! (the delay can shrink only as fast as time passes): `Y` is the mean of a copy that ramps down *after* the step
//! and one that ramps down *before* it (they add and remove the same area, so the mean delay stays the
//! configured one). Limits, stated in the profile docs too: consecutive packets within a slot see nearly the same
//! delay (no packet-to-packet jitter at high rates: the variation is on the slot time scale); near the ramps the
//! distribution is slightly smoothed (the p99 comes out about 1 % below the configured one);
//! a sender whose timing follows the delay (ACK clocking) samples the process non-uniformly, like any real path.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Pareto};

use crate::impairments::{Jitter, JitterDistribution};

/// Slot length of the order-keeping delay process, in multiples of the jitter's mean: 20, or 60 for Pareto, whose
/// heavy tail needs longer slots for the smoothing of its large values to leave its p99 alone.
pub fn slot_per_mean(distribution: JitterDistribution) -> u32 {
    match distribution {
        JitterDistribution::Uniform | JitterDistribution::Normal => 20,
        JitterDistribution::Pareto => 60,
    }
}

/// After an idle gap longer than this many slots, the process restarts a little before the current slot instead
/// of drawing every slot it skipped; only a draw above this many slots could have reached across the gap
/// (for the Pareto tail, probability below 10⁻¹⁰).
const MAX_SKIPPED_SLOTS: u64 = 64;

/// Draws the non-negative extra delay of one packet (or one slot) from the configured distribution.
#[derive(Debug)]
pub(crate) enum JitterSampler {
    Uniform { width: f64 },
    Normal(Normal<f64>),
    Pareto(Pareto<f64>, f64),
}

impl JitterSampler {
    /// `None` for a zero mean, which needs no sampling.
    pub(crate) fn new(jitter: &Jitter) -> Option<Self> {
        let mean = jitter.mean.as_secs_f64();
        if mean <= 0.0 {
            return None;
        }
        // Profile validation guarantees a finite positive mean, for which these constructors cannot fail.
        Some(match jitter.distribution {
            JitterDistribution::Uniform => JitterSampler::Uniform { width: 2.0 * mean },
            JitterDistribution::Normal => {
                JitterSampler::Normal(Normal::new(0.0, mean * (std::f64::consts::PI / 2.0).sqrt()).expect("finite σ"))
            }
            JitterDistribution::Pareto => {
                JitterSampler::Pareto(Pareto::new(2.0 * mean, 3.0).expect("positive scale"), 2.0 * mean)
            }
        })
    }

    pub(crate) fn sample(&self, rng: &mut ChaCha8Rng) -> Duration {
        let secs = match self {
            JitterSampler::Uniform { width } => rng.random::<f64>() * width,
            JitterSampler::Normal(normal) => normal.sample(rng).abs(),
            JitterSampler::Pareto(pareto, scale) => pareto.sample(rng) - scale,
        };
        // The clamp only guards Duration conversion against a freak tail draw.
        Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    }
}

/// The order-keeping extra delay `Y(t)` described in the module docs, evaluated at non-decreasing times.
#[derive(Debug)]
pub(crate) struct DelayProcess {
    sampler: JitterSampler,
    slot: Duration,
    /// Start of slot 0.
    origin: Duration,
    /// Index of the slot `values[0]` belongs to: the slot of the latest query.
    first: u64,
    /// `X_first, X_first+1, …`, drawn in slot order as far ahead as a query needed.
    values: VecDeque<Duration>,
    /// The ramp-after copy at the start of slot `first`: `max(X_first, what the earlier slots still ramp down)`.
    after_at_start: Duration,
}

impl DelayProcess {
    /// A process for `jitter` (whose mean must be positive) starting at `origin`; `None` for a zero mean.
    pub(crate) fn new(jitter: &Jitter, origin: Duration, rng: &mut ChaCha8Rng) -> Option<Self> {
        let sampler = JitterSampler::new(jitter)?;
        let slot = jitter.mean * slot_per_mean(jitter.distribution);
        let mut process =
            Self { sampler, slot, origin, first: 0, values: VecDeque::new(), after_at_start: Duration::ZERO };
        process.restart_at(0, rng);
        Some(process)
    }

    fn restart_at(&mut self, slot: u64, rng: &mut ChaCha8Rng) {
        self.first = slot;
        self.values.clear();
        let x = self.value(0, rng);
        self.after_at_start = x;
    }

    /// `X_{first + j}`, drawing the values up to it if needed.
    fn value(&mut self, j: usize, rng: &mut ChaCha8Rng) -> Duration {
        while self.values.len() <= j {
            self.values.push_back(self.sampler.sample(rng));
        }
        self.values[j]
    }

    /// The extra delay of a packet entering at `t`; `t` must not be earlier than the previous call's.
    pub(crate) fn at(&mut self, t: Duration, rng: &mut ChaCha8Rng) -> Duration {
        let since = t.saturating_sub(self.origin);
        let slot_ns = self.slot.as_nanos();
        let k = u64::try_from(since.as_nanos() / slot_ns).unwrap_or(u64::MAX);
        if k > self.first + MAX_SKIPPED_SLOTS {
            self.restart_at(k - MAX_SKIPPED_SLOTS, rng);
        }
        while self.first < k {
            let x = self.value(0, rng);
            let end = x.max(self.after_at_start.saturating_sub(self.slot));
            self.values.pop_front();
            self.first += 1;
            self.after_at_start = self.value(0, rng).max(end);
        }
        // Offset into slot k (< slot).
        let u = Duration::from_nanos((since.as_nanos() - u128::from(k) * slot_ns) as u64);
        let x = self.value(0, rng);
        let after = x.max(self.after_at_start.saturating_sub(u));
        // The ramp-before copy: min over later slots j of X_{k+j} + (distance to slot k+j); values are ≥ 0, so
        // slots farther away than the best candidate cannot lower it.
        let mut before = x;
        for j in 1.. {
            let distance = self.slot * j as u32 - u;
            if distance >= before {
                break;
            }
            before = before.min(self.value(j, rng) + distance);
        }
        Duration::from_nanos(((after.as_nanos() + before.as_nanos()) / 2) as u64)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn jitter(mean_ms: u64) -> Jitter {
        Jitter { mean: Duration::from_millis(mean_ms), distribution: JitterDistribution::Pareto, reorder: false }
    }

    #[test]
    fn departures_never_decrease_and_the_delay_never_goes_negative() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut p = DelayProcess::new(&jitter(1), Duration::ZERO, &mut rng).unwrap();
        let mut last = Duration::ZERO;
        // Every 10 µs for 20 s of virtual time: 333 slots, steps down included.
        for i in 0..2_000_000u64 {
            let t = Duration::from_micros(10 * i);
            let departs = t + p.at(t, &mut rng);
            assert!(departs >= last, "at {t:?}: {departs:?} < {last:?}");
            last = departs;
        }
    }

    #[test]
    fn a_long_idle_gap_restarts_the_process_and_keeps_it_usable() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = DelayProcess::new(&jitter(1), Duration::ZERO, &mut rng).unwrap();
        let _ = p.at(Duration::ZERO, &mut rng);
        let t = Duration::from_secs(3600);
        let extra = p.at(t, &mut rng);
        assert_eq!(p.first, 3600 * 1000 / 60);
        assert!(extra < Duration::from_secs(1), "{extra:?}");
    }
}
