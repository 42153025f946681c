//! Wire overhead that isolates framing (issue 8, item 6): the marginal IP bytes per message, (W₂ − W₁)/(N₂ − N₁),
//! from two batches of N₁ = N/2 and N₂ = N echoed messages on one already established connection, each batch on
//! its own stream and counted per direction by the emulator from just before its first message to 300 ms after its
//! last echo, after an unmeasured warm-up batch (what a connection sends once after its handshake — QUIC's path-MTU
//! probes, TLS session tickets — would otherwise fall into the first batch only). Whatever a batch costs regardless of its length — the handshake (done before), opening and finishing
//! the stream, the final acknowledgements — cancels in the difference, so what is left is what one more message
//! costs: payload plus framing plus its share of packet headers and acknowledgements. Measured paced (`rate_hz`,
//! one message per packet: framing per message) and saturated (as fast as possible: batching shares headers).
//! The uplink carries the messages, the downlink their echoes, so the WebSocket client frame (masked) shows on the
//! uplink and SSE's base64 on the downlink.

use std::time::Duration;

use bytes::Bytes;
use tlab_core::{Connection, Error, Message, MessageStream, StreamOpen};

use crate::workload::{Context, Outcome};

/// The metrics this experiment records (descriptors in `tlab_results::Metric`), bytes per message.
pub mod names {
    use tlab_results::Metric;
    /// See [`Metric::MarginalUplinkPaced`].
    pub const UPLINK_PACED: &str = Metric::MarginalUplinkPaced.name();
    /// See [`Metric::MarginalDownlinkPaced`].
    pub const DOWNLINK_PACED: &str = Metric::MarginalDownlinkPaced.name();
    /// See [`Metric::MarginalUplinkSaturated`].
    pub const UPLINK_SATURATED: &str = Metric::MarginalUplinkSaturated.name();
    /// See [`Metric::MarginalDownlinkSaturated`].
    pub const DOWNLINK_SATURATED: &str = Metric::MarginalDownlinkSaturated.name();
    /// The same four minus the payload size, in that order.
    pub const OVERHEAD: [&str; 4] = [
        Metric::OverheadUplinkPaced.name(),
        Metric::OverheadDownlinkPaced.name(),
        Metric::OverheadUplinkSaturated.name(),
        Metric::OverheadDownlinkSaturated.name(),
    ];
}

/// Bytes one more message costs: (W₂ − W₁)/(N₂ − N₁); `None` unless N₂ > N₁.
pub fn marginal_bytes(w1: u64, n1: u64, w2: u64, n2: u64) -> Option<f64> {
    (n2 > n1).then(|| (w2 as f64 - w1 as f64) / (n2 - n1) as f64)
}

/// IP bytes (uplink, downlink) the link carried so far.
fn bytes(ctx: &Context) -> Result<(u64, u64), Error> {
    let c = ctx.link.counters().map_err(|e| Error::Transport(format!("link counters: {e}")))?;
    Ok((c.uplink.output.bytes, c.downlink.output.bytes))
}

/// Echoes `messages` on a new stream `id` at `rate_hz` (0: as fast as possible); returns the bytes it cost per
/// direction.
async fn batch(ctx: &Context, conn: &dyn Connection, id: u32, messages: u64, size: usize, rate_hz: u64) -> Result<(u64, u64), Error> {
    let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(id)).await?;
    let before = bytes(ctx)?;
    let payload = Bytes::from(vec![0x4Fu8; size]);
    let sender = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for seq in 0..messages {
            if rate_hz > 0 {
                tokio::time::sleep_until(start + Duration::from_micros(seq * 1_000_000 / rate_hz)).await;
            }
            sink.send(Message::data(id, seq, payload.clone())).await?;
        }
        sink.finish().await?;
        Ok::<_, Error>(sink)
    });
    let mut echoed = 0;
    while source.recv().await?.is_some() {
        echoed += 1;
    }
    let _ = sender.await.map_err(|e| Error::Transport(e.to_string()))??;
    if echoed != messages {
        return Err(Error::Closed(format!("overhead batch: {echoed} of {messages} echoes")));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = bytes(ctx)?;
    Ok((after.0 - before.0, after.1 - before.1))
}

/// Runs the overhead experiment: `messages` (N₂) and half of it (N₁), paced at `rate_hz` and saturated.
pub async fn run(ctx: &Context, size: usize, messages: u64, rate_hz: u64) -> Result<Outcome, Error> {
    if !ctx.transport.capabilities().reliable {
        return Err(Error::Unsupported("marginal overhead is measured on reliable streams (every echo must arrive)"));
    }
    let conn = ctx.transport.connect(ctx.client.clone()).await?;
    // What a connection sends once, shortly after its handshake (QUIC's path-MTU probes, TLS session tickets,
    // connection-ID and token frames), would land in the first batch only and bias the difference: an unmeasured
    // warm-up batch and a quiet second take it first.
    batch(ctx, conn.as_ref(), 4, 10, size, rate_hz).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n1, n2) = (messages / 2, messages);
    let mut outcome = Outcome::default();
    let mut overhead = names::OVERHEAD.iter();
    for (mode, rate, names) in [
        (0, rate_hz, [names::UPLINK_PACED, names::DOWNLINK_PACED]),
        (1, 0, [names::UPLINK_SATURATED, names::DOWNLINK_SATURATED]),
    ] {
        let w1 = batch(ctx, conn.as_ref(), 2 * mode, n1, size, rate).await?;
        let w2 = batch(ctx, conn.as_ref(), 2 * mode + 1, n2, size, rate).await?;
        for (name, (a, b)) in names.into_iter().zip([(w1.0, w2.0), (w1.1, w2.1)]) {
            let marginal = marginal_bytes(a, n1, b, n2).ok_or(Error::Unsupported("overhead needs messages ≥ 2"))?;
            outcome.metrics.insert(name.to_string(), marginal);
            outcome.metrics.insert(overhead.next().expect("four overhead names").to_string(), marginal - size as f64);
        }
    }
    conn.close().await;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_costs_cancel_and_the_marginal_cost_remains() {
        // 5,000 bytes of fixed cost per batch (stream open, close, acks) + 180 bytes per message.
        let w = |n: u64| 5_000 + 180 * n;
        assert_eq!(marginal_bytes(w(100), 100, w(200), 200), Some(180.0));
        assert_eq!(marginal_bytes(w(100), 100, w(100), 100), None);
    }
}
