//! The client side of each experiment: a workload on the transport under test and the metrics it yields, named by
//! [`Metric`] and [`Distribution`] (docs/RESULTS.md has their definitions). Every stream sends on a schedule, and
//! every received message is kept as a [`MessageRecord`] with its scheduled, actual send and receive times on the
//! shared monotonic clock; latency — one-way for source streams, round trip for echo streams — counts from the
//! scheduled time (coordinated omission), and goodput over the data phase only.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::clock::monotonic_ns;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::{ClientConfig, Connection, Error, Message, MessageStream, StreamId, StreamMode, StreamOpen, Transport};
use tlab_netem::{EventKind, Profile, ScheduleAction};
use tlab_results::{CsvRecord, Distribution, DropRecord, LatencyHistogram, MessageRecord, Metric, Stat, encode_csv_gz};
use tokio::time::Instant;

use crate::suite::ExperimentSpec;

/// What a workload needs besides its parameters.
pub struct Context {
    /// The transport under test.
    pub transport: Arc<dyn Transport>,
    /// How to reach the server.
    pub client: ClientConfig,
    /// The cell's profile (schedules say when events happen).
    pub profile: Profile,
    /// When the link started: profile schedule times count from here.
    pub link_started: Instant,
    /// The running link (targeted drops, per-direction counters).
    pub link: Arc<tlab_netem::RunningLink>,
    /// IP bytes the emulator has forwarded so far, both directions.
    pub wire_bytes: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Where the client moves on an address change.
    pub alternate_local: std::net::SocketAddr,
    /// The cell's seed.
    pub seed: u64,
}

/// The measurements of one run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Scalar metrics by [`Metric`] name.
    pub metrics: BTreeMap<String, f64>,
    /// Latency histograms by [`Distribution`] name.
    pub histograms: BTreeMap<String, LatencyHistogram>,
    /// Time series.
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    /// Every message received, for the run's per-message file.
    pub messages: Vec<MessageRecord>,
    /// The link's drop log during the run, for the run's drop-log file: a workload that reads the emulator's drop
    /// log puts it here (none does yet).
    pub drops: Vec<DropRecord>,
}

impl Outcome {
    pub(crate) fn set(&mut self, metric: Metric, value: f64) {
        self.metrics.insert(metric.name().to_string(), value);
    }

    fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics.get(metric.name()).copied()
    }

    /// Records `histogram` as `which` with its summary statistics.
    fn latency(&mut self, which: Distribution, histogram: LatencyHistogram) {
        if let Some(p) = histogram.percentiles() {
            for stat in Stat::ALL {
                self.set(which.metric(stat), stat.of(&p));
            }
        }
        self.histograms.insert(which.name().to_string(), histogram);
    }

    /// Records the messages of `logs` as distribution `which` (latency from the scheduled time), with how far the
    /// senders fell behind their schedule, and keeps them for the per-message file.
    pub(crate) fn messages(&mut self, which: Distribution, logs: &[StreamLog]) {
        let records = || logs.iter().flat_map(|l| &l.records);
        self.latency(which, LatencyHistogram::of_messages(records()));
        let lag_ns = records().map(MessageRecord::send_lag_ns).max().unwrap_or(0);
        self.set(Metric::SendLagMax, lag_ns as f64 / 1e3);
        self.messages.extend(records());
    }
}

impl Outcome {
    /// Writes the run's per-message file and drop log into results directory `dir` as `messages/<stem>.csv.gz` and
    /// `drops/<stem>.csv.gz`; returns their paths relative to `dir` (`None` for a file with no rows, not written).
    pub fn write_records(&self, dir: &Path, stem: &str) -> std::io::Result<(Option<String>, Option<String>)> {
        Ok((write_csv_gz(dir, "messages", stem, &self.messages)?, write_csv_gz(dir, "drops", stem, &self.drops)?))
    }
}

fn write_csv_gz<R: CsvRecord>(dir: &Path, kind: &str, stem: &str, rows: &[R]) -> std::io::Result<Option<String>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let relative = format!("{kind}/{stem}.csv.gz");
    let path = dir.join(&relative);
    std::fs::create_dir_all(dir.join(kind))
        .and_then(|()| std::fs::write(&path, encode_csv_gz(rows)))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(Some(relative))
}

/// When the messages of a stream were due: seq `k` at `start_ns + k × interval_ns` (monotonic ns). Rate 0 has no
/// schedule: each message is due when it was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    start_ns: u64,
    interval_ns: u64,
}

impl Schedule {
    pub(crate) fn at(rate_hz: u64, start_ns: u64) -> Self {
        Self { start_ns, interval_ns: interval_us(rate_hz) * 1000 }
    }

    fn due(&self, seq: u64, sent_ns: u64) -> u64 {
        if self.interval_ns == 0 { sent_ns } else { self.start_ns + seq * self.interval_ns }
    }
}

/// What one stream received, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct StreamLog {
    pub(crate) records: Vec<MessageRecord>,
}

impl StreamLog {
    /// Records `msg` as received now; `scheduled_ns` is filled in by [`StreamLog::scheduled`].
    fn record(&mut self, msg: &Message) {
        self.records.push(MessageRecord {
            stream: msg.stream,
            seq: msg.seq,
            size: msg.payload.len() as u64,
            scheduled_ns: msg.sent_at,
            sent_ns: msg.sent_at,
            received_ns: monotonic_ns(),
        });
    }

    /// Sets every message's scheduled time from `schedule`.
    pub(crate) fn scheduled(mut self, schedule: Schedule) -> Self {
        for r in &mut self.records {
            r.scheduled_ns = schedule.due(r.seq, r.sent_ns);
        }
        self
    }

    /// Sets the scheduled times of a stream a server sent every `interval_us` from a start the client does not see:
    /// the start is inferred as the earliest `sent − seq × interval` (the first message's send time when it arrived;
    /// a message cannot be sent before it is due).
    pub(crate) fn scheduled_by_sender(self, rate_hz: u64) -> Self {
        let interval_ns = interval_us(rate_hz) * 1000;
        let start_ns = self.records.iter().map(|r| r.sent_ns.saturating_sub(r.seq * interval_ns)).min().unwrap_or(0);
        self.scheduled(Schedule { start_ns, interval_ns })
    }

    fn seqs(&self) -> Vec<u64> {
        self.records.iter().map(|r| r.seq).collect()
    }
}

/// Per-stream ordering accounting (seqs 0..expected in arrival order).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ordering {
    /// Distinct messages received.
    pub delivered: u64,
    /// Never received.
    pub missing: u64,
    /// Extra copies.
    pub duplicates: u64,
    /// Messages that arrived after one with a higher seq.
    pub order_violations: u64,
    /// Largest number of higher seqs that arrived before some message.
    pub reorder_depth: u64,
}

impl Ordering {
    /// Accounts `seqs` (arrival order) against `expected` messages 0..expected.
    pub fn of(seqs: &[u64], expected: u64) -> Self {
        let mut seen = HashSet::with_capacity(seqs.len());
        let mut out = Self::default();
        let mut highest: Option<u64> = None;
        let mut arrived_sorted: Vec<u64> = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if !seen.insert(seq) {
                out.duplicates += 1;
                continue;
            }
            if highest.is_some_and(|h| seq < h) {
                out.order_violations += 1;
                let pos = arrived_sorted.partition_point(|&s| s <= seq);
                out.reorder_depth = out.reorder_depth.max((arrived_sorted.len() - pos) as u64);
            }
            let pos = arrived_sorted.partition_point(|&s| s < seq);
            arrived_sorted.insert(pos, seq);
            highest = highest.max(Some(seq));
        }
        out.delivered = seen.iter().filter(|&&s| s < expected).count() as u64;
        out.missing = expected - out.delivered;
        out
    }

    fn add(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.order_violations += other.order_violations;
        self.reorder_depth = self.reorder_depth.max(other.reorder_depth);
    }
}

fn interval_us(rate_hz: u64) -> u64 {
    if rate_hz == 0 { 0 } else { 1_000_000 / rate_hz }
}

/// How long an unreliable stream may stay silent before its reader stops waiting for more.
const QUIET: Duration = Duration::from_secs(2);

/// Reads a source stream of `messages` sent at `rate_hz`: a reliable one to its end, an unreliable one until every
/// message arrived or nothing did for [`QUIET`]. Scheduled times are the server's schedule.
async fn read_source(stream: MessageStream, messages: u64, rate_hz: u64, reliable: bool) -> Result<StreamLog, Error> {
    let MessageStream { mut sink, mut source } = stream;
    let mut log = StreamLog::default();
    let mut seen = HashSet::new();
    loop {
        let next = if reliable { source.recv().await } else { tokio::time::timeout(QUIET, source.recv()).await.unwrap_or(Ok(None)) };
        let Some(msg) = next? else { break };
        log.record(&msg);
        seen.insert(msg.seq);
        if !reliable && seen.len() as u64 >= messages {
            break;
        }
    }
    let _ = sink.finish().await;
    Ok(log.scheduled_by_sender(rate_hz))
}

/// Sends `messages` at `rate_hz` on an echo stream and logs the echoes. Reliable streams end with the server's
/// finish; unreliable ones when everything came back or nothing arrived for [`QUIET`].
async fn echo(stream: MessageStream, id: StreamId, messages: u64, size: usize, rate_hz: u64, reliable: bool) -> Result<StreamLog, Error> {
    let MessageStream { mut sink, mut source } = stream;
    let payload = Bytes::from(vec![0x3Cu8; size]);
    // The monotonic origin first: a message is never due after the instant its sender waits for.
    let schedule = Schedule::at(rate_hz, monotonic_ns());
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for seq in 0..messages {
            if rate_hz > 0 {
                tokio::time::sleep_until(start + Duration::from_micros(interval_us(rate_hz) * seq)).await;
            }
            sink.send(Message::data(id, seq, payload.clone())).await?;
        }
        if reliable {
            sink.finish().await?;
        }
        Ok::<_, Error>(sink)
    });
    let mut log = StreamLog::default();
    loop {
        let next = if reliable { Ok(source.recv().await) } else { tokio::time::timeout(QUIET, source.recv()).await };
        match next {
            Ok(Ok(Some(msg))) => {
                log.record(&msg);
                if !reliable && log.records.len() as u64 >= messages {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(e),
            Err(_) if sender.is_finished() => break,
            Err(_) => {}
        }
    }
    let _ = sender.await.map_err(|e| Error::Transport(e.to_string()))??;
    Ok(log.scheduled(schedule))
}

/// Goodput over the data phase: distinct payload bits delivered ÷ (last arrival − first scheduled send).
pub(crate) fn goodput_mbit_s(logs: &[StreamLog], delivered: u64, size: usize) -> f64 {
    let records = || logs.iter().flat_map(|l| &l.records);
    let first = records().map(|r| r.scheduled_ns).min();
    let last = records().map(|r| r.received_ns).max();
    match first.zip(last) {
        Some((first, last)) if last > first => (delivered * size as u64) as f64 * 8.0 / ((last - first) as f64 / 1e9) / 1e6,
        _ => 0.0,
    }
}

pub(crate) fn ordering_of(logs: &[StreamLog], expected: u64) -> Ordering {
    let mut total = Ordering::default();
    for log in logs {
        total.add(Ordering::of(&log.seqs(), expected));
    }
    total
}

pub(crate) fn record_ordering(outcome: &mut Outcome, ordering: Ordering, expected_total: u64) {
    outcome.set(Metric::Delivered, ordering.delivered as f64);
    outcome.set(Metric::Missing, ordering.missing as f64);
    outcome.set(Metric::Duplicates, ordering.duplicates as f64);
    outcome.set(Metric::OrderViolations, ordering.order_violations as f64);
    outcome.set(Metric::ReorderDepth, ordering.reorder_depth as f64);
    outcome.set(Metric::DeliveryRatio, ordering.delivered as f64 / expected_total.max(1) as f64);
}

/// Opens `streams` source streams, on one connection (`shared`) or one connection each, and reads them all. A mode
/// that cannot open a source stream fails with its `Unsupported` error.
async fn sources(ctx: &Context, streams: u32, messages: u64, size: usize, rate_hz: u64, shared: bool) -> Result<Vec<StreamLog>, Error> {
    let reliable = ctx.transport.capabilities().reliable;
    let mode = StreamMode::Source { count: messages, size, interval_us: interval_us(rate_hz) };
    let mut connections: Vec<Arc<dyn Connection>> = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..streams {
        if !shared || connections.is_empty() {
            connections.push(Arc::from(ctx.transport.connect(ctx.client.clone()).await?));
        }
        let conn = connections.last().expect("a connection").clone();
        let stream = conn.open_stream(StreamOpen { stream: id, mode, resume: None }).await?;
        tasks.push(tokio::spawn(read_source(stream, messages, rate_hz, reliable)));
    }
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.map_err(|e| Error::Transport(e.to_string()))??);
    }
    for conn in connections {
        conn.close().await;
    }
    Ok(logs)
}

/// Echo streams 0..`streams` on one connection, concurrently; their logs in stream order.
async fn echo_streams(ctx: &Context, streams: u32, messages: u64, size: usize, rate_hz: u64) -> Result<Vec<StreamLog>, Error> {
    let reliable = ctx.transport.capabilities().reliable;
    let conn = ctx.transport.connect(ctx.client.clone()).await?;
    let mut tasks = Vec::new();
    for id in 0..streams {
        let stream = conn.open_stream(StreamOpen::echo(id)).await?;
        tasks.push(tokio::spawn(echo(stream, id, messages, size, rate_hz, reliable)));
    }
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(task.await.map_err(|e| Error::Transport(e.to_string()))??);
    }
    conn.close().await;
    Ok(logs)
}

/// Runs `spec` and returns its metrics.
pub async fn run(spec: &ExperimentSpec, ctx: &Context) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    let reliable = ctx.transport.capabilities().reliable;
    match spec {
        ExperimentSpec::Latency { messages, size, rate_hz, streams, pattern } => {
            let (logs, which) = if pattern == "echo" {
                (echo_streams(ctx, *streams, *messages, *size, *rate_hz).await?, Distribution::RoundTrip)
            } else {
                (sources(ctx, *streams, *messages, *size, *rate_hz, true).await?, Distribution::OneWay)
            };
            let ordering = ordering_of(&logs, *messages);
            record_ordering(&mut outcome, ordering, *messages * *streams as u64);
            outcome.set(Metric::Goodput, goodput_mbit_s(&logs, ordering.delivered, *size));
            outcome.messages(which, &logs);
        }
        ExperimentSpec::Hol { .. } => return crate::hol::run(spec, ctx).await,
        ExperimentSpec::Ordering { streams, messages, size, rate_hz } => {
            let logs = echo_streams(ctx, *streams, *messages, *size, *rate_hz).await?;
            record_ordering(&mut outcome, ordering_of(&logs, *messages), *messages * *streams as u64);
            outcome.messages(Distribution::RoundTrip, &logs);
        }
        ExperimentSpec::Handshake { connections } => handshake(ctx, *connections, reliable, &mut outcome).await?,
        ExperimentSpec::Overhead { sizes, messages, rate_hz } => return crate::overhead::run(ctx, sizes[0], *messages, *rate_hz).await,
        ExperimentSpec::Migration { duration_s, rate_hz, size } => {
            let event = ctx.profile.schedule.iter().find_map(|e| match e.action {
                ScheduleAction::Event(kind) => Some((e.at, kind)),
                _ => None,
            });
            steady_echo(ctx, *duration_s, *rate_hz, *size, event, &mut outcome).await?;
        }
        ExperimentSpec::Outage { duration_s, rate_hz } => {
            steady_echo(ctx, *duration_s, *rate_hz, 64, None, &mut outcome).await?;
            outcome.blackhole(&ctx.profile);
        }
        ExperimentSpec::ConnectionLimit { .. } => {
            return Err(Error::Unsupported("a connection-limit experiment runs in the browser (client = \"chromium\")".into()));
        }
    }
    Ok(outcome)
}

impl Outcome {
    /// When the profile's blackhole began and how long traffic took to flow again after it ended (from the gap).
    pub(crate) fn blackhole(&mut self, profile: &Profile) {
        let blackhole = profile.schedule.iter().find_map(|e| match e.action {
            ScheduleAction::Blackhole { duration, .. } => Some((e.at, duration)),
            _ => None,
        });
        if let Some((at, length)) = blackhole {
            self.set(Metric::EventAt, at.as_secs_f64() * 1000.0);
            if let Some(gap) = self.get(Metric::Gap) {
                self.set(Metric::RecoveryAfterOutage, gap - length.as_secs_f64() * 1000.0);
            }
        }
    }

    /// The longest gap between arrivals of `log` and its arrivals timeline on the profile's clock (time since the
    /// link started, where the profile's events are scheduled).
    pub(crate) fn arrivals(&mut self, log: &StreamLog, link_started: Instant) {
        let link_start_ns = monotonic_ns().saturating_sub(link_started.elapsed().as_nanos() as u64);
        let gap_ns = log.records.windows(2).map(|w| w[1].received_ns.saturating_sub(w[0].received_ns)).max().unwrap_or(0);
        self.set(Metric::Gap, gap_ns as f64 / 1e6);
        self.series.insert(
            "arrivals".into(),
            log.records.iter().map(|r| (r.received_ns.saturating_sub(link_start_ns) as f64 / 1e6, r.seq as f64)).collect(),
        );
    }
}

/// `connections` fresh connections one after the other, each timed from the `connect` call to its milestones and
/// to the first message of a one-message source stream (the first application byte); each figure is the median
/// over the connections, in ms and in RTTs of the first connection (the fastest of 5 echo round trips on it).
async fn handshake(ctx: &Context, connections: u32, reliable: bool, outcome: &mut Outcome) -> Result<(), Error> {
    let mut first_byte_ms = Vec::new();
    let mut steps: [(Metric, Metric, Vec<f64>); 4] = [
        (Metric::TcpConnected, Metric::TcpConnectedRtts, Vec::new()),
        (Metric::TlsDone, Metric::TlsDoneRtts, Vec::new()),
        (Metric::QuicHandshake, Metric::QuicHandshakeRtts, Vec::new()),
        (Metric::FirstResponse, Metric::FirstResponseRtts, Vec::new()),
    ];
    let mut rtt_ms = 0.0;
    for i in 0..connections {
        let started = monotonic_ns();
        let conn = ctx.transport.connect(ctx.client.clone()).await?;
        let mode = StreamMode::Source { count: 1, size: 64, interval_us: 0 };
        let first = read_source(conn.open_stream(StreamOpen { stream: 0, mode, resume: None }).await?, 1, 0, reliable).await?;
        let delivered_at = first.records.first().ok_or_else(|| Error::Closed("no first message".into()))?.received_ns;
        let since = |at: u64| at.saturating_sub(started) as f64 / 1e6;
        first_byte_ms.push(since(delivered_at));
        let m = conn.milestones();
        for ((_, _, values), at) in steps.iter_mut().zip([m.tcp_connected, m.tls_done, m.quic_handshake, m.first_response]) {
            values.extend(at.map(since));
        }
        if i == 0 {
            // The RTT on the established connection: the fastest of 5 round trips (actual send → echo), 200 ms
            // apart so that no echo waits behind the previous one (SSE keeps one POST in flight per stream).
            let probe = echo(conn.open_stream(StreamOpen::echo(1)).await?, 1, 5, 16, 5, reliable).await?;
            rtt_ms = probe.records.iter().map(|r| r.received_ns - r.sent_ns).min().unwrap_or(0) as f64 / 1e6;
        }
        conn.close().await;
    }
    let in_rtts = |ms: f64| (rtt_ms > 0.0).then(|| ms / rtt_ms);
    let handshake_ms = quantile(&mut first_byte_ms, 0.5);
    outcome.set(Metric::Handshake, handshake_ms);
    outcome.set(Metric::HandshakeP90, quantile(&mut first_byte_ms, 0.9));
    let slow = first_byte_ms.iter().filter(|&&ms| ms > 1000.0).count();
    outcome.set(Metric::HandshakeOver1s, slow as f64 / first_byte_ms.len() as f64);
    outcome.set(Metric::HandshakeConnections, f64::from(connections));
    outcome.set(Metric::Rtt, rtt_ms);
    if let Some(rtts) = in_rtts(handshake_ms) {
        outcome.set(Metric::HandshakeRtts, rtts);
    }
    // A milestone the transport does not see (or its protocol lacks) is left out, not reported as zero.
    for (ms_metric, rtts_metric, mut values) in steps {
        if values.len() == first_byte_ms.len() {
            let ms = quantile(&mut values, 0.5);
            outcome.set(ms_metric, ms);
            if let Some(rtts) = in_rtts(ms) {
                outcome.set(rtts_metric, rtts);
            }
        }
    }
    Ok(())
}

/// The `q` quantile of `values` (nearest rank, q in [0, 1]); sorts them. `values` is not empty.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Steady echo traffic over the session layer for `duration_s`; at `event` (profile time) an address change makes
/// natively migrating transports rebind. Records every arrival for the timeline.
async fn steady_echo(
    ctx: &Context,
    duration_s: f64,
    rate_hz: u64,
    size: usize,
    event: Option<(Duration, EventKind)>,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let config = SessionConfig { seed: ctx.seed, ..SessionConfig::default() };
    let session = ResilientSession::connect(ctx.transport.clone(), ctx.client.clone(), config).await?;
    let stream = session.open_stream(StreamOpen { stream: 0, mode: StreamMode::Echo, resume: None }).await?;
    let messages = (duration_s * rate_hz as f64) as u64;
    let migrate = {
        let session = session.clone();
        let native = ctx.transport.capabilities().native_migration;
        let (link_started, alternate) = (ctx.link_started, ctx.alternate_local);
        tokio::spawn(async move {
            match event {
                Some((at, EventKind::AddressChange { .. })) if native => {
                    tokio::time::sleep_until(link_started + at).await;
                    // A transport that cannot move its connection falls back on reconnect + resume.
                    match session.rebind(alternate).await {
                        Ok(()) => Ok(true),
                        Err(Error::Unsupported(_)) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(false),
            }
        })
    };
    let log = echo(stream, 0, messages, size, rate_hz, true).await?;
    let rebound = migrate.await.map_err(|e| Error::Transport(e.to_string()))??;
    let ordering = Ordering::of(&log.seqs(), messages);
    record_ordering(outcome, ordering, messages);
    outcome.arrivals(&log, ctx.link_started);
    outcome.set(Metric::Reconnects, session.reconnects() as f64);
    outcome.set(Metric::ReboundNatively, f64::from(u8::from(rebound)));
    outcome.set(Metric::SurvivedWithoutReconnect, f64::from(u8::from(session.reconnects() == 0)));
    if let Some((at, _)) = event {
        outcome.set(Metric::EventAt, at.as_secs_f64() * 1000.0);
    }
    outcome.messages(Distribution::RoundTrip, std::slice::from_ref(&log));
    session.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_quantiles_are_nearest_rank() {
        let mut thirty: Vec<f64> = (1..=30).rev().map(f64::from).collect();
        assert_eq!((quantile(&mut thirty, 0.5), quantile(&mut thirty, 0.9)), (15.0, 27.0));
        assert_eq!((quantile(&mut [7.0], 0.5), quantile(&mut [7.0], 0.9)), (7.0, 7.0));
    }

    #[test]
    fn ordering_counts_violations_duplicates_missing_and_depth() {
        let o = Ordering::of(&[0, 3, 1, 2, 2, 5], 7);
        assert_eq!(o.delivered, 5);
        assert_eq!(o.missing, 2);
        assert_eq!(o.duplicates, 1);
        assert_eq!(o.order_violations, 2);
        assert_eq!(o.reorder_depth, 1);
        let deep = Ordering::of(&[4, 3, 2, 1, 0], 5);
        assert_eq!((deep.order_violations, deep.reorder_depth), (4, 4));
    }

    #[test]
    fn in_order_stream_has_no_findings() {
        let seqs: Vec<u64> = (0..100).collect();
        assert_eq!(Ordering::of(&seqs, 100), Ordering { delivered: 100, ..Ordering::default() });
    }
}
