//! One direction of the link: the stage chain, its counters, and the discrete-event stepping that moves packets
//! between stages at their exact due times whatever the caller's `now` granularity.

use std::time::Duration;

use crate::Packet;
use crate::impairments::Impairments;
use crate::seed::derive_seed;
use crate::targeted::{DropRule, RuleId, RuleStatus, TargetedDrop, TargetedStage};
use crate::stage::{
    BlackholeStage, BottleneckStage, CorruptStage, DelayStage, DuplicateStage, InFlight, LossStage, Release, Stage,
};

/// A packet and byte count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Number of packets.
    pub packets: u64,
    /// Sum of their lengths in bytes.
    pub bytes: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// What happened to the packets of one direction. Once the pipeline is empty,
/// `input + duplicated = output + dropped_targeted + dropped_loss + dropped_queue + dropped_blackhole`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets pushed into the direction.
    pub input: Tally,
    /// Packets released by the direction.
    pub output: Tally,
    /// Packets dropped by an armed [`DropRule`].
    pub dropped_targeted: Tally,
    /// Packets dropped by the random loss model.
    pub dropped_loss: Tally,
    /// Packets dropped because the bottleneck queue was full.
    pub dropped_queue: Tally,
    /// Packets dropped inside a blackhole window.
    pub dropped_blackhole: Tally,
    /// Extra copies created by duplication.
    pub duplicated: Tally,
    /// Packets that had a byte corrupted.
    pub corrupted: Tally,
}

/// One direction of a link: targeted drops → blackhole → loss → duplicate → corrupt → bottleneck → delay, on virtual time.
///
/// Drive it with [`Pipeline::push`] when a packet arrives, and [`Pipeline::poll_release`] until it returns `None`
/// whenever the time reaches [`Pipeline::next_release_time`]. Times must not go backwards; an earlier `now` is
/// treated as the latest time seen.
#[derive(Debug)]
pub struct Pipeline {
    config: Impairments,
    targeted: TargetedStage,
    blackhole: BlackholeStage,
    loss: LossStage,
    duplicate: DuplicateStage,
    corrupt: CorruptStage,
    bottleneck: BottleneckStage,
    delay: DelayStage,
    counters: Counters,
    clock: Duration,
}

impl Pipeline {
    /// A pipeline applying `config`, with every random stream derived from `seed`.
    pub fn new(config: Impairments, seed: u64) -> Self {
        Self {
            targeted: TargetedStage::default(),
            blackhole: BlackholeStage::default(),
            loss: LossStage::new(config.loss, derive_seed(seed, "loss")),
            duplicate: DuplicateStage::new(config.duplicate, derive_seed(seed, "duplicate")),
            corrupt: CorruptStage::new(config.corrupt, derive_seed(seed, "corrupt")),
            bottleneck: BottleneckStage::new(config.bottleneck.clone(), config.queue_bytes),
            delay: DelayStage::new(config.delay, config.jitter, derive_seed(seed, "delay")),
            counters: Counters::default(),
            clock: Duration::ZERO,
            config,
        }
    }

    /// The impairments currently applied.
    pub fn impairments(&self) -> &Impairments {
        &self.config
    }

    /// Counters since the pipeline was created.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes waiting in (or being sent by) the bottleneck queue.
    pub fn queued_bytes(&self) -> u64 {
        self.bottleneck.queued_bytes()
    }

    /// Applies `config` from `now` on. Packets already past a stage keep the treatment they got there.
    pub fn set_impairments(&mut self, now: Duration, config: Impairments) {
        self.advance(now);
        self.loss.set_model(config.loss);
        self.duplicate.set_probability(config.duplicate);
        self.corrupt.set_probability(config.corrupt);
        self.bottleneck.reconfigure(&config.bottleneck, config.queue_bytes, self.clock);
        self.delay.reconfigure(config.delay, config.jitter, self.clock);
        self.config = config;
    }

    /// Drops every packet pushed at a time inside `window`.
    pub fn add_blackhole(&mut self, window: std::ops::Range<Duration>) {
        self.blackhole.add_window(window);
    }

    /// Arms a targeted-drop rule under `id` (the rule's direction is the caller's business).
    pub fn arm_drop(&mut self, id: RuleId, rule: DropRule) {
        self.targeted.arm(id, rule);
    }

    /// What each armed rule has matched and dropped.
    pub fn drop_rules(&self) -> Vec<RuleStatus> {
        self.targeted.rules().collect()
    }

    /// The targeted drops logged since the last call.
    pub fn take_drops(&mut self) -> Vec<TargetedDrop> {
        self.targeted.take_drops()
    }

    /// Feeds a packet that arrived at `now`.
    pub fn push(&mut self, packet: Packet, now: Duration) {
        self.advance(now);
        self.counters.input.add(packet.len());
        self.targeted.push(InFlight { packet, arrived: self.clock }, self.clock, &mut self.counters);
        // Let the packet pass the instantaneous stages now, so that `next_release_time` is not merely "now".
        self.advance(now);
    }

    /// Returns the next packet whose release time is at or before `now`, if any.
    pub fn poll_release(&mut self, now: Duration) -> Option<Packet> {
        self.poll_release_timed(now).map(|r| r.packet)
    }

    /// Like [`Pipeline::poll_release`], with the packet's arrival, due time and fixed delay, so that an I/O loop
    /// can check it never releases a packet early.
    pub fn poll_release_timed(&mut self, now: Duration) -> Option<Release> {
        self.advance(now);
        let release = self.delay.pop_release(self.clock)?;
        self.counters.output.add(release.packet.len());
        Some(release)
    }

    /// When the pipeline next needs attention: never later than the next release. It may be earlier (a packet
    /// moving between internal stages), in which case [`Pipeline::poll_release`] at that time returns `None`.
    pub fn next_release_time(&self) -> Option<Duration> {
        self.stages_ref().iter().filter_map(|s| s.next_due()).min()
    }

    fn stages_ref(&self) -> [&dyn Stage; 7] {
        [&self.targeted, &self.blackhole, &self.loss, &self.duplicate, &self.corrupt, &self.bottleneck, &self.delay]
    }

    /// Moves packets between stages, earliest due first, until nothing internal is due at or before `now`.
    /// Taking the global minimum each time means every stage sees arrivals in time order.
    fn advance(&mut self, now: Duration) {
        self.clock = self.clock.max(now);
        let Self { targeted, blackhole, loss, duplicate, corrupt, bottleneck, delay, counters, clock, .. } = self;
        let stages: [&mut dyn Stage; 7] = [targeted, blackhole, loss, duplicate, corrupt, bottleneck, delay];
        loop {
            // Iterating downstream-first with a strict `<` resolves ties in favour of departures, so a queue
            // frees its space before a simultaneous arrival is judged.
            let mut earliest: Option<(usize, Duration)> = None;
            for i in (0..stages.len() - 1).rev() {
                let due = stages[i].next_due().filter(|&t| t <= *clock);
                if let Some(t) = due.filter(|&t| earliest.is_none_or(|(_, e)| t < e)) {
                    earliest = Some((i, t));
                }
            }
            let Some((i, _)) = earliest else { break };
            let (packet, at) = stages[i].pop_due(*clock).expect("stage reported a due packet");
            stages[i + 1].push(packet, at, counters);
        }
    }
}
