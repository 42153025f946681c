//! Head-of-line blocking as a controlled experiment (issue 8, item 2; definitions in docs/RESULTS.md).
//!
//! K echo streams — on one connection (`connections = "shared"`) or one connection each (`"per-stream"`, the K = 1
//! control) — start together at one agreed absolute time, once every stream is open, and each sends one message of
//! `size` bytes every T = 1/`rate_hz`, stream j offset by j·T/K (`phase = "staggered"`) so that each packet carries
//! one message; `phase = "in-phase"` sends them together to measure co-packetisation instead. After a warm-up of
//! `warmup_rtts` RTTs, every epoch (max(10 RTT, 1 s)) stream 0 sends one *marker* of `marker_size` bytes, and a
//! targeted-drop rule in the emulator drops exactly the uplink packet carrying it, once (with
//! `drop_retransmission`, its first retransmission too: the retransmission-timeout path). Null epochs send the
//! marker with the rule armed on a size that never occurs. A counting rule checks from the link's side how many
//! packets the messages took (`hol_packets_per_message`).
//!
//! Per dropped epoch: R = the marker's extra latency (latency − stream 0's base), S_j = the largest extra latency of
//! stream j ≠ 0 among its messages scheduled during [marker, marker + R), ρ_raw = mean_j S_j / R — about 1 − δ/R
//! when every stream waits behind the lost bytes of one TCP byte stream, about 0 when streams are independent and
//! their latency steady. A stream whose latency spreads on its own (a batching sender) makes S_j > 0 without HOL,
//! so each epoch is corrected by the same run's null epochs: N_j(R) = stream j's mean, over null epochs, of its
//! largest extra latency in a window of the same length R from the null marker, and ρ = ρ_raw − mean_j N_j(R) / R.
//! Latency counts from each message's scheduled send time (round trip: the drop is on the uplink, the downlink is
//! clean, so the extra latency is the uplink's). The computation is
//! [`analyse`], a pure function of the recorded samples.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::clock::monotonic_ns;
use tlab_core::{Connection, Error, Message, MessageStream, StreamOpen};
use tlab_netem::{Direction, DropRule, RunningLink};
use tlab_results::Metric;

use crate::suite::ExperimentSpec;
use crate::workload::{Context, Outcome};

/// The metrics this experiment records (their descriptors are in `tlab_results::Metric`).
pub mod names {
    use tlab_results::Metric;
    /// See [`Metric::HolRho`].
    pub const RHO: &str = Metric::HolRho.name();
    /// See [`Metric::HolRhoRaw`].
    pub const RHO_RAW: &str = Metric::HolRhoRaw.name();
    /// See [`Metric::HolRhoNull`].
    pub const RHO_NULL: &str = Metric::HolRhoNull.name();
    /// See [`Metric::HolRecovery`].
    pub const RECOVERY_MS: &str = Metric::HolRecovery.name();
    /// See [`Metric::HolRecoveryRtts`].
    pub const RECOVERY_RTTS: &str = Metric::HolRecoveryRtts.name();
    /// See [`Metric::HolStall`].
    pub const STALL_MS: &str = Metric::HolStall.name();
    /// See [`Metric::HolEpochs`].
    pub const EPOCHS: &str = Metric::HolEpochs.name();
    /// See [`Metric::HolNullEpochs`].
    pub const NULL_EPOCHS: &str = Metric::HolNullEpochs.name();
    /// See [`Metric::HolEpochsMissed`].
    pub const EPOCHS_MISSED: &str = Metric::HolEpochsMissed.name();
    /// See [`Metric::HolRetransmissionDrops`].
    pub const RETRANSMISSION_DROPS: &str = Metric::HolRetransmissionDrops.name();
    /// See [`Metric::HolPacketsPerMessage`].
    pub const PACKETS_PER_MESSAGE: &str = Metric::HolPacketsPerMessage.name();
    /// See [`Metric::HolBaseRtt`].
    pub const BASE_RTT_MS: &str = Metric::HolBaseRtt.name();
}

/// One message as the analysis sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Scheduled send time, ns on the monotonic clock.
    pub sent_ns: u64,
    /// Receive time − scheduled send time, ns.
    pub latency_ns: u64,
}

/// One epoch: its marker (stream 0) and whether the link dropped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// The marker message.
    pub marker: Sample,
    /// The rule dropped the marker's packet (false: a null epoch).
    pub dropped: bool,
}

/// The outcome of one dropped epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochResult {
    /// R: the marker's extra latency over stream 0's base, ns.
    pub recovery_ns: f64,
    /// S_j for each stream j ≠ 0 that sent during [marker, marker + R) and during the same window after a null
    /// marker, ns.
    pub stalls_ns: Vec<f64>,
    /// N_j(R): the same streams' mean over null epochs of their largest extra latency in a window of the same length
    /// R starting at the null marker, ns.
    pub null_stalls_ns: Vec<f64>,
    /// ρ_raw = mean_j S_j / R.
    pub rho_raw: f64,
    /// ρ_null = mean_j N_j(R) / R: what the streams' own latency spread gives in an undisturbed window of length R.
    pub rho_null: f64,
    /// ρ = ρ_raw − ρ_null.
    pub rho: f64,
}

/// Every epoch of a run, analysed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HolAnalysis {
    /// Dropped epochs with a positive R and at least one other stream sending during it and after a null marker.
    pub dropped: Vec<EpochResult>,
    /// Null epochs that served as the reference.
    pub null_epochs: usize,
    /// Each stream's base latency (median of its ordinary messages), ns.
    pub base_ns: Vec<f64>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The HOL analysis of one run: `streams[j]` holds stream j's ordinary messages (markers excluded), `epochs` the
/// markers of stream 0. The raw index ρ_raw = mean_j S_j / R counts, besides HOL, how far a stream's latency
/// spreads on its own (a sender that batches messages, such as SSE's uplink POSTs, makes the largest of several
/// latencies exceed their median without any loss), so each dropped epoch is compared with the null epochs of the
/// same run over a window of the same length R, starting at their marker (the same phase of every stream's
/// schedule): ρ = (mean_j S_j − mean_j N_j(R)) / R. Without null epochs there is no dropped epoch to report.
pub fn analyse(streams: &[Vec<Sample>], epochs: &[Epoch]) -> HolAnalysis {
    let base_ns: Vec<f64> =
        streams.iter().map(|s| median(&mut s.iter().map(|m| m.latency_ns as f64).collect::<Vec<_>>()).unwrap_or(0.0)).collect();
    // Stream j's largest extra latency among its messages scheduled during [start, start + length).
    let excess = |j: usize, start: u64, length: f64| -> Option<f64> {
        let end = start as f64 + length;
        streams[j]
            .iter()
            .filter(|m| m.sent_ns >= start && (m.sent_ns as f64) < end)
            .map(|m| m.latency_ns as f64 - base_ns[j])
            .max_by(f64::total_cmp)
    };
    let null_starts: Vec<u64> = epochs.iter().filter(|e| !e.dropped).map(|e| e.marker.sent_ns).collect();
    let base0 = base_ns.first().copied().unwrap_or(0.0);
    let dropped: Vec<EpochResult> = epochs
        .iter()
        .filter(|e| e.dropped)
        .filter_map(|e| {
            let r = e.marker.latency_ns as f64 - base0;
            if r <= 0.0 {
                return None;
            }
            let (stalls_ns, null_stalls_ns): (Vec<f64>, Vec<f64>) = (1..streams.len())
                .filter_map(|j| {
                    let null = mean(&null_starts.iter().filter_map(|&start| excess(j, start, r)).collect::<Vec<_>>())?;
                    Some((excess(j, e.marker.sent_ns, r)?, null))
                })
                .unzip();
            let rho_raw = mean(&stalls_ns)? / r;
            let rho_null = mean(&null_stalls_ns)? / r;
            Some(EpochResult { recovery_ns: r, stalls_ns, null_stalls_ns, rho_raw, rho_null, rho: rho_raw - rho_null })
        })
        .collect();
    HolAnalysis { dropped, null_epochs: null_starts.len(), base_ns }
}

/// The experiment's parameters, read from [`ExperimentSpec::Hol`].
struct Plan {
    streams: u32,
    size: usize,
    marker_size: usize,
    period_ns: u64,
    offset_ns: u64,
    per_stream_connections: bool,
    drop_retransmission: bool,
    warmup_ns: u64,
    epoch_ns: u64,
    /// Per epoch: whether it is a null epoch.
    null: Vec<bool>,
    rtt_ns: u64,
}

impl Plan {
    fn of(spec: &ExperimentSpec, ctx: &Context) -> Option<Self> {
        let ExperimentSpec::Hol {
            streams,
            size,
            marker_size,
            rate_hz,
            epochs,
            null_epochs,
            connections,
            phase,
            drop_retransmission,
            warmup_rtts,
        } = spec
        else {
            return None;
        };
        let rtt = (ctx.profile.uplink.delay + ctx.profile.downlink.delay).max(Duration::from_millis(1));
        let rtt_ns = rtt.as_nanos() as u64;
        let period_ns = 1_000_000_000 / rate_hz;
        let total = epochs + null_epochs;
        // Null epochs spread evenly among the dropped ones.
        let null = (0..total).map(|e| (e + 1) * null_epochs / total > e * null_epochs / total).collect();
        Some(Self {
            streams: *streams,
            size: *size,
            marker_size: *marker_size,
            period_ns,
            offset_ns: if phase == "in-phase" { 0 } else { period_ns / u64::from(*streams) },
            per_stream_connections: connections == "per-stream",
            drop_retransmission: *drop_retransmission,
            warmup_ns: u64::from(*warmup_rtts) * rtt_ns,
            epoch_ns: (10 * rtt_ns).max(1_000_000_000),
            null,
            rtt_ns,
        })
    }

    /// Stream 0's slot that carries epoch `e`'s marker: the first at or after the epoch's start.
    fn marker_slot(&self, e: usize) -> u64 {
        (self.warmup_ns + e as u64 * self.epoch_ns).div_ceil(self.period_ns)
    }

    /// Messages per stream: through the last epoch plus one more epoch for its recovery.
    fn messages(&self) -> u64 {
        self.marker_slot(self.null.len()) + 1
    }

    fn scheduled_ns(&self, t0: u64, stream: u32, seq: u64) -> u64 {
        t0 + u64::from(stream) * self.offset_ns + seq * self.period_ns
    }
}

/// Sends stream `id`'s schedule (markers on stream 0 at `markers`) and returns (seq, receive time) of its echoes.
async fn run_stream(stream: MessageStream, id: u32, plan: Arc<Plan>, t0: u64, markers: Arc<Vec<u64>>) -> Result<Vec<(u64, u64)>, Error> {
    let MessageStream { mut sink, mut source } = stream;
    let normal = Bytes::from(vec![0x48u8; plan.size]);
    let marker = Bytes::from(vec![0x4Du8; plan.marker_size]);
    let messages = plan.messages();
    let sender = tokio::spawn(async move {
        for seq in 0..messages {
            let due = plan.scheduled_ns(t0, id, seq);
            let wait = due.saturating_sub(monotonic_ns());
            tokio::time::sleep(Duration::from_nanos(wait)).await;
            let payload = if id == 0 && markers.binary_search(&seq).is_ok() { marker.clone() } else { normal.clone() };
            sink.send(Message::data(id, seq, payload)).await?;
        }
        sink.finish().await?;
        Ok::<_, Error>(sink)
    });
    let mut received = Vec::with_capacity(messages as usize);
    while let Some(msg) = source.recv().await? {
        received.push((msg.seq, monotonic_ns()));
    }
    let _ = sender.await.map_err(|e| Error::Transport(e.to_string()))??;
    Ok(received)
}

/// Runs the HOL experiment of `spec` (an [`ExperimentSpec::Hol`]).
pub async fn run(spec: &ExperimentSpec, ctx: &Context) -> Result<Outcome, Error> {
    let plan = Arc::new(Plan::of(spec, ctx).ok_or(Error::Unsupported("not a hol experiment"))?);
    if !ctx.transport.capabilities().reliable {
        return Err(Error::Unsupported("head-of-line blocking is measured on reliable, ordered streams"));
    }
    let RunningLink::Tun(link) = &*ctx.link else {
        return Err(Error::Unsupported("targeted drops need the TUN emulator (suite backend = \"tun\")"));
    };
    // Every connection and stream is open before the agreed start.
    let mut connections: Vec<Arc<dyn Connection>> = Vec::new();
    let mut opened = Vec::new();
    for id in 0..plan.streams {
        if plan.per_stream_connections || connections.is_empty() {
            connections.push(Arc::from(ctx.transport.connect(ctx.client.clone()).await?));
        }
        let conn = connections.last().expect("a connection");
        opened.push(conn.open_stream(StreamOpen::echo(id)).await?);
    }
    let t0 = monotonic_ns() + 200_000_000;
    let markers: Arc<Vec<u64>> = Arc::new((0..plan.null.len()).map(|e| plan.marker_slot(e)).collect());
    // Rules armed ahead of time, each matching from 2 ms before its marker's slot to half an epoch after it.
    let marker_sizes = plan.marker_size..=1500;
    let mut rules = Vec::new();
    for (e, &null) in plan.null.iter().enumerate() {
        let at = link.link_time(plan.scheduled_ns(t0, 0, markers[e]));
        let sizes = if null { 65_000..=65_535 } else { marker_sizes.clone() };
        let rule = DropRule::once(Direction::Uplink, sizes, at.saturating_sub(Duration::from_millis(2)))
            .until(at + Duration::from_nanos(plan.epoch_ns / 2))
            .with_retransmissions(u32::from(plan.drop_retransmission));
        rules.push(link.arm_drop(rule));
    }
    let data_packets = link.arm_drop(DropRule {
        count: 0,
        ..DropRule::once(Direction::Uplink, plan.size..=1500, link.link_time(t0).saturating_sub(Duration::from_millis(2)))
    });
    let tasks: Vec<_> = opened
        .into_iter()
        .zip(0..)
        .map(|(stream, id)| tokio::spawn(run_stream(stream, id, plan.clone(), t0, markers.clone())))
        .collect();
    let mut received = Vec::new();
    for task in tasks {
        received.push(task.await.map_err(|e| Error::Transport(e.to_string()))??);
    }
    for conn in connections {
        conn.close().await;
    }
    // Let the rule counts of the last packets reach the shared log.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let log = link.drop_log();
    let status = link.drop_rules();

    let mut streams: Vec<Vec<Sample>> = vec![Vec::new(); plan.streams as usize];
    let mut marker_samples = BTreeMap::new();
    let mut delivered = 0u64;
    for (id, arrivals) in received.iter().enumerate() {
        for &(seq, at) in arrivals {
            delivered += 1;
            let sent_ns = plan.scheduled_ns(t0, id as u32, seq);
            let sample = Sample { sent_ns, latency_ns: at.saturating_sub(sent_ns) };
            if id == 0 && markers.binary_search(&seq).is_ok() {
                marker_samples.insert(seq, sample);
            } else {
                streams[id].push(sample);
            }
        }
    }
    let mut epochs = Vec::new();
    let mut missed = 0u64;
    for (e, &null) in plan.null.iter().enumerate() {
        let dropped = log.iter().any(|d| d.drop.rule == rules[e] && !d.drop.retransmission);
        if !null && !dropped {
            missed += 1;
            continue;
        }
        if let Some(&marker) = marker_samples.get(&markers[e]) {
            epochs.push(Epoch { marker, dropped });
        }
    }
    let analysis = analyse(&streams, &epochs);

    let mut outcome = Outcome::default();
    let mut set = |name: &str, value: f64| {
        outcome.metrics.insert(name.to_string(), value);
    };
    let per_epoch = |f: fn(&EpochResult) -> f64| mean(&analysis.dropped.iter().map(f).collect::<Vec<_>>());
    for (name, value) in [
        (names::RHO, per_epoch(|e| e.rho)),
        (names::RHO_RAW, per_epoch(|e| e.rho_raw)),
        (names::RHO_NULL, per_epoch(|e| e.rho_null)),
        (names::STALL_MS, per_epoch(|e| mean(&e.stalls_ns).unwrap_or(0.0) / 1e6)),
        (names::RECOVERY_MS, per_epoch(|e| e.recovery_ns / 1e6)),
    ] {
        if let Some(value) = value {
            set(name, value);
        }
    }
    if let Some(r) = per_epoch(|e| e.recovery_ns) {
        set(names::RECOVERY_RTTS, r / plan.rtt_ns as f64);
    }
    set(names::EPOCHS, analysis.dropped.len() as f64);
    set(names::NULL_EPOCHS, analysis.null_epochs as f64);
    set(names::EPOCHS_MISSED, missed as f64);
    set(names::RETRANSMISSION_DROPS, log.iter().filter(|d| d.drop.retransmission).count() as f64);
    let sent = plan.messages() * u64::from(plan.streams);
    if let Some(watch) = status.iter().find(|s| s.id == data_packets) {
        set(names::PACKETS_PER_MESSAGE, watch.matched as f64 / sent as f64);
    }
    if let Some(base) = analysis.base_ns.first() {
        set(names::BASE_RTT_MS, base / 1e6);
    }
    set(Metric::Delivered.name(), delivered as f64);
    set(Metric::DeliveryRatio.name(), delivered as f64 / sent as f64);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// K streams, 20 ms period, stream j offset j·5 ms, base latency 40 ms; `stall(j, sent)` adds extra latency.
    fn synthetic(k: u32, stall: impl Fn(u32, u64) -> u64) -> Vec<Vec<Sample>> {
        (0..k)
            .map(|j| {
                (0..300u64)
                    .map(|n| {
                        let sent_ns = u64::from(j) * 5 * MS + n * 20 * MS;
                        Sample { sent_ns, latency_ns: 40 * MS + stall(j, sent_ns) }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn known_stalls_give_the_known_rho() {
        // Marker at 1000 ms, recovered 60 ms late (R = 60 ms). Stream 1 stalls 50 ms, stream 2 30 ms, in the window.
        let marker = Sample { sent_ns: 1000 * MS, latency_ns: 100 * MS };
        let in_window = |sent: u64| (1000 * MS..1060 * MS).contains(&sent);
        let streams = synthetic(3, |j, sent| if j > 0 && in_window(sent) { [0, 50, 30][j as usize] * MS } else { 0 });
        // A null epoch later, with nothing stalled: the correction is 0.
        let null = Sample { sent_ns: 2000 * MS, latency_ns: 40 * MS };
        let analysis = analyse(&streams, &[Epoch { marker, dropped: true }, Epoch { marker: null, dropped: false }]);
        assert_eq!((analysis.dropped.len(), analysis.null_epochs), (1, 1));
        let epoch = &analysis.dropped[0];
        assert_eq!(epoch.recovery_ns, 60e6);
        assert_eq!(epoch.stalls_ns, [50e6, 30e6]);
        assert_eq!(epoch.null_stalls_ns, [0.0, 0.0]);
        assert!((epoch.rho_raw - 40.0 / 60.0).abs() < 1e-12, "{}", epoch.rho_raw);
        assert_eq!((epoch.rho_null, epoch.rho), (0.0, epoch.rho_raw));
    }

    #[test]
    fn one_byte_stream_gives_one_minus_delta_over_r_and_independent_streams_zero() {
        // Behind one TCP byte stream every message sent during [m, m + R) waits until m + R: the first one of stream
        // j, sent δ_j after the marker, is the most delayed (R − δ_j).
        let (m, r) = (1000 * MS, 80 * MS);
        let marker = Sample { sent_ns: m, latency_ns: 40 * MS + r };
        let null = Epoch { marker: Sample { sent_ns: 2000 * MS, latency_ns: 40 * MS }, dropped: false };
        let blocked = synthetic(4, |_, sent| if (m..m + r).contains(&sent) { m + r - sent } else { 0 });
        let analysis = analyse(&blocked, &[Epoch { marker, dropped: true }, null]);
        // Streams 1..3 send first at δ = 5, 10, 15 ms after the marker: ρ = mean(1 − δ/R).
        let expected = [5.0, 10.0, 15.0].iter().map(|d| 1.0 - d / 80.0).sum::<f64>() / 3.0;
        assert!((analysis.dropped[0].rho - expected).abs() < 1e-12);
        let independent = synthetic(4, |_, _| 0);
        assert_eq!(analyse(&independent, &[Epoch { marker, dropped: true }, null]).dropped[0].rho, 0.0);
    }

    #[test]
    fn a_batching_sender_gives_raw_rho_above_zero_and_corrected_rho_zero() {
        // No HOL at all, but every stream's sender flushes a batch every 60 ms (as SSE's uplink POSTs do): a message
        // waits until the next flush, so latency spreads 0–60 ms above the minimum, and the largest latency in any
        // window exceeds the median. Null epochs sit at the same phase of the schedule (epochs of 1.2 s, a multiple
        // of both the 20 ms period and the 60 ms flush).
        let flush = 60 * MS;
        let batched = synthetic(4, |_, sent| (flush - sent % flush) % flush);
        let marker = |at: u64, dropped: bool| Epoch { marker: Sample { sent_ns: at, latency_ns: 40 * MS + 70 * MS }, dropped };
        let epochs = [marker(1200 * MS, true), marker(2400 * MS, false), marker(3600 * MS, true), marker(2400 * MS + 1200 * MS * 2, false)];
        let analysis = analyse(&batched, &epochs);
        assert_eq!((analysis.dropped.len(), analysis.null_epochs), (2, 2));
        for epoch in &analysis.dropped {
            assert!(epoch.rho_raw > 0.1, "the batching baseline shows as ρ_raw = {}", epoch.rho_raw);
            assert!(epoch.rho.abs() < 1e-12, "corrected ρ = {}", epoch.rho);
        }
    }

    #[test]
    fn an_epoch_without_recovery_other_streams_or_null_epochs_is_left_out() {
        let null = Epoch { marker: Sample { sent_ns: 2000 * MS, latency_ns: 40 * MS }, dropped: false };
        let marker = Sample { sent_ns: 1000 * MS, latency_ns: 100 * MS };
        let streams = synthetic(1, |_, _| 0);
        assert!(analyse(&streams, &[Epoch { marker, dropped: true }, null]).dropped.is_empty(), "K = 1 has no S_j");
        let streams = synthetic(2, |_, _| 0);
        let on_time = Sample { sent_ns: 1000 * MS, latency_ns: 40 * MS };
        assert!(analyse(&streams, &[Epoch { marker: on_time, dropped: true }, null]).dropped.is_empty(), "R = 0");
        assert!(analyse(&streams, &[Epoch { marker, dropped: true }]).dropped.is_empty(), "no null reference");
    }
}
