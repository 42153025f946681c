//! `tlab client`: one exchange against a server, counted and timed.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tlab_core::clock::monotonic_ns;
use tlab_session::{ResilientSession, SessionConfig};
use tlab_core::{ClientConfig, Connection, Message, MessageStream, StreamId, StreamMode, StreamOpen, Transport};

/// What the exchange does on each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Client sends, server echoes; latency is the round trip.
    Echo,
    /// Server sends; latency is one-way (client and server share the monotonic clock on one host).
    Source,
    /// Client sends, server counts; no latency.
    Sink,
}

/// Parameters of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Logical streams, run concurrently.
    pub streams: u32,
    /// Messages per stream.
    pub messages: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// What each stream does.
    pub pattern: Pattern,
    /// Run over the session layer (heartbeat, reconnect, resume).
    pub resilient: bool,
    /// On a transport without reliable delivery (datagrams), a stream ends after this long without a message:
    /// nothing signals the end of a datagram flow, and lost datagrams never come.
    pub quiet: std::time::Duration,
}

/// Per-message accounting of one stream's received seqs.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// Distinct messages received.
    pub delivered: u64,
    /// Messages expected but never received.
    pub lost: u64,
    /// Messages received more than once (extra copies).
    pub duplicated: u64,
    /// Messages that arrived after one with a higher seq.
    pub out_of_order: u64,
}

impl Delivery {
    /// Accounts `received` seqs (in arrival order) against `expected` messages numbered 0..expected.
    pub fn of(received: &[u64], expected: u64) -> Self {
        let mut seen = std::collections::HashSet::with_capacity(received.len());
        let mut highest: Option<u64> = None;
        let mut out = Self::default();
        for &seq in received {
            if !seen.insert(seq) {
                out.duplicated += 1;
                continue;
            }
            if highest.is_some_and(|h| seq < h) {
                out.out_of_order += 1;
            }
            highest = highest.max(Some(seq));
        }
        out.delivered = seen.iter().filter(|&&s| s < expected).count() as u64;
        out.lost = expected - out.delivered;
        out
    }

    fn add(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// The printed result of `tlab client`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Transport mode.
    pub transport: String,
    /// Pattern run.
    pub pattern: Pattern,
    /// Streams.
    pub streams: u32,
    /// Messages per stream.
    pub messages: u64,
    /// Payload bytes.
    pub size: usize,
    /// Totals over all streams.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Round-trip (echo) or one-way (source) latency; absent for sink.
    pub latency: Option<Percentiles>,
    /// Delivered over expected messages (1 for every reliable transport that finished).
    pub delivery_ratio: f64,
    /// Duration of the data phase in seconds: from the first stream open to the last message received (connecting
    /// before and a datagram stream's quiet timeout after are not included).
    pub elapsed_s: f64,
    /// Payload goodput in Mbit/s (delivered payload bytes over the data phase).
    pub goodput_mbit_s: f64,
    /// Connections re-established by the session layer.
    pub reconnects: u64,
}

struct StreamOutcome {
    received: Vec<u64>,
    latencies_ns: Vec<u64>,
    /// CLOCK_MONOTONIC of the last message received (0 if none).
    last_received_ns: u64,
}

/// Runs `plan` against the server at `config.url`.
pub async fn run(transport: Arc<dyn Transport>, config: ClientConfig, plan: Plan) -> anyhow::Result<Report> {
    let mode = match plan.pattern {
        Pattern::Echo => StreamMode::Echo,
        Pattern::Source => StreamMode::Source { count: plan.messages, size: plan.size, interval_us: 0 },
        Pattern::Sink => StreamMode::Sink,
    };
    let mut streams = Vec::new();
    // The session layer is itself a connection: one code path opens the streams either way.
    let session = match plan.resilient {
        true => Some(ResilientSession::connect(transport.clone(), config.clone(), SessionConfig::default()).await.context("connect")?),
        false => None,
    };
    let conn: Box<dyn Connection> = match &session {
        Some(s) => Box::new(s.clone()),
        None => transport.connect(config).await.context("connect")?,
    };
    let started = monotonic_ns();
    for id in 0..plan.streams {
        let open = StreamOpen { stream: id, mode, resume: None };
        streams.push((id, conn.open_stream(open).await.with_context(|| format!("open stream {id}"))?));
    }
    let quiet = (!transport.capabilities().reliable).then_some(plan.quiet);
    let tasks: Vec<_> =
        streams.into_iter().map(|(id, stream)| tokio::spawn(run_stream(id, stream, plan, quiet))).collect();
    let mut last_received_ns = started;
    let mut delivery = Delivery::default();
    let mut histogram = Histogram::<u64>::new(3).expect("3 significant digits");
    for task in tasks {
        let outcome = task.await.context("stream task")??;
        last_received_ns = last_received_ns.max(outcome.last_received_ns);
        let expected = if plan.pattern == Pattern::Sink { 1 } else { plan.messages };
        delivery.add(Delivery::of(&outcome.received, expected));
        for ns in outcome.latencies_ns {
            histogram.record((ns / 1000).max(1)).expect("auto-resizing histogram");
        }
    }
    let elapsed_s = (last_received_ns - started) as f64 / 1e9;
    let expected = if plan.pattern == Pattern::Sink { 1 } else { plan.messages } * u64::from(plan.streams);
    let payload_bytes = if plan.pattern == Pattern::Sink { plan.messages * plan.streams as u64 } else { delivery.delivered }
        * plan.size as u64;
    Ok(Report {
        transport: transport.name().to_string(),
        pattern: plan.pattern,
        streams: plan.streams,
        messages: plan.messages,
        size: plan.size,
        delivery,
        latency: Percentiles::of(&histogram),
        delivery_ratio: if expected == 0 { 1.0 } else { delivery.delivered as f64 / expected as f64 },
        elapsed_s,
        goodput_mbit_s: if elapsed_s > 0.0 { payload_bytes as f64 * 8.0 / elapsed_s / 1e6 } else { 0.0 },
        reconnects: session.map_or(0, |s| s.reconnects()),
    })
}

async fn run_stream(
    id: StreamId,
    stream: MessageStream,
    plan: Plan,
    quiet: Option<std::time::Duration>,
) -> anyhow::Result<StreamOutcome> {
    let MessageStream { mut sink, mut source } = stream;
    let mut outcome = StreamOutcome { received: Vec::new(), latencies_ns: Vec::new(), last_received_ns: 0 };
    let (sender, mut source_sink) = if plan.pattern == Pattern::Source {
        (None, Some(sink))
    } else {
        let payload = Bytes::from(vec![0x5Au8; plan.size]);
        let sender = tokio::spawn(async move {
            for seq in 0..plan.messages {
                sink.send(Message::data(id, seq, payload.clone())).await.with_context(|| format!("stream {id}: send {seq}"))?;
            }
            sink.finish().await.with_context(|| format!("stream {id}: finish"))
        });
        (Some(sender), None)
    };
    loop {
        if outcome.received.len() as u64 >= plan.messages
            && let Some(mut sink) = source_sink.take()
        {
            // A source stream ends our empty direction once everything arrived (the session layer's server waits
            // for it); a plain server may have closed the stream already, so a failure here is harmless.
            let _ = sink.finish().await;
        }
        let next = match quiet {
            Some(quiet) => match tokio::time::timeout(quiet, source.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => source.recv().await,
        };
        let Some(msg) = next.with_context(|| format!("stream {id}: recv"))? else { break };
        outcome.last_received_ns = monotonic_ns();
        outcome.received.push(msg.seq);
        if plan.pattern != Pattern::Sink {
            outcome.latencies_ns.push(monotonic_ns().saturating_sub(msg.sent_at));
        }
    }
    if let Some(sender) = sender {
        sender.await.context("sender task")??;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_counts_each_anomaly() {
        let d = Delivery::of(&[0, 1, 3, 2, 2, 5], 6);
        assert_eq!(d, Delivery { delivered: 5, lost: 1, duplicated: 1, out_of_order: 1 });
    }

    #[test]
    fn delivery_of_a_perfect_stream() {
        let received: Vec<u64> = (0..100).collect();
        assert_eq!(Delivery::of(&received, 100), Delivery { delivered: 100, lost: 0, duplicated: 0, out_of_order: 0 });
    }
}
