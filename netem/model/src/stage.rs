//! The composable stages of a direction's pipeline. Each takes packets stamped with their arrival time and hands
//! them on stamped with their exact departure time, never earlier than that time: a stage that has nothing to wait
//! for (loss, duplication, corruption, blackhole) departs packets at their arrival time.
//!
//! [`crate::Pipeline`] chains them as blackhole → loss → duplicate → corrupt → bottleneck → delay, so that
//! dropped packets never occupy the bottleneck, duplicates do, and propagation delay follows the queue. Each stage
//! owns its own ChaCha8 stream so that enabling one impairment does not shift another's random draws.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Packet;
use crate::impairments::{Bottleneck, Jitter, LossModel};
use crate::jitter::{DelayProcess, JitterSampler};
use crate::pipeline::Counters;
use crate::trace::DeliveryTrace;

/// A packet inside a pipeline, with the time it entered the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The packet's bytes.
    pub packet: Packet,
    /// When it entered the link (the `now` it was pushed at).
    pub arrived: Duration,
}

impl InFlight {
    /// The packet's length in bytes.
    pub fn len(&self) -> usize {
        self.packet.len()
    }

    /// Whether the packet has no bytes.
    pub fn is_empty(&self) -> bool {
        self.packet.is_empty()
    }
}

/// A packet leaving a pipeline, with what is needed to check that it did not leave early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The packet's bytes.
    pub packet: Packet,
    /// When it entered the link.
    pub arrived: Duration,
    /// Its due time: when the model lets it leave (at or before the `now` it was polled at).
    pub departs: Duration,
    /// The fixed delay it was given (the one configured when it reached the delay stage); the model guarantees
    /// `departs ≥ arrived + min_delay`.
    pub min_delay: Duration,
}

/// One step of a link direction, driven on virtual time.
///
/// Callers must push packets in non-decreasing `at` order and pop every packet due before pushing a later one;
/// [`crate::Pipeline`] guarantees both by always moving the globally earliest due packet first.
pub trait Stage {
    /// Accepts `packet` arriving at `at`; drops are recorded in `counters`.
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters);
    /// Departure time of the next packet this stage holds, if any.
    fn next_due(&self) -> Option<Duration>;
    /// Removes the next packet if it departs at or before `now`, returning it with its exact departure time.
    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)>;
}

/// FIFO of packets that depart at their arrival time: the output side of the stateless stages.
#[derive(Debug, Default)]
struct Passthrough(VecDeque<(InFlight, Duration)>);

impl Passthrough {
    fn next_due(&self) -> Option<Duration> {
        self.0.front().map(|(_, at)| *at)
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        if self.next_due()? <= now { self.0.pop_front() } else { None }
    }
}

/// Drops every packet arriving inside one of its windows (start inclusive, end exclusive).
#[derive(Debug, Default)]
pub struct BlackholeStage {
    windows: Vec<Range<Duration>>,
    out: Passthrough,
}

impl BlackholeStage {
    /// Adds an outage window.
    pub fn add_window(&mut self, window: Range<Duration>) {
        self.windows.push(window);
    }
}

impl Stage for BlackholeStage {
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters) {
        if self.windows.iter().any(|w| w.contains(&at)) {
            counters.dropped_blackhole.add(packet.len());
        } else {
            self.out.0.push_back((packet, at));
        }
    }

    fn next_due(&self) -> Option<Duration> {
        self.out.next_due()
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        self.out.pop_due(now)
    }
}

/// Random loss, Bernoulli or Gilbert-Elliott.
#[derive(Debug)]
pub struct LossStage {
    model: LossModel,
    in_bad_state: bool,
    rng: ChaCha8Rng,
    out: Passthrough,
}

impl LossStage {
    /// A loss stage drawing from a ChaCha8 stream seeded with `seed`.
    pub fn new(model: LossModel, seed: u64) -> Self {
        Self { model, in_bad_state: false, rng: ChaCha8Rng::seed_from_u64(seed), out: Passthrough::default() }
    }

    /// Changes the model; a Gilbert-Elliott chain keeps its state if the new model is Gilbert-Elliott too.
    pub fn set_model(&mut self, model: LossModel) {
        if !matches!(model, LossModel::GilbertElliott { .. }) {
            self.in_bad_state = false;
        }
        self.model = model;
    }

    fn lose(&mut self) -> bool {
        match self.model {
            LossModel::None => false,
            LossModel::Bernoulli { p } => self.rng.random_bool(p),
            LossModel::GilbertElliott { p, r, loss_good, loss_bad } => {
                let (loss, leave) = if self.in_bad_state { (loss_bad, r) } else { (loss_good, p) };
                let lost = self.rng.random_bool(loss);
                if self.rng.random_bool(leave) {
                    self.in_bad_state = !self.in_bad_state;
                }
                lost
            }
        }
    }
}

impl Stage for LossStage {
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters) {
        if self.lose() {
            counters.dropped_loss.add(packet.len());
        } else {
            self.out.0.push_back((packet, at));
        }
    }

    fn next_due(&self) -> Option<Duration> {
        self.out.next_due()
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        self.out.pop_due(now)
    }
}

/// Sends a packet twice with a given probability (the copy right behind the original).
#[derive(Debug)]
pub struct DuplicateStage {
    probability: f64,
    rng: ChaCha8Rng,
    out: Passthrough,
}

impl DuplicateStage {
    /// A duplication stage drawing from a ChaCha8 stream seeded with `seed`.
    pub fn new(probability: f64, seed: u64) -> Self {
        Self { probability, rng: ChaCha8Rng::seed_from_u64(seed), out: Passthrough::default() }
    }

    /// Changes the duplication probability.
    pub fn set_probability(&mut self, probability: f64) {
        self.probability = probability;
    }
}

impl Stage for DuplicateStage {
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters) {
        if self.probability > 0.0 && self.rng.random_bool(self.probability) {
            counters.duplicated.add(packet.len());
            self.out.0.push_back((packet.clone(), at));
        }
        self.out.0.push_back((packet, at));
    }

    fn next_due(&self) -> Option<Duration> {
        self.out.next_due()
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        self.out.pop_due(now)
    }
}

/// Inverts one random byte of a packet with a given probability.
#[derive(Debug)]
pub struct CorruptStage {
    probability: f64,
    rng: ChaCha8Rng,
    out: Passthrough,
}

impl CorruptStage {
    /// A corruption stage drawing from a ChaCha8 stream seeded with `seed`.
    pub fn new(probability: f64, seed: u64) -> Self {
        Self { probability, rng: ChaCha8Rng::seed_from_u64(seed), out: Passthrough::default() }
    }

    /// Changes the corruption probability.
    pub fn set_probability(&mut self, probability: f64) {
        self.probability = probability;
    }
}

impl Stage for CorruptStage {
    fn push(&mut self, mut packet: InFlight, at: Duration, counters: &mut Counters) {
        if !packet.is_empty() && self.probability > 0.0 && self.rng.random_bool(self.probability) {
            let i = self.rng.random_range(0..packet.len());
            packet.packet[i] ^= 0xff;
            counters.corrupted.add(packet.len());
        }
        self.out.0.push_back((packet, at));
    }

    fn next_due(&self) -> Option<Duration> {
        self.out.next_due()
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        self.out.pop_due(now)
    }
}

/// How the bottleneck serialises the packet at the head of its queue.
#[derive(Debug)]
enum Server {
    Unlimited,
    Rate { bits_per_second: u64 },
    /// `next` counts opportunities since `start` across wraps; `left` is what opportunity `next` can still carry.
    Trace { trace: Arc<DeliveryTrace>, start: Duration, next: u64, left: u64 },
}

impl Server {
    fn new(bottleneck: &Bottleneck, now: Duration) -> Self {
        match bottleneck {
            Bottleneck::Unlimited => Server::Unlimited,
            Bottleneck::Rate { bits_per_second } => Server::Rate { bits_per_second: *bits_per_second },
            Bottleneck::Trace(trace) => Server::Trace {
                trace: Arc::clone(trace),
                start: now,
                next: 0,
                left: u64::from(DeliveryTrace::BYTES_PER_OPPORTUNITY),
            },
        }
    }

    /// Departure time of a `len`-byte packet whose serialisation may begin at `start`.
    fn finish_time(&mut self, start: Duration, len: usize) -> Duration {
        match self {
            Server::Unlimited => start,
            Server::Rate { bits_per_second } => {
                // Round up: rounding down would let the link run faster than configured.
                let ns = (len as u128 * 8 * 1_000_000_000).div_ceil(u128::from(*bits_per_second));
                start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
            }
            Server::Trace { trace, start: origin, next, left } => {
                let slot = u64::from(DeliveryTrace::BYTES_PER_OPPORTUNITY);
                let first = trace.first_opportunity_at_or_after(start.saturating_sub(*origin));
                if first > *next {
                    // The opportunities in between found the queue empty and were wasted.
                    *next = first;
                    *left = slot;
                }
                let mut remaining = len as u64;
                loop {
                    if *left == 0 {
                        *next += 1;
                        *left = slot;
                    }
                    let take = remaining.min(*left);
                    remaining -= take;
                    *left -= take;
                    if remaining == 0 {
                        return *origin + trace.opportunity(*next);
                    }
                }
            }
        }
    }
}

/// The bottleneck: a drop-tail queue bounded in bytes, served at a fixed rate or by a delivery trace. A packet
/// departs when its last byte has been sent; the queue's bytes include the packet being sent.
#[derive(Debug)]
pub struct BottleneckStage {
    config: Bottleneck,
    server: Server,
    queue_limit: Option<u64>,
    queue: VecDeque<(InFlight, Duration)>,
    queued_bytes: u64,
    head_departs: Option<Duration>,
}

impl BottleneckStage {
    /// A bottleneck whose trace (if any) starts at time zero.
    pub fn new(bottleneck: Bottleneck, queue_limit: Option<u64>) -> Self {
        Self {
            server: Server::new(&bottleneck, Duration::ZERO),
            config: bottleneck,
            queue_limit,
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_departs: None,
        }
    }

    /// Reconfigures at `now`. The packet being sent finishes under the old setting; a new trace starts at `now`;
    /// packets already queued beyond a smaller bound stay queued (the bound applies to arrivals).
    pub fn reconfigure(&mut self, bottleneck: &Bottleneck, queue_limit: Option<u64>, now: Duration) {
        if *bottleneck != self.config {
            self.server = Server::new(bottleneck, now);
            self.config = bottleneck.clone();
        }
        self.queue_limit = queue_limit;
    }

    /// Bytes currently queued, including the packet being sent.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }
}

impl Stage for BottleneckStage {
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters) {
        let len = packet.len() as u64;
        if self.queue_limit.is_some_and(|limit| self.queued_bytes + len > limit) {
            counters.dropped_queue.add(packet.len());
            return;
        }
        if self.queue.is_empty() {
            self.head_departs = Some(self.server.finish_time(at, packet.len()));
        }
        self.queued_bytes += len;
        self.queue.push_back((packet, at));
    }

    fn next_due(&self) -> Option<Duration> {
        self.head_departs
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        let departs = self.head_departs.filter(|&t| t <= now)?;
        let (packet, _) = self.queue.pop_front()?;
        self.queued_bytes -= packet.len() as u64;
        self.head_departs = match self.queue.front() {
            Some((next, arrived)) => Some(self.server.finish_time((*arrived).max(departs), next.len())),
            None => None,
        };
        Some((packet, departs))
    }
}

/// A packet held by the delay stage, ordered by departure time and then arrival order.
#[derive(Debug)]
struct Held {
    departs: Duration,
    seq: u64,
    packet: InFlight,
    min_delay: Duration,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.departs, self.seq) == (other.departs, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.departs, self.seq).cmp(&(other.departs, other.seq))
    }
}

/// How the delay stage draws a packet's extra delay.
#[derive(Debug)]
enum Extra {
    None,
    /// Reordering allowed: an independent draw per packet.
    PerPacket(JitterSampler),
    /// Order kept: the value at the packet's time of one delay process (see [`crate::jitter`]), so the delay a
    /// packet sees does not depend on how many packets there are.
    Process(DelayProcess),
}

/// Fixed delay plus optional jitter. Without reordering a packet departs no earlier than its predecessor: the
/// order-keeping delay process guarantees it by itself, and a clamp to the latest departure covers the moments
/// the settings change (a shrinking delay).
#[derive(Debug)]
pub struct DelayStage {
    delay: Duration,
    jitter: Option<Jitter>,
    extra: Extra,
    rng: ChaCha8Rng,
    held: BinaryHeap<Reverse<Held>>,
    seq: u64,
    latest_departure: Duration,
}

impl DelayStage {
    /// A delay stage drawing jitter from a ChaCha8 stream seeded with `seed`, its delay process starting at zero.
    pub fn new(delay: Duration, jitter: Option<Jitter>, seed: u64) -> Self {
        let mut stage = Self {
            delay,
            jitter: None,
            extra: Extra::None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            held: BinaryHeap::new(),
            seq: 0,
            latest_departure: Duration::ZERO,
        };
        stage.reconfigure(delay, jitter, Duration::ZERO);
        stage
    }

    /// Changes delay and jitter for packets arriving from `now` on; held packets keep their departure times. An
    /// unchanged jitter keeps its delay process running; a changed one starts a new process at `now`.
    pub fn reconfigure(&mut self, delay: Duration, jitter: Option<Jitter>, now: Duration) {
        self.delay = delay;
        if jitter == self.jitter {
            return;
        }
        self.jitter = jitter;
        self.extra = match jitter {
            Some(j) if j.reorder => JitterSampler::new(&j).map_or(Extra::None, Extra::PerPacket),
            Some(j) => DelayProcess::new(&j, now, &mut self.rng).map_or(Extra::None, Extra::Process),
            None => Extra::None,
        };
    }

    /// Removes the next packet if it departs at or before `now`.
    pub fn pop_release(&mut self, now: Duration) -> Option<Release> {
        if self.next_due()? > now {
            return None;
        }
        self.held.pop().map(|Reverse(h)| Release {
            packet: h.packet.packet,
            arrived: h.packet.arrived,
            departs: h.departs,
            min_delay: h.min_delay,
        })
    }
}

impl Stage for DelayStage {
    fn push(&mut self, packet: InFlight, at: Duration, _counters: &mut Counters) {
        let extra = match &mut self.extra {
            Extra::None => Duration::ZERO,
            Extra::PerPacket(sampler) => sampler.sample(&mut self.rng),
            Extra::Process(process) => process.at(at, &mut self.rng),
        };
        let mut departs = at + self.delay + extra;
        if !matches!(self.extra, Extra::PerPacket(_)) {
            departs = departs.max(self.latest_departure);
        }
        self.latest_departure = self.latest_departure.max(departs);
        self.seq += 1;
        self.held.push(Reverse(Held { departs, seq: self.seq, packet, min_delay: self.delay }));
    }

    fn next_due(&self) -> Option<Duration> {
        self.held.peek().map(|Reverse(h)| h.departs)
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        self.pop_release(now).map(|r| (InFlight { packet: r.packet, arrived: r.arrived }, r.departs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A packet with these bytes that entered the link at `at`.
    fn fly(packet: Packet, at: Duration) -> InFlight {
        InFlight { packet, arrived: at }
    }

    fn drain(stage: &mut impl Stage, now: Duration) -> Vec<(usize, Duration)> {
        std::iter::from_fn(|| stage.pop_due(now)).map(|(p, t)| (p.len(), t)).collect()
    }

    #[test]
    fn rate_serialises_back_to_back_and_drops_at_the_byte_bound() {
        // 1500 bytes at 12 Mbit/s take exactly 1 ms.
        let mut s = BottleneckStage::new(Bottleneck::Rate { bits_per_second: 12_000_000 }, Some(3000));
        let mut c = Counters::default();
        for _ in 0..3 {
            s.push(fly(vec![0; 1500], ms(0)), ms(0), &mut c);
        }
        assert_eq!(c.dropped_queue.packets, 1);
        assert_eq!(s.queued_bytes(), 3000);
        assert_eq!(s.pop_due(ms(0) + Duration::from_nanos(999_999)), None);
        assert_eq!(drain(&mut s, ms(10)), [(1500, ms(1)), (1500, ms(2))]);
        // An idle link starts serialising at the arrival, not at the previous departure.
        s.push(fly(vec![0; 1500], ms(5)), ms(5), &mut c);
        assert_eq!(drain(&mut s, ms(10)), [(1500, ms(6))]);
    }

    #[test]
    fn trace_packs_small_packets_into_one_opportunity_and_spreads_big_ones() {
        let trace = Arc::new(DeliveryTrace::parse("2\n4\n6\n").unwrap());
        let mut s = BottleneckStage::new(Bottleneck::Trace(trace), None);
        let mut c = Counters::default();
        for len in [500, 500, 500, 2000] {
            s.push(fly(vec![0; len], ms(0)), ms(0), &mut c);
        }
        // Three 500-byte packets share the opportunity at 2 ms; 2000 bytes need the ones at 4 and 6 ms.
        assert_eq!(drain(&mut s, ms(100)), [(500, ms(2)), (500, ms(2)), (500, ms(2)), (2000, ms(6))]);
        // Opportunities at 8 (wrapped 2) … 16 find the queue empty and are wasted;
        // a packet arriving at 17 ms leaves at 18 (the wrapped 6).
        s.push(fly(vec![0; 100], ms(17)), ms(17), &mut c);
        assert_eq!(drain(&mut s, ms(100)), [(100, ms(18))]);
    }

    #[test]
    fn delay_without_reorder_keeps_order_even_when_the_delay_shrinks() {
        let mut s = DelayStage::new(ms(50), None, 1);
        let mut c = Counters::default();
        s.push(fly(vec![1], ms(0)), ms(0), &mut c);
        s.reconfigure(ms(10), None, ms(1));
        s.push(fly(vec![2], ms(1)), ms(1), &mut c);
        assert_eq!(s.pop_due(ms(49)), None);
        let out: Vec<_> = std::iter::from_fn(|| s.pop_due(ms(60))).collect();
        assert_eq!(out, [(fly(vec![1], ms(0)), ms(50)), (fly(vec![2], ms(1)), ms(50))]);
    }

    #[test]
    fn gilbert_elliott_with_certain_transitions_alternates() {
        // Good never loses, Bad always does, and the chain flips after every packet: lose every second packet.
        let model = LossModel::GilbertElliott { p: 1.0, r: 1.0, loss_good: 0.0, loss_bad: 1.0 };
        let mut s = LossStage::new(model, 3);
        let mut c = Counters::default();
        for i in 0..10u8 {
            s.push(fly(vec![i], ms(0)), ms(0), &mut c);
        }
        let kept: Vec<u8> = std::iter::from_fn(|| s.pop_due(ms(0))).map(|(p, _)| p.packet[0]).collect();
        assert_eq!(kept, [0, 2, 4, 6, 8]);
        assert_eq!(c.dropped_loss.packets, 5);
    }

    #[test]
    fn corruption_flips_exactly_one_byte() {
        let mut s = CorruptStage::new(1.0, 9);
        let mut c = Counters::default();
        s.push(fly(vec![0; 64], ms(0)), ms(0), &mut c);
        let (p, _) = s.pop_due(ms(0)).unwrap();
        assert_eq!(p.packet.iter().filter(|&&b| b == 0xff).count(), 1);
        assert_eq!(p.packet.iter().filter(|&&b| b == 0).count(), 63);
        assert_eq!(c.corrupted.packets, 1);
    }
}
