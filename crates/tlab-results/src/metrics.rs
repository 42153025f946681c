//! The one vocabulary of measurements: every scalar metric ([`Metric`]) and every latency distribution
//! ([`Distribution`]) has a single [`Descriptor`] here — its name in `runs.jsonl` and `summary.csv`, its unit, whether
//! it is one-way or round trip (or neither), and what it counts. The workloads record through these types, the
//! summary and the report read through them, and docs/RESULTS.md carries the table [`markdown_table`] renders (a test
//! keeps the two equal), so a name cannot mean two things and a definition cannot drift.
//!
//! Latency is always measured from a message's *scheduled* send time (the time the workload's schedule gave it), not
//! from the time the send call actually ran, so a sender that falls behind its schedule shows up in the latency
//! instead of vanishing (coordinated omission); the per-message file keeps both times.

use std::fmt;

use crate::histogram::Percentiles;

/// The unit of a metric's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Megabits (10⁶ bits) per second.
    MbitPerSecond,
    /// Bytes.
    Bytes,
    /// A number of messages or events.
    Count,
    /// A ratio or share (unitless).
    Ratio,
    /// A multiple of the connection's round-trip time.
    Rtts,
    /// 1 for yes, 0 for no.
    Flag,
}

impl Unit {
    /// How the unit is written in tables and on axes.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Microseconds => "µs",
            Self::Milliseconds => "ms",
            Self::MbitPerSecond => "Mbit/s",
            Self::Bytes => "B",
            Self::Count => "count",
            Self::Ratio => "ratio",
            Self::Rtts => "RTTs",
            Self::Flag => "0/1",
        }
    }
}

/// Which way a time was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Sender to receiver (the server's send → the client's receive, on the clock both share).
    OneWay,
    /// There and back (the client's send → the echo's receive by the client).
    RoundTrip,
    /// Not a transit time (counts, ratios, durations of other things).
    Neither,
}

impl Path {
    /// `one-way`, `round trip`, or `–`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::OneWay => "one-way",
            Self::RoundTrip => "round trip",
            Self::Neither => "–",
        }
    }
}

/// Everything a reader needs to know about one metric or distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The key in `runs.jsonl` (`metrics` or `histograms`) and the `metric` column of `summary.csv`.
    pub name: &'static str,
    /// The unit of its values.
    pub unit: Unit,
    /// One-way, round trip, or neither.
    pub path: Path,
    /// The experiments that record it.
    pub experiments: &'static str,
    /// What it counts, in one sentence.
    pub counts: &'static str,
}

macro_rules! metrics {
    ($($variant:ident = $name:literal, $unit:ident, $path:ident, $experiments:literal, $counts:literal;)*) => {
        /// A scalar metric of a run (a key of `runs.jsonl`'s `metrics`); see [`Metric::descriptor`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(#[doc = $counts] $variant,)*
        }

        impl Metric {
            /// Every metric, in the order of the documentation table.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),*];

            /// Its descriptor.
            pub const fn descriptor(self) -> Descriptor {
                match self {
                    $(Metric::$variant => Descriptor {
                        name: $name,
                        unit: Unit::$unit,
                        path: Path::$path,
                        experiments: $experiments,
                        counts: $counts,
                    },)*
                }
            }
        }
    };
}

metrics! {
    OneWayP50 = "one_way_p50_us", Microseconds, OneWay, "latency (source)", "Median one-way latency: receive time − scheduled send time.";
    OneWayP90 = "one_way_p90_us", Microseconds, OneWay, "latency (source)", "90th percentile of one-way latency from the scheduled send time.";
    OneWayP99 = "one_way_p99_us", Microseconds, OneWay, "latency (source)", "99th percentile of one-way latency from the scheduled send time.";
    OneWayP999 = "one_way_p999_us", Microseconds, OneWay, "latency (source)", "99.9th percentile of one-way latency from the scheduled send time.";
    OneWayMax = "one_way_max_us", Microseconds, OneWay, "latency (source)", "Largest one-way latency from the scheduled send time.";
    OneWayMean = "one_way_mean_us", Microseconds, OneWay, "latency (source)", "Mean one-way latency from the scheduled send time.";
    RoundTripP50 = "round_trip_p50_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "Median round trip: the echo's receive time − the message's scheduled send time.";
    RoundTripP90 = "round_trip_p90_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "90th percentile of the round trip from the scheduled send time.";
    RoundTripP99 = "round_trip_p99_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "99th percentile of the round trip from the scheduled send time.";
    RoundTripP999 = "round_trip_p999_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "99.9th percentile of the round trip from the scheduled send time.";
    RoundTripMax = "round_trip_max_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "Largest round trip from the scheduled send time.";
    RoundTripMean = "round_trip_mean_us", Microseconds, RoundTrip, "latency (echo), ordering, migration, outage", "Mean round trip from the scheduled send time.";
    SendLagMax = "send_lag_max_us", Microseconds, Neither, "latency, ordering, migration, outage", "Largest actual send time − scheduled send time: how far the sender fell behind its schedule (0 when it kept it).";
    Goodput = "goodput_mbit_s", MbitPerSecond, Neither, "latency", "Distinct payload bits delivered ÷ the data phase (first scheduled send → last arrival; connect, close and quiet timeouts excluded).";
    Delivered = "delivered", Count, Neither, "latency, ordering, migration, outage, hol", "Distinct messages received (duplicates counted once).";
    Missing = "missing", Count, Neither, "latency, ordering, migration, outage, hol", "Messages sent but never received.";
    Duplicates = "duplicates", Count, Neither, "latency, ordering, migration, outage, hol", "Extra copies received of a message already received.";
    OrderViolations = "order_violations", Count, Neither, "latency, ordering, migration, outage, hol", "Messages that arrived after one with a higher seq on the same stream.";
    ReorderDepth = "reorder_depth", Count, Neither, "latency, ordering, migration, outage, hol", "Most higher seqs that arrived before some message of the same stream.";
    DeliveryRatio = "delivery_ratio", Ratio, Neither, "latency, ordering, migration, outage, hol", "Distinct messages received ÷ messages sent.";
    HolRho = "hol_rho", Ratio, Neither, "hol", "HOL index ρ = ρ_raw − ρ_null, mean over dropped epochs: stream 0's lost marker delays the other streams by this share of its recovery R; ≈ 0 for independent streams.";
    HolRhoRaw = "hol_rho_raw", Ratio, Neither, "hol", "Uncorrected ρ_raw = mean_j S_j / R (S_j: largest extra latency of stream j ≠ 0 among its messages scheduled during stream 0's recovery R), mean over dropped epochs.";
    HolRhoNull = "hol_rho_null", Ratio, Neither, "hol", "ρ_null = mean_j N_j(R) / R, mean over dropped epochs (N_j(R): stream j's largest extra latency in a window of length R after a null marker, mean over the run's null epochs): the streams' own latency spread, subtracted from ρ_raw.";
    HolRecovery = "hol_recovery_ms", Milliseconds, RoundTrip, "hol", "R: the dropped marker's extra round trip over stream 0's base, mean over dropped epochs.";
    HolRecoveryRtts = "hol_recovery_rtts", Rtts, Neither, "hol", "R ÷ the profile's nominal RTT.";
    HolStall = "hol_stall_ms", Milliseconds, RoundTrip, "hol", "mean_j S_j, mean over dropped epochs.";
    HolEpochs = "hol_epochs", Count, Neither, "hol", "Dropped epochs in the analysis (marker dropped, R > 0).";
    HolNullEpochs = "hol_null_epochs", Count, Neither, "hol", "Null epochs (rule armed on a size that never occurs) in the analysis: the reference of ρ_null.";
    HolEpochsMissed = "hol_epochs_missed", Count, Neither, "hol", "Epochs whose rule dropped nothing (the marker did not travel in a packet of the marker's size range).";
    HolRetransmissionDrops = "hol_retransmission_drops", Count, Neither, "hol", "Marker retransmissions dropped (drop_retransmission = true: the retransmission-timeout path).";
    HolPacketsPerMessage = "hol_packets_per_message", Ratio, Neither, "hol", "Uplink packets of at least the message size ÷ messages sent, counted by the emulator: 1 when each packet carries one message.";
    HolBaseRtt = "hol_base_rtt_ms", Milliseconds, RoundTrip, "hol", "Stream 0's base round trip: median of its ordinary messages.";
    Handshake = "handshake_ms", Milliseconds, Neither, "handshake", "Connect start → first message of a source stream delivered (first application byte; median over the run's connections).";
    Rtt = "rtt_ms", Milliseconds, RoundTrip, "handshake", "Fastest of 5 echo round trips, 200 ms apart, on the run's first established connection.";
    HandshakeRtts = "handshake_rtts", Rtts, Neither, "handshake", "handshake_ms ÷ rtt_ms.";
    HandshakeP90 = "handshake_p90_ms", Milliseconds, Neither, "handshake", "90th percentile over the run's connections of connect start → first message delivered.";
    HandshakeOver1s = "handshake_share_above_1s", Ratio, Neither, "handshake", "Share of the run's connections whose first message took more than 1 s.";
    HandshakeConnections = "handshake_connections", Count, Neither, "handshake", "Connections made one after the other in the run (each milestone is their median).";
    TcpConnected = "tcp_connected_ms", Milliseconds, Neither, "handshake", "Connect start → TCP handshake done (median over connections).";
    TcpConnectedRtts = "tcp_connected_rtts", Rtts, Neither, "handshake", "tcp_connected_ms ÷ rtt_ms.";
    TlsDone = "tls_done_ms", Milliseconds, Neither, "handshake", "Connect start → TLS handshake done over TCP (median over connections).";
    TlsDoneRtts = "tls_done_rtts", Rtts, Neither, "handshake", "tls_done_ms ÷ rtt_ms.";
    QuicHandshake = "quic_handshake_ms", Milliseconds, Neither, "handshake", "Connect start → QUIC handshake complete on the client (median over connections).";
    QuicHandshakeRtts = "quic_handshake_rtts", Rtts, Neither, "handshake", "quic_handshake_ms ÷ rtt_ms.";
    FirstResponse = "first_response_ms", Milliseconds, Neither, "handshake", "Connect start → first response above transport security: HTTP response headers, WebSocket 101, CONNECT 200 (median over connections).";
    FirstResponseRtts = "first_response_rtts", Rtts, Neither, "handshake", "first_response_ms ÷ rtt_ms.";
    MarginalUplinkPaced = "marginal_uplink_paced_bytes", Bytes, Neither, "overhead", "IP bytes client → server one more message costs, (W₂ − W₁)/(N₂ − N₁), paced (one message per packet).";
    MarginalDownlinkPaced = "marginal_downlink_paced_bytes", Bytes, Neither, "overhead", "IP bytes server → client one more (echoed) message costs, paced.";
    MarginalUplinkSaturated = "marginal_uplink_saturated_bytes", Bytes, Neither, "overhead", "IP bytes client → server one more message costs, sent as fast as possible.";
    MarginalDownlinkSaturated = "marginal_downlink_saturated_bytes", Bytes, Neither, "overhead", "IP bytes server → client one more (echoed) message costs, sent as fast as possible.";
    OverheadUplinkPaced = "overhead_uplink_paced_bytes", Bytes, Neither, "overhead", "marginal_uplink_paced_bytes − payload size: framing and headers per message.";
    OverheadDownlinkPaced = "overhead_downlink_paced_bytes", Bytes, Neither, "overhead", "marginal_downlink_paced_bytes − payload size.";
    OverheadUplinkSaturated = "overhead_uplink_saturated_bytes", Bytes, Neither, "overhead", "marginal_uplink_saturated_bytes − payload size.";
    OverheadDownlinkSaturated = "overhead_downlink_saturated_bytes", Bytes, Neither, "overhead", "marginal_downlink_saturated_bytes − payload size.";
    Gap = "gap_ms", Milliseconds, Neither, "migration, outage", "Longest time between two consecutive arrivals.";
    Reconnects = "reconnects", Count, Neither, "migration, outage", "Reconnections the session layer made (browser client: the EventSource's own or the page's).";
    ReboundNatively = "rebound_natively", Flag, Neither, "migration", "The transport moved its connection to the new address itself.";
    SurvivedWithoutReconnect = "survived_without_reconnect", Flag, Neither, "migration, outage", "No reconnection was needed.";
    EventAt = "event_at_ms", Milliseconds, Neither, "migration, outage", "When the profile's event happened, since the link started.";
    RecoveryAfterOutage = "recovery_after_outage_ms", Milliseconds, Neither, "outage", "gap_ms − the blackhole's length.";
    StalledStreams = "stalled_streams", Count, Neither, "connection-limit", "Streams whose first message arrived more than 1 s after the fastest stream's (waiting for a connection).";
    StallMax = "stall_max_ms", Milliseconds, Neither, "connection-limit", "Longest time from opening a stream to its first message, less the fastest stream's.";
    LinkLoss = "link_loss", Ratio, Neither, "every run", "The profile's nominal uplink loss probability.";
    LinkDelay = "link_delay_ms", Milliseconds, OneWay, "every run", "The profile's nominal uplink delay.";
}

impl Metric {
    /// Its key in `runs.jsonl` and `summary.csv`.
    pub const fn name(self) -> &'static str {
        self.descriptor().name
    }

    /// The metric of that key, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// `name (unit)`, plus the path for a transit time: the label of a table column or an axis.
    pub fn label(self) -> String {
        let d = self.descriptor();
        match d.path {
            Path::Neither => format!("{} ({})", d.name, d.unit.label()),
            path => format!("{} ({}, {})", d.name, path.label(), d.unit.label()),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A summary statistic of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Largest.
    Max,
    /// Mean.
    Mean,
}

impl Stat {
    /// Every statistic a distribution is summarized by.
    pub const ALL: [Stat; 6] = [Stat::P50, Stat::P90, Stat::P99, Stat::P999, Stat::Max, Stat::Mean];

    /// Its value in `p`, µs.
    pub fn of(self, p: &Percentiles) -> f64 {
        match self {
            Self::P50 => p.p50_us as f64,
            Self::P90 => p.p90_us as f64,
            Self::P99 => p.p99_us as f64,
            Self::P999 => p.p999_us as f64,
            Self::Max => p.max_us as f64,
            Self::Mean => p.mean_us,
        }
    }
}

/// A latency distribution of a run (a key of `runs.jsonl`'s `histograms`), with the metrics that summarize it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// One-way latency of source streams (the server sends on a schedule).
    OneWay,
    /// Round trips of echo streams (the client sends on a schedule).
    RoundTrip,
}

impl Distribution {
    /// Every distribution, in the order of the documentation table.
    pub const ALL: [Distribution; 2] = [Self::OneWay, Self::RoundTrip];

    /// Its descriptor (unit µs; counts per message).
    pub const fn descriptor(self) -> Descriptor {
        let (name, path, experiments, counts) = match self {
            Self::OneWay => ("one_way_latency", Path::OneWay, "latency (source)", "Every received message's one-way latency from its scheduled send time."),
            Self::RoundTrip => ("round_trip_latency", Path::RoundTrip, "latency (echo), ordering, migration, outage", "Every received echo's round trip from its scheduled send time."),
        };
        Descriptor { name, unit: Unit::Microseconds, path, experiments, counts }
    }

    /// Its key in `runs.jsonl`'s `histograms`.
    pub const fn name(self) -> &'static str {
        self.descriptor().name
    }

    /// The metric that holds statistic `stat` of this distribution.
    pub const fn metric(self, stat: Stat) -> Metric {
        use Metric::*;
        let row = match self {
            Self::OneWay => [OneWayP50, OneWayP90, OneWayP99, OneWayP999, OneWayMax, OneWayMean],
            Self::RoundTrip => [RoundTripP50, RoundTripP90, RoundTripP99, RoundTripP999, RoundTripMax, RoundTripMean],
        };
        row[stat as usize]
    }

    /// The axis label of its values: `one-way latency (µs)` or `round trip (µs)`.
    pub const fn axis_label(self) -> &'static str {
        match self.descriptor().path {
            Path::RoundTrip => "round-trip latency (µs)",
            _ => "one-way latency (µs)",
        }
    }
}

fn row(d: &Descriptor) -> String {
    format!("| `{}` | {} | {} | {} | {} |\n", d.name, d.unit.label(), d.path.label(), d.experiments, d.counts)
}

/// The metric and distribution tables of docs/RESULTS.md, rendered from the descriptors.
pub fn markdown_table() -> String {
    let header = "| name | unit | path | recorded by | what it counts |\n|---|---|---|---|---|\n";
    let mut md = format!("Scalar metrics (`metrics`, one `summary.csv` row each):\n\n{header}");
    for metric in Metric::ALL {
        md.push_str(&row(&metric.descriptor()));
    }
    md.push_str(&format!("\nDistributions (`histograms`, HdrHistogram buckets):\n\n{header}"));
    for distribution in Distribution::ALL {
        md.push_str(&row(&distribution.descriptor()));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines between these markers in docs/RESULTS.md are [`markdown_table`]'s output (`TLAB_BLESS=1` rewrites them).
    const BEGIN: &str = "<!-- metrics table: generated from crates/tlab-results/src/metrics.rs -->\n";
    const END: &str = "<!-- end of metrics table -->";

    #[test]
    fn names_are_unique_and_found_again() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).chain(Distribution::ALL.map(Distribution::name)).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "one name, one meaning");
        for metric in Metric::ALL {
            assert_eq!(Metric::from_name(metric.name()), Some(*metric));
        }
        assert_eq!(Metric::from_name("p50_us"), None, "the old ambiguous name is gone");
    }

    #[test]
    fn distribution_statistics_share_the_distribution_path_and_unit() {
        for distribution in Distribution::ALL {
            for stat in Stat::ALL {
                let metric = distribution.metric(stat).descriptor();
                assert_eq!((metric.path, metric.unit), (distribution.descriptor().path, Unit::Microseconds), "{metric:?}");
            }
        }
        assert_eq!(Distribution::OneWay.metric(Stat::P999), Metric::OneWayP999);
        assert_eq!(Distribution::RoundTrip.axis_label(), "round-trip latency (µs)");
        assert_eq!(Metric::RoundTripP99.label(), "round_trip_p99_us (round trip, µs)");
    }

    #[test]
    fn results_md_carries_the_rendered_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/RESULTS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(BEGIN).expect("docs/RESULTS.md has the metrics table markers") + BEGIN.len();
        let end = start + doc[start..].find(END).expect("end marker");
        if std::env::var_os("TLAB_BLESS").is_some() {
            std::fs::write(&path, format!("{}{}{}", &doc[..start], markdown_table(), &doc[end..])).unwrap();
            return;
        }
        assert_eq!(doc[start..end], markdown_table(), "docs/RESULTS.md's metric table differs from the descriptors: rerun with TLAB_BLESS=1 to rewrite it");
    }
}
