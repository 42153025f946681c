//! The client side of each experiment: a workload on the transport under test and the metrics it yields.
//! Definitions (also stated in the report): latency is one-way (`receive time − sent_at` on the shared monotonic
//! clock) for source streams and round trip for echo streams, in µs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::clock::monotonic_ns;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::{ClientConfig, Connection, Error, Message, MessageStream, StreamId, StreamMode, StreamOpen, Transport};
use tlab_netem::{EventKind, Profile, ScheduleAction};
use tlab_results::LatencyHistogram;
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
    /// Scalar metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Latency histograms.
    pub histograms: BTreeMap<String, LatencyHistogram>,
    /// Time series.
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Outcome {
    fn set(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    fn latency(&mut self, prefix: &str, histogram: LatencyHistogram) {
        if let Some(p) = histogram.percentiles() {
            for (name, value) in [("p50_us", p.p50_us), ("p90_us", p.p90_us), ("p99_us", p.p99_us), ("p999_us", p.p999_us), ("max_us", p.max_us)] {
                self.set(&format!("{prefix}{name}"), value as f64);
            }
            self.set(&format!("{prefix}mean_us"), p.mean_us);
        }
        self.histograms.insert(format!("{prefix}latency").trim_end_matches('_').to_string(), histogram);
    }
}

/// What one stream received.
#[derive(Debug, Default)]
struct StreamLog {
    /// Seqs in arrival order.
    seqs: Vec<u64>,
    /// Latency of each arrival, ns.
    latencies_ns: Vec<u64>,
    /// Arrival times, ns on the monotonic clock.
    arrivals_ns: Vec<u64>,
}

impl StreamLog {
    fn record(&mut self, msg: &Message) {
        let now = monotonic_ns();
        self.seqs.push(msg.seq);
        self.latencies_ns.push(now.saturating_sub(msg.sent_at));
        self.arrivals_ns.push(now);
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

/// Reads a source stream to its end.
async fn read_source(stream: MessageStream) -> Result<StreamLog, Error> {
    let MessageStream { mut sink, mut source } = stream;
    let mut log = StreamLog::default();
    while let Some(msg) = source.recv().await? {
        log.record(&msg);
    }
    let _ = sink.finish().await;
    Ok(log)
}

/// Sends `messages` at `rate_hz` on an echo stream and logs the echoes. Reliable streams end with the server's
/// finish; unreliable ones when everything came back or nothing arrived for `quiet`.
async fn echo(stream: MessageStream, id: StreamId, messages: u64, size: usize, rate_hz: u64, reliable: bool) -> Result<StreamLog, Error> {
    let MessageStream { mut sink, mut source } = stream;
    let payload = Bytes::from(vec![0x3Cu8; size]);
    let sender = tokio::spawn(async move {
        let start = Instant::now();
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
    let quiet = Duration::from_secs(2);
    loop {
        let next = if reliable { Ok(source.recv().await) } else { tokio::time::timeout(quiet, source.recv()).await };
        match next {
            Ok(Ok(Some(msg))) => {
                log.record(&msg);
                if !reliable && log.seqs.len() as u64 >= messages {
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
    Ok(log)
}

fn histogram_of(logs: &[StreamLog]) -> LatencyHistogram {
    let mut histogram = LatencyHistogram::new();
    for ns in logs.iter().flat_map(|l| &l.latencies_ns) {
        histogram.record_ns(*ns);
    }
    histogram
}

fn ordering_of(logs: &[StreamLog], expected: u64) -> Ordering {
    let mut total = Ordering::default();
    for log in logs {
        total.add(Ordering::of(&log.seqs, expected));
    }
    total
}

fn record_ordering(outcome: &mut Outcome, ordering: Ordering, expected_total: u64) {
    outcome.set("delivered", ordering.delivered as f64);
    outcome.set("missing", ordering.missing as f64);
    outcome.set("duplicates", ordering.duplicates as f64);
    outcome.set("order_violations", ordering.order_violations as f64);
    outcome.set("reorder_depth", ordering.reorder_depth as f64);
    outcome.set("delivery_ratio", ordering.delivered as f64 / expected_total.max(1) as f64);
}

/// Opens `streams` source streams, on one connection (`shared`) or one connection each, and reads them all.
/// Unreliable (datagram) modes have no source streams: they run the same schedule as echo streams.
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
        if reliable {
            let stream = conn.open_stream(StreamOpen { stream: id, mode, resume: None }).await?;
            tasks.push(tokio::spawn(read_source(stream)));
        } else {
            let stream = conn.open_stream(StreamOpen::echo(id)).await?;
            tasks.push(tokio::spawn(echo(stream, id, messages, size, rate_hz, false)));
        }
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
            let started = Instant::now();
            let logs = if pattern == "echo" {
                echo_streams(ctx, *streams, *messages, *size, *rate_hz).await?
            } else {
                sources(ctx, *streams, *messages, *size, *rate_hz, true).await?
            };
            let elapsed = started.elapsed().as_secs_f64();
            let ordering = ordering_of(&logs, *messages);
            record_ordering(&mut outcome, ordering, *messages * *streams as u64);
            outcome.set("goodput_mbit_s", (ordering.delivered * *size as u64) as f64 * 8.0 / elapsed / 1e6);
            outcome.latency("", histogram_of(&logs));
        }
        ExperimentSpec::Hol { streams, messages, size, rate_hz } => {
            if !reliable {
                return Err(Error::Unsupported("head-of-line blocking is measured on reliable, ordered streams"));
            }
            let shared = sources(ctx, *streams, *messages, *size, *rate_hz, true).await?;
            let separate = sources(ctx, *streams, *messages, *size, *rate_hz, false).await?;
            let (shared_h, separate_h) = (histogram_of(&shared), histogram_of(&separate));
            // Base one-way delay = the fastest message seen; "delayed > 1 RTT beyond base" = above 3 × base.
            let base_us = shared_h.quantile_us(0.0).min(separate_h.quantile_us(0.0));
            outcome.set("base_one_way_us", base_us as f64);
            outcome.set("delayed_share_shared", shared_h.share_above_us(3 * base_us));
            outcome.set("delayed_share_separate", separate_h.share_above_us(3 * base_us));
            let (p99_shared, p99_separate) = (shared_h.quantile_us(0.99) as f64, separate_h.quantile_us(0.99) as f64);
            outcome.set("hol_penalty_us", p99_shared - p99_separate);
            record_ordering(&mut outcome, ordering_of(&shared, *messages), *messages * *streams as u64);
            outcome.latency("shared_", shared_h);
            outcome.latency("separate_", separate_h);
        }
        ExperimentSpec::Ordering { streams, messages, size, rate_hz } => {
            let logs = echo_streams(ctx, *streams, *messages, *size, *rate_hz).await?;
            record_ordering(&mut outcome, ordering_of(&logs, *messages), *messages * *streams as u64);
            outcome.latency("", histogram_of(&logs));
        }
        ExperimentSpec::Handshake {} => {
            let started = monotonic_ns();
            let conn = ctx.transport.connect(ctx.client.clone()).await?;
            let first = if reliable {
                let mode = StreamMode::Source { count: 1, size: 64, interval_us: 0 };
                read_source(conn.open_stream(StreamOpen { stream: 0, mode, resume: None }).await?).await?
            } else {
                echo(conn.open_stream(StreamOpen::echo(0)).await?, 0, 1, 64, 0, false).await?
            };
            let delivered_at = *first.arrivals_ns.first().ok_or_else(|| Error::Closed("no first message".into()))?;
            let handshake_ms = (delivered_at - started) as f64 / 1e6;
            // The RTT on the established connection: the fastest of 5 sequential round trips.
            let probe = echo(conn.open_stream(StreamOpen::echo(1)).await?, 1, 5, 16, 20, reliable).await?;
            let rtt_ms = probe.latencies_ns.iter().min().copied().unwrap_or(0) as f64 / 1e6;
            conn.close().await;
            outcome.set("handshake_ms", handshake_ms);
            outcome.set("rtt_ms", rtt_ms);
            if rtt_ms > 0.0 {
                outcome.set("handshake_rtts", handshake_ms / rtt_ms);
            }
        }
        ExperimentSpec::Overhead { sizes, messages } => {
            let size = sizes[0];
            let before = (ctx.wire_bytes)();
            let conn = ctx.transport.connect(ctx.client.clone()).await?;
            let log = echo(conn.open_stream(StreamOpen::echo(0)).await?, 0, *messages, size, 0, reliable).await?;
            conn.close().await;
            // Let the last packets (close, final acks) cross the emulator before counting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let wire = ((ctx.wire_bytes)() - before) as f64;
            let payload = ((*messages + log.seqs.len() as u64) * size as u64) as f64;
            outcome.set("wire_bytes", wire);
            outcome.set("payload_bytes", payload);
            outcome.set("overhead_ratio", if payload > 0.0 { wire / payload } else { f64::NAN });
            outcome.set("wire_bytes_per_message", wire / (*messages + log.seqs.len() as u64) as f64);
        }
        ExperimentSpec::Migration { duration_s, rate_hz, size } => {
            let event = ctx.profile.schedule.iter().find_map(|e| match e.action {
                ScheduleAction::Event(kind) => Some((e.at, kind)),
                _ => None,
            });
            steady_echo(ctx, *duration_s, *rate_hz, *size, event, &mut outcome).await?;
        }
        ExperimentSpec::Outage { duration_s, rate_hz } => {
            steady_echo(ctx, *duration_s, *rate_hz, 64, None, &mut outcome).await?;
            let blackhole = ctx.profile.schedule.iter().find_map(|e| match e.action {
                ScheduleAction::Blackhole { duration, .. } => Some((e.at, duration)),
                _ => None,
            });
            if let Some((at, length)) = blackhole {
                outcome.set("event_at_ms", at.as_secs_f64() * 1000.0);
                if let Some(gap) = outcome.metrics.get("gap_ms").copied() {
                    outcome.set("recovery_after_outage_ms", gap - length.as_secs_f64() * 1000.0);
                }
            }
        }
    }
    Ok(outcome)
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
    // Arrivals are plotted on the profile's clock (time since the link started), where its events are scheduled.
    let link_start_ns = monotonic_ns().saturating_sub(ctx.link_started.elapsed().as_nanos() as u64);
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
    let ordering = Ordering::of(&log.seqs, messages);
    record_ordering(outcome, ordering, messages);
    let gap_ns = log.arrivals_ns.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    outcome.set("gap_ms", gap_ns as f64 / 1e6);
    outcome.set("reconnects", session.reconnects() as f64);
    outcome.set("rebound_natively", f64::from(u8::from(rebound)));
    outcome.set("survived_without_reconnect", f64::from(u8::from(session.reconnects() == 0)));
    if let Some((at, _)) = event {
        outcome.set("event_at_ms", at.as_secs_f64() * 1000.0);
    }
    outcome.series.insert(
        "arrivals".into(),
        log.arrivals_ns.iter().zip(&log.seqs).map(|(t, s)| ((t - link_start_ns) as f64 / 1e6, *s as f64)).collect(),
    );
    outcome.latency("", histogram_of(std::slice::from_ref(&log)));
    session.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
