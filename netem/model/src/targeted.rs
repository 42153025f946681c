//! Targeted drops: the controlled experiment's scalpel. A [`DropRule`] names a direction, a range of IP packet
//! lengths, a time window and how many packets to drop; the [`TargetedStage`] at the head of that direction's
//! pipeline drops exactly the first `count` packets that match (plus, for the retransmission-timeout variant, the
//! next `retransmissions` matching ones — with a message size no other traffic has, those are its retransmissions)
//! and logs each drop with its time. A rule with `count = 0` drops nothing and only counts matches, which is how a
//! workload checks from the link's side how many packets its messages took.
//!
//! Times are link time (the `now` the pipeline is driven with); the I/O layer converts them to the monotonic clock.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::link::Direction;
use crate::pipeline::Counters;
use crate::stage::{InFlight, Stage};

/// Identifies an armed rule within its link.
pub type RuleId = u64;

/// Which packets to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropRule {
    /// The direction the rule watches.
    pub direction: Direction,
    /// IP packet lengths (header included) that match.
    pub sizes: RangeInclusive<usize>,
    /// Packets entering the link before this time do not match.
    pub not_before: Duration,
    /// Packets entering at or after this time do not match (`None`: no end).
    pub until: Option<Duration>,
    /// How many matching packets to drop (0: only count matches).
    pub count: u32,
    /// How many further matching packets to drop once `count` are dropped: their retransmissions, when the
    /// matching size is unique to the targeted message (the retransmission-timeout path).
    pub retransmissions: u32,
}

impl DropRule {
    /// A rule dropping the first packet of `sizes` entering `direction` at or after `not_before`, once.
    pub fn once(direction: Direction, sizes: RangeInclusive<usize>, not_before: Duration) -> Self {
        Self { direction, sizes, not_before, until: None, count: 1, retransmissions: 0 }
    }

    /// The same rule, matching only packets entering before `until`.
    pub fn until(self, until: Duration) -> Self {
        Self { until: Some(until), ..self }
    }

    /// The same rule, also dropping the next `n` matching packets (the retransmissions).
    pub fn with_retransmissions(self, n: u32) -> Self {
        Self { retransmissions: n, ..self }
    }

    fn matches(&self, len: usize, at: Duration) -> bool {
        self.sizes.contains(&len) && at >= self.not_before && self.until.is_none_or(|u| at < u)
    }
}

/// One packet a rule dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetedDrop {
    /// When the packet entered the link (link time).
    pub at: Duration,
    /// The rule that dropped it.
    pub rule: RuleId,
    /// Its direction.
    pub direction: Direction,
    /// Its IP length.
    pub len: usize,
    /// Whether it was one of the rule's `retransmissions` rather than one of its first `count`.
    pub retransmission: bool,
}

/// What an armed rule has seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleStatus {
    /// The rule.
    pub id: RuleId,
    /// Packets that matched (dropped or not).
    pub matched: u64,
    /// Packets it dropped.
    pub dropped: u32,
}

#[derive(Debug)]
struct Armed {
    rule: DropRule,
    status: RuleStatus,
}

/// The targeted-drop stage of one direction: the first stage, so it judges packets as they enter the link.
#[derive(Debug, Default)]
pub struct TargetedStage {
    rules: Vec<Armed>,
    log: Vec<TargetedDrop>,
    out: VecDeque<(InFlight, Duration)>,
}

impl TargetedStage {
    /// Arms `rule` under `id`.
    pub fn arm(&mut self, id: RuleId, rule: DropRule) {
        self.rules.push(Armed { rule, status: RuleStatus { id, matched: 0, dropped: 0 } });
    }

    /// Every rule armed so far, in arming order.
    pub fn rules(&self) -> impl Iterator<Item = RuleStatus> + '_ {
        self.rules.iter().map(|a| a.status)
    }

    /// Removes and returns the drops logged since the last call, in time order.
    pub fn take_drops(&mut self) -> Vec<TargetedDrop> {
        std::mem::take(&mut self.log)
    }
}

impl Stage for TargetedStage {
    fn push(&mut self, packet: InFlight, at: Duration, counters: &mut Counters) {
        let len = packet.len();
        let mut dropped = false;
        // Every matching rule counts the packet; the first one with budget left drops it.
        for armed in self.rules.iter_mut().filter(|a| a.rule.matches(len, at)) {
            armed.status.matched += 1;
            let DropRule { count, retransmissions, direction, .. } = armed.rule;
            if !dropped && armed.status.dropped < count + retransmissions {
                dropped = true;
                armed.status.dropped += 1;
                let retransmission = armed.status.dropped > count;
                self.log.push(TargetedDrop { at, rule: armed.status.id, direction, len, retransmission });
            }
        }
        if dropped {
            counters.dropped_targeted.add(len);
        } else {
            self.out.push_back((packet, at));
        }
    }

    fn next_due(&self) -> Option<Duration> {
        self.out.front().map(|(_, at)| *at)
    }

    fn pop_due(&mut self, now: Duration) -> Option<(InFlight, Duration)> {
        if self.next_due()? <= now { self.out.pop_front() } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Pushes packets of `lens` at 1 ms apart starting at 0 and returns the lengths that passed.
    fn run(stage: &mut TargetedStage, lens: &[usize]) -> (Vec<usize>, Counters) {
        let mut counters = Counters::default();
        let mut passed = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let at = ms(i as u64);
            stage.push(InFlight { packet: vec![0; len], arrived: at }, at, &mut counters);
            while let Some((p, departs)) = stage.pop_due(at) {
                assert_eq!(departs, at, "a targeted stage never delays");
                passed.push(p.len());
            }
        }
        (passed, counters)
    }

    #[test]
    fn drops_the_first_matching_packet_once_and_logs_its_time() {
        let mut stage = TargetedStage::default();
        stage.arm(7, DropRule::once(Direction::Uplink, 800..=900, ms(3)));
        // 850 at 1 ms is too early; the 850 at 4 ms is the one; the 850 at 6 ms passes (once).
        let (passed, counters) = run(&mut stage, &[100, 850, 100, 100, 850, 100, 850]);
        assert_eq!(passed, [100, 850, 100, 100, 100, 850]);
        assert_eq!(counters.dropped_targeted.packets, 1);
        let drops = stage.take_drops();
        assert_eq!(drops, [TargetedDrop { at: ms(4), rule: 7, direction: Direction::Uplink, len: 850, retransmission: false }]);
        assert!(stage.take_drops().is_empty(), "the log is handed out once");
        assert_eq!(stage.rules().collect::<Vec<_>>(), [RuleStatus { id: 7, matched: 2, dropped: 1 }]);
    }

    #[test]
    fn never_drops_a_packet_that_does_not_match() {
        let mut stage = TargetedStage::default();
        // Sizes just outside the range, and a matching size after the window closed.
        stage.arm(1, DropRule::once(Direction::Downlink, 800..=900, ms(0)).until(ms(5)));
        let lens = [799, 901, 100, 1500, 60, 850];
        let (passed, counters) = run(&mut stage, &lens);
        assert_eq!(passed, lens);
        assert_eq!(counters, Counters::default());
        assert!(stage.take_drops().is_empty());
    }

    #[test]
    fn the_retransmission_variant_drops_the_next_match_too() {
        let mut stage = TargetedStage::default();
        stage.arm(2, DropRule::once(Direction::Uplink, 800..=900, ms(0)).with_retransmissions(1));
        let (passed, _) = run(&mut stage, &[850, 100, 860, 100, 850]);
        assert_eq!(passed, [100, 100, 850]);
        let drops = stage.take_drops();
        assert_eq!(drops.iter().map(|d| (d.at, d.retransmission)).collect::<Vec<_>>(), [(ms(0), false), (ms(2), true)]);
    }

    #[test]
    fn through_a_delayed_link_only_the_marker_is_lost_and_the_log_has_its_entry_time() {
        use crate::{Impairments, Link};
        let delay = Impairments { delay: ms(20), ..Impairments::default() };
        let mut link = Link::new(delay.clone(), delay, 1);
        let rule = link.arm_drop(DropRule::once(Direction::Uplink, 900..=950, ms(10)).until(ms(100)));
        // A marker-sized packet downlink (other direction) and uplink at 5 ms (too early), 12 ms (the one), 14 ms.
        let sent = [(Direction::Downlink, 920, 11), (Direction::Uplink, 920, 5), (Direction::Uplink, 100, 11), (Direction::Uplink, 920, 12), (Direction::Uplink, 920, 14)];
        for &(d, len, at) in &sent {
            link.push(d, vec![0; len], ms(at));
        }
        let mut arrived = Vec::new();
        for t in 0..100 {
            for d in [Direction::Uplink, Direction::Downlink] {
                while let Some(r) = link.poll_release_timed(d, ms(t)) {
                    arrived.push((d, r.packet.len(), r.arrived));
                }
            }
        }
        assert_eq!(arrived.len(), sent.len() - 1);
        assert!(!arrived.contains(&(Direction::Uplink, 920, ms(12))));
        let drops = link.take_drops();
        assert_eq!(drops, [TargetedDrop { at: ms(12), rule, direction: Direction::Uplink, len: 920, retransmission: false }]);
        assert_eq!(link.pipeline(Direction::Uplink).counters().dropped_targeted.packets, 1);
        assert_eq!(link.drop_rules(), [RuleStatus { id: rule, matched: 2, dropped: 1 }]);
    }

    #[test]
    fn a_counting_rule_drops_nothing_and_counts_matches() {
        let mut stage = TargetedStage::default();
        stage.arm(3, DropRule { count: 0, ..DropRule::once(Direction::Uplink, 100..=200, ms(1)) });
        let (passed, _) = run(&mut stage, &[150, 150, 60, 150]);
        assert_eq!(passed.len(), 4);
        assert_eq!(stage.rules().next(), Some(RuleStatus { id: 3, matched: 2, dropped: 0 }));
    }
}
