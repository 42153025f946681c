//! The two-way link: an uplink and a downlink [`Pipeline`], plus the time schedule of impairment changes and of
//! events (address change, NAT rebinding) that only the I/O layer can carry out.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use crate::Packet;
use crate::impairments::{Impairments, ImpairmentsPatch};
use crate::pipeline::Pipeline;
use crate::profile::{Profile, ScheduleAction};
use crate::seed::derive_seed;
use crate::stage::Release;
use crate::targeted::{DropRule, RuleId, RuleStatus, TargetedDrop};

/// One direction of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → server.
    Uplink,
    /// Server → client.
    Downlink,
}

/// Which directions a change applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Uplink and downlink.
    #[default]
    Both,
    /// Client → server only.
    Uplink,
    /// Server → client only.
    Downlink,
}

impl Target {
    fn directions(self) -> &'static [Direction] {
        match self {
            Target::Both => &[Direction::Uplink, Direction::Downlink],
            Target::Uplink => &[Direction::Uplink],
            Target::Downlink => &[Direction::Downlink],
        }
    }
}

/// Something the I/O layer must do because the schedule says so; the model itself cannot rewrite routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The client moves to a new IP address (its packets leave from the new address from now on); everything
    /// from or to the old address vanishes on the path.
    AddressChange {
        /// What happens to the client's TCP connections bound to the old address.
        tcp: TcpOnMove,
    },
    /// A NAT between client and server gives the client's flows a new public address *and* port (see
    /// [`crate::nat::Nat`]).
    NatRebind {
        /// How long the NAT still forwards packets sent to the old mapping; zero = it is gone at once.
        old_mapping: Duration,
    },
}

/// What happens to the client's TCP connections when its address changes (profile key `tcp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpOnMove {
    /// Aborted at once (ECONNABORTED), as a mobile OS does when it leaves a network.
    #[default]
    Abort,
    /// Left alone: their packets vanish with the old address, and TCP finds out by itself (retransmission timeout,
    /// or the application's own heartbeat).
    Silent,
}

/// A scheduled event that has come due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    /// When it was scheduled (≤ the `now` at which it was polled).
    pub at: Duration,
    /// What to do.
    pub kind: EventKind,
}

#[derive(Debug)]
struct Change {
    at: Duration,
    target: Target,
    patch: ImpairmentsPatch,
}

/// A two-way emulated link on virtual time (`now` = time since the link started).
///
/// An I/O loop pushes each packet read from a side with [`Link::push`], writes out whatever
/// [`Link::poll_release`] returns, acts on [`Link::poll_event`], and sleeps until [`Link::next_wakeup`] or the next
/// read. Scheduled impairment changes are applied at their exact time, however late the loop calls in.
#[derive(Debug)]
pub struct Link {
    uplink: Pipeline,
    downlink: Pipeline,
    changes: VecDeque<Change>,
    events: VecDeque<LinkEvent>,
    next_rule: RuleId,
}

impl Link {
    /// A link with the given settings per direction; each direction's randomness derives from `seed`.
    pub fn new(uplink: Impairments, downlink: Impairments, seed: u64) -> Self {
        Self {
            uplink: Pipeline::new(uplink, derive_seed(seed, "uplink")),
            downlink: Pipeline::new(downlink, derive_seed(seed, "downlink")),
            changes: VecDeque::new(),
            events: VecDeque::new(),
            next_rule: 0,
        }
    }

    /// A link configured by `profile`, its schedule included.
    pub fn from_profile(profile: &Profile, seed: u64) -> Self {
        let mut link = Self::new(profile.uplink.clone(), profile.downlink.clone(), seed);
        for entry in &profile.schedule {
            match &entry.action {
                ScheduleAction::Change { target, patch } => link.schedule_change(entry.at, *target, patch.clone()),
                ScheduleAction::Blackhole { target, duration } => {
                    link.add_blackhole(*target, entry.at..entry.at + *duration);
                }
                ScheduleAction::Event(kind) => link.schedule_event(entry.at, *kind),
            }
        }
        link
    }

    /// Schedules `patch` to be applied to `target` at `at`.
    pub fn schedule_change(&mut self, at: Duration, target: Target, patch: ImpairmentsPatch) {
        let i = self.changes.partition_point(|c| c.at <= at);
        self.changes.insert(i, Change { at, target, patch });
    }

    /// Schedules an event to be reported by [`Link::poll_event`] from `at` on.
    pub fn schedule_event(&mut self, at: Duration, kind: EventKind) {
        let i = self.events.partition_point(|e| e.at <= at);
        self.events.insert(i, LinkEvent { at, kind });
    }

    /// Drops every packet entering `target` during `window`.
    pub fn add_blackhole(&mut self, target: Target, window: Range<Duration>) {
        for &d in target.directions() {
            self.pipeline_mut(d).add_blackhole(window.clone());
        }
    }

    /// Arms a targeted-drop rule on its direction; returns its id (the `rule` of its drops).
    pub fn arm_drop(&mut self, rule: DropRule) -> RuleId {
        let id = self.next_rule;
        self.next_rule += 1;
        self.pipeline_mut(rule.direction).arm_drop(id, rule);
        id
    }

    /// What every armed rule has matched and dropped, uplink rules first.
    pub fn drop_rules(&self) -> Vec<RuleStatus> {
        let mut rules = self.uplink.drop_rules();
        rules.extend(self.downlink.drop_rules());
        rules
    }

    /// The targeted drops of both directions logged since the last call, in time order.
    pub fn take_drops(&mut self) -> Vec<TargetedDrop> {
        let mut drops = self.uplink.take_drops();
        drops.extend(self.downlink.take_drops());
        drops.sort_by_key(|d| d.at);
        drops
    }

    /// Replaces the impairments of `target` from `now` on.
    pub fn set_impairments(&mut self, now: Duration, target: Target, impairments: Impairments) {
        self.apply_due_changes(now);
        for &d in target.directions() {
            self.pipeline_mut(d).set_impairments(now, impairments.clone());
        }
    }

    /// Feeds a packet that entered the link in `direction` at `now`.
    pub fn push(&mut self, direction: Direction, packet: Packet, now: Duration) {
        self.apply_due_changes(now);
        self.pipeline_mut(direction).push(packet, now);
    }

    /// The next packet leaving the link in `direction` at or before `now`, if any.
    pub fn poll_release(&mut self, direction: Direction, now: Duration) -> Option<Packet> {
        self.poll_release_timed(direction, now).map(|r| r.packet)
    }

    /// Like [`Link::poll_release`], with the packet's arrival, due time and fixed delay (see [`Release`]).
    pub fn poll_release_timed(&mut self, direction: Direction, now: Duration) -> Option<Release> {
        self.apply_due_changes(now);
        self.pipeline_mut(direction).poll_release_timed(now)
    }

    /// The next scheduled event due at or before `now`, if any, in schedule order.
    pub fn poll_event(&mut self, now: Duration) -> Option<LinkEvent> {
        if self.events.front()?.at <= now { self.events.pop_front() } else { None }
    }

    /// When to call in next: never later than the next release in either direction or the next event.
    pub fn next_wakeup(&self) -> Option<Duration> {
        [self.uplink.next_release_time(), self.downlink.next_release_time(), self.events.front().map(|e| e.at)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The pipeline of one direction (settings, counters, queue).
    pub fn pipeline(&self, direction: Direction) -> &Pipeline {
        match direction {
            Direction::Uplink => &self.uplink,
            Direction::Downlink => &self.downlink,
        }
    }

    fn pipeline_mut(&mut self, direction: Direction) -> &mut Pipeline {
        match direction {
            Direction::Uplink => &mut self.uplink,
            Direction::Downlink => &mut self.downlink,
        }
    }

    /// Applies scheduled changes due by `now`, each at its own time, after moving both pipelines up to it.
    fn apply_due_changes(&mut self, now: Duration) {
        while self.changes.front().is_some_and(|c| c.at <= now) {
            let Some(change) = self.changes.pop_front() else { break };
            for &d in change.target.directions() {
                let pipeline = self.pipeline_mut(d);
                let next = change.patch.apply_to(pipeline.impairments());
                pipeline.set_impairments(change.at, next);
            }
        }
    }
}
