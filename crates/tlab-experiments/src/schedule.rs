//! How many of a suite's cells run at once, and how long the suite should take.
//!
//! Cells are independent: each has its own two unnamed network namespaces, so its addresses, its server's port 4433
//! and its `tlab0` devices exist only there and concurrent cells cannot collide; and each has its own forwarder.
//! What they share is the CPU: a forwarder that does not get a core in time releases packets late, and the run's
//! link health shows it (`link_ok`). So the runner starts [`initial_limit`] cells at once and lets each cell's
//! health steer ([`Concurrency::after_cell`]): a cell whose link missed its tolerance while other cells ran beside
//! it halves the limit and runs again; healthy cells for long enough in a row raise the limit by one again, never
//! above where it started.
//!
//! [`expected`] is a cell's expected wall time from its parameters (the workload's own schedule, its connection
//! set-up in RTTs of the profile, and [`CELL_OVERHEAD`]); [`makespan`] lays those out on the limit's slots.

use std::time::Duration;

use tlab_netem::Profile;

use crate::suite::{Cell, Client, ExperimentSpec};

/// What a cell costs besides its workload: two namespaces, the link and its forwarder, the server's start,
/// stopping it all and writing the records. Measured on the 2-core development VM from the standard suite's
/// records (median of wall time − the rest of [`expected`]).
pub const CELL_OVERHEAD: Duration = Duration::from_millis(300);

/// Starting headless Chromium and loading its page (a `chromium` client's cells).
const BROWSER_START: Duration = Duration::from_secs(1);

/// Round trips to an open stream: TCP, TLS, the request that opens the stream, and one for closing (QUIC modes
/// need fewer, WebTransport as many).
const CONNECT_RTTS: u32 = 4;

/// Wall time of healthy cells in a row after which a lowered limit goes up by one (time, not a count: one HOL cell
/// lasts as long as thirty latency cells).
pub const RECOVER_AFTER: Duration = Duration::from_secs(30);

/// How often a cell runs at most when its link keeps missing the tolerance beside other cells; its last run is
/// kept as it is.
pub const MAX_RUNS: u32 = 3;

/// Cells allowed at once at the start: `requested` (`tlab run --jobs`, the suite's `concurrency`), else one per
/// core; never more than there are cells, never fewer than one.
pub fn initial_limit(requested: Option<usize>, cores: usize, cells: usize) -> usize {
    requested.unwrap_or(cores).min(cells).max(1)
}

/// The expected wall time of `cell` on `profile`.
pub fn expected(cell: &Cell, profile: &Profile) -> Duration {
    let rtt = profile.uplink.delay + profile.downlink.delay;
    let one_way = profile.downlink.delay;
    let at_rate = |messages: u64, rate_hz: u64| if rate_hz == 0 { Duration::ZERO } else { Duration::from_secs_f64(messages as f64 / rate_hz as f64) };
    let workload = match &cell.spec {
        ExperimentSpec::Latency { messages, rate_hz, .. } => at_rate(*messages, *rate_hz) + one_way,
        ExperimentSpec::Ordering { messages, rate_hz, .. } => at_rate(*messages, *rate_hz) + rtt,
        ExperimentSpec::ConnectionLimit { messages, rate_hz, .. } => at_rate(*messages, *rate_hz) + one_way,
        // `crate::hol`: 200 ms to the agreed start, the warm-up, then one epoch of max(10 RTT, 1 s) per epoch.
        ExperimentSpec::Hol { streams, epochs, null_epochs, warmup_rtts, connections, .. } => {
            let epoch = (rtt * 10).max(Duration::from_secs(1));
            let connects = if connections == "per-stream" { *streams - 1 } else { 0 };
            Duration::from_millis(200) + rtt * *warmup_rtts + epoch * (*epochs + *null_epochs) as u32 + rtt * (CONNECT_RTTS * connects)
        }
        ExperimentSpec::Migration { duration_s, .. } | ExperimentSpec::Outage { duration_s, .. } => Duration::from_secs_f64(*duration_s),
        // Each further connection from scratch, then 5 echo round trips 200 ms apart on the first one.
        ExperimentSpec::Handshake { connections } => rtt * (CONNECT_RTTS * connections.saturating_sub(1)) + Duration::from_millis(800),
        // `crate::overhead`: N/2 and N paced at the rate, the same saturated, 300 ms of quiet after each batch.
        ExperimentSpec::Overhead { messages, rate_hz, .. } => at_rate(messages / 2 + messages, *rate_hz) + (Duration::from_millis(300) + rtt) * 4,
    };
    let browser = if cell.client == Client::Chromium { BROWSER_START } else { Duration::ZERO };
    CELL_OVERHEAD + browser + rtt * CONNECT_RTTS + workload
}

/// The wall time of running cells of `durations`, in order, each as soon as one of `limit` slots is free.
pub fn makespan(durations: impl IntoIterator<Item = Duration>, limit: usize) -> Duration {
    let mut slots = vec![Duration::ZERO; limit.max(1)];
    for duration in durations {
        let earliest = slots.iter_mut().min().expect("at least one slot");
        *earliest += duration;
    }
    slots.into_iter().max().unwrap_or_default()
}

/// How one cell's run ended, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Its link kept the suite's tolerance (or did not measure it).
    pub link_ok: bool,
    /// Another cell ran at some time while it did.
    pub shared: bool,
    /// How often this cell has run, this run included.
    pub runs: u32,
    /// How long this run took.
    pub took: Duration,
}

/// What to do with a cell that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record its run.
    Keep,
    /// Drop the run and run the cell again (under the lowered limit).
    Retry,
}

/// How many cells may run at once, steered by their link health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    limit: usize,
    ceiling: usize,
    /// Wall time of the healthy cells since the last unhealthy one or change of the limit.
    healthy_for: Duration,
}

impl Concurrency {
    /// Starts at `initial` cells at once, which is also the most it will allow.
    pub fn new(initial: usize) -> Self {
        let initial = initial.max(1);
        Self { limit: initial, ceiling: initial, healthy_for: Duration::ZERO }
    }

    /// Cells allowed at once now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The decision after a cell finished: the next state and what to do with the cell. A link that missed its
    /// tolerance while other cells ran halves the limit (at least 1) and the cell runs again, up to [`MAX_RUNS`]
    /// times; one that missed it alone says nothing about concurrency and is kept. Healthy cells for
    /// [`RECOVER_AFTER`] in a row raise a lowered limit by one.
    pub fn after_cell(self, finished: Finished) -> (Self, Verdict) {
        match (finished.link_ok, finished.shared) {
            (true, _) => {
                let healthy = self.healthy_for + finished.took;
                if self.limit < self.ceiling && healthy >= RECOVER_AFTER {
                    (Self { limit: self.limit + 1, healthy_for: Duration::ZERO, ..self }, Verdict::Keep)
                } else {
                    (Self { healthy_for: healthy, ..self }, Verdict::Keep)
                }
            }
            (false, false) => (Self { healthy_for: Duration::ZERO, ..self }, Verdict::Keep),
            (false, true) => {
                let verdict = if finished.runs < MAX_RUNS { Verdict::Retry } else { Verdict::Keep };
                (Self { limit: (self.limit / 2).max(1), healthy_for: Duration::ZERO, ..self }, verdict)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell of one second.
    fn finished(link_ok: bool, shared: bool, runs: u32) -> Finished {
        Finished { link_ok, shared, runs, took: Duration::from_secs(1) }
    }

    #[test]
    fn unhealthy_beside_others_halves_the_limit_and_reruns_the_cell() {
        let start = Concurrency::new(4);
        let (next, verdict) = start.after_cell(finished(false, true, 1));
        assert_eq!((next.limit(), verdict), (2, Verdict::Retry));
        let (next, verdict) = next.after_cell(finished(false, true, 2));
        assert_eq!((next.limit(), verdict), (1, Verdict::Retry));
        let (next, verdict) = next.after_cell(finished(false, true, MAX_RUNS));
        assert_eq!((next.limit(), verdict), (1, Verdict::Keep), "the last allowed run is kept; the limit stays at 1");
    }

    #[test]
    fn unhealthy_alone_is_kept_and_changes_nothing() {
        let (next, verdict) = Concurrency::new(2).after_cell(finished(false, false, 1));
        assert_eq!((next.limit(), verdict), (2, Verdict::Keep));
    }

    #[test]
    fn healthy_cells_raise_a_lowered_limit_step_by_step_up_to_the_start() {
        let (mut state, _) = Concurrency::new(3).after_cell(finished(false, true, 1));
        assert_eq!(state.limit(), 1);
        let cells = RECOVER_AFTER.as_secs() as usize;
        let mut limits = Vec::new();
        for _ in 0..3 * cells {
            let (next, verdict) = state.after_cell(finished(true, true, 1));
            assert_eq!(verdict, Verdict::Keep);
            state = next;
            limits.push(state.limit());
        }
        assert_eq!(limits[cells - 2], 1);
        assert_eq!(limits[cells - 1], 2, "one step after {RECOVER_AFTER:?} of healthy cells");
        assert_eq!(limits[2 * cells - 1], 3);
        assert_eq!(*limits.last().unwrap(), 3, "never above the start");
        // One long healthy cell counts as much as many short ones.
        let (state, _) = Concurrency::new(2).after_cell(finished(false, true, 1));
        let (state, _) = state.after_cell(Finished { took: RECOVER_AFTER, ..finished(true, false, 1) });
        assert_eq!(state.limit(), 2);
        // An unhealthy cell alone starts the count again.
        let (state, _) = Concurrency::new(2).after_cell(finished(false, true, 1));
        let mut state = (0..cells - 1).fold(state, |s, _| s.after_cell(finished(true, false, 1)).0);
        state = state.after_cell(finished(false, false, 1)).0;
        state = state.after_cell(finished(true, false, 1)).0;
        assert_eq!(state.limit(), 1);
    }

    #[test]
    fn the_initial_limit_is_one_per_core_unless_asked() {
        assert_eq!(initial_limit(None, 2, 417), 2);
        assert_eq!(initial_limit(None, 8, 3), 3);
        assert_eq!(initial_limit(Some(5), 2, 417), 5);
        assert_eq!(initial_limit(Some(1), 8, 417), 1);
        assert_eq!(initial_limit(None, 2, 0), 1);
    }

    #[test]
    fn makespan_fills_the_free_slot_first() {
        let s = Duration::from_secs;
        assert_eq!(makespan([s(3), s(1), s(1), s(1)], 1), s(6));
        assert_eq!(makespan([s(3), s(1), s(1), s(1)], 2), s(3));
        assert_eq!(makespan([s(1), s(1), s(1), s(3)], 2), s(4));
        assert_eq!(makespan([], 2), s(0));
    }

    #[test]
    fn expected_time_follows_the_parameters() {
        let suite = crate::Suite::parse(
            r#"
name = "t"
repetitions = 1
transports = ["ws"]
profiles = ["wan-50ms"]
[[experiment]]
kind = "latency"
messages = 2000
size = 128
rate_hz = 2000
[[experiment]]
kind = "hol"
epochs = 30
null_epochs = 10
"#,
            std::path::Path::new("t.toml"),
            &[("ws", tlab_core::Capabilities { bidirectional: true, reliable: true, ordered: true, ..tlab_core::Capabilities::NONE })],
        )
        .unwrap();
        let profile = &suite.profiles["wan-50ms"];
        let rtt = profile.uplink.delay + profile.downlink.delay;
        let base = CELL_OVERHEAD + rtt * CONNECT_RTTS;
        assert_eq!(expected(&suite.cells[0], profile), base + Duration::from_secs(1) + profile.downlink.delay);
        let epoch = (rtt * 10).max(Duration::from_secs(1));
        assert_eq!(expected(&suite.cells[1], profile), base + Duration::from_millis(200) + rtt * 20 + epoch * 40);
    }
}
