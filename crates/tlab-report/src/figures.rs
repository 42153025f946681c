//! From raw results to the report's tables and figures.

use tlab_results::{Distribution, LatencyHistogram, Manifest, Metric, RunRecord, RunStatus, Stat, SummaryRow};

use crate::completeness::Completeness;
use crate::document::{Block, Document};
use crate::svg::{BarChart, LineChart, Series};

/// `summary.csv`: one row per cell and metric.
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut csv = String::from("experiment,params,transport,profile,metric,mean,ci95,n,failed\n");
    for r in rows {
        let params = format!("\"{}\"", r.params.replace('"', "\"\""));
        let ci95 = r.ci95.map_or(String::new(), |ci| ci.to_string());
        csv.push_str(&format!("{},{params},{},{},{},{},{ci95},{},{}\n", r.experiment, r.transport, r.profile, r.metric, r.mean, r.n, r.failed));
    }
    csv
}

/// A file-name-safe label for a profile given as a name or a path (`profiles/rtt10-loss1.toml` → `rtt10-loss1`).
fn slug(profile: &str) -> String {
    let stem = profile.rsplit('/').next().unwrap_or(profile).trim_end_matches(".toml");
    stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Distinct values in first-seen order.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    out
}

/// A mean with its CI: `12.00 ± 4.97`; `12.00 ± n/a` with one repetition (no spread can be estimated, which is
/// not a spread of 0).
fn fmt(mean: f64, ci: Option<f64>) -> String {
    let digits = if mean.fract() == 0.0 && ci.is_none_or(|c| c == 0.0) {
        0
    } else if mean.abs() >= 100.0 {
        0
    } else if mean.abs() >= 1.0 {
        2
    } else {
        4
    };
    match ci {
        Some(ci) => format!("{mean:.digits$} ± {ci:.digits$}"),
        None => format!("{mean:.digits$} ± n/a"),
    }
}

/// `name (n = 3)`, or `name (n = 2–5)` when the points of a series rest on different numbers of runs.
fn with_n(name: &str, ns: impl IntoIterator<Item = usize>) -> String {
    let ns: Vec<usize> = ns.into_iter().collect();
    match (ns.iter().min(), ns.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("{name} (n = {lo})"),
        (Some(lo), Some(hi)) => format!("{name} (n = {lo}–{hi})"),
        _ => format!("{name} (n = 0)"),
    }
}

struct Summary<'a> {
    rows: &'a [SummaryRow],
}

impl Summary<'_> {
    fn row(&self, experiment: &str, params: Option<&str>, transport: &str, profile: &str, metric: Metric) -> Option<&SummaryRow> {
        self.rows.iter().find(|r| {
            r.experiment == experiment && params.is_none_or(|p| r.params == p) && r.transport == transport && r.profile == profile && r.metric == metric.name()
        })
    }

    fn get(&self, experiment: &str, params: Option<&str>, transport: &str, profile: &str, metric: Metric) -> Option<(f64, Option<f64>)> {
        self.row(experiment, params, transport, profile, metric).map(|r| (r.mean, r.ci95))
    }
}

/// Metrics shown in each experiment's table, where its cells have them (the rest are in summary.csv).
fn headline_metrics(experiment: &str) -> &'static [Metric] {
    use Metric::*;
    match experiment {
        "latency" => &[OneWayP50, OneWayP99, OneWayP999, RoundTripP50, RoundTripP99, RoundTripP999, Goodput, DeliveryRatio, Missing, OrderViolations],
        "hol" => &[HolRho, HolRhoRaw, HolRhoNull, HolRecovery, HolRecoveryRtts, HolPacketsPerMessage, HolEpochs],
        "ordering" => &[DeliveryRatio, OrderViolations, Duplicates, Missing, ReorderDepth],
        "migration" => &[Gap, Missing, Duplicates, Reconnects, SurvivedWithoutReconnect],
        "handshake" => &[Handshake, HandshakeRtts, Rtt],
        "overhead" => &[MarginalUplinkPaced, MarginalDownlinkPaced, MarginalUplinkSaturated, MarginalDownlinkSaturated],
        "outage" => &[Gap, RecoveryAfterOutage, Missing, Duplicates, Reconnects],
        "connection-limit" => &[StalledStreams, StallMax, OneWayP50, Missing],
        _ => &[],
    }
}

fn definitions() -> Vec<String> {
    [
        "latency — per message, from its scheduled send time (coordinated omission: a sender behind its schedule shows as latency): one-way (`one_way_*`, receive time − scheduled time on the CLOCK_MONOTONIC the client and server namespaces share) for source streams, round trip (`round_trip_*`) for echo streams; HdrHistogram in µs, 3 significant digits. Goodput counts the data phase only (first scheduled send → last arrival). docs/RESULTS.md defines every metric.",
        "HOL index ρ — K streams start together, staggered so that each packet carries one message; every epoch the emulator drops exactly the packet carrying stream 0's marker. Per epoch: R = the marker's recovery time, S_j = the largest extra latency of stream j ≠ 0 among its messages sent during R, ρ_raw = mean_j S_j / R, corrected by the same run's null epochs over windows of the same length: ρ = ρ_raw − ρ_null (≈ 1 − δ/R behind one TCP byte stream, ≈ 0 for independent streams). Mean per run; CI over runs. docs/RESULTS.md has the design and its controls.",
        "ordering — per stream: order violations (arrived after a higher seq), duplicates, missing; delivery ratio and reorder depth (most higher seqs that overtook a message), for datagrams too.",
        "migration — steady echo traffic through the profile's address change / NAT rebind: gap = longest inter-arrival gap; missing / duplicated messages; whether the connection survived without reconnecting (natively) or was recovered by the session layer's reconnect + resume.",
        "handshake — connect start → first message delivered, in ms and in RTTs (RTT = fastest echo on the established connection).",
        "overhead — marginal IP bytes per message and direction, (W₂ − W₁)/(N₂ − N₁) from two batches on one established connection (handshake, stream open and close cancel), paced at one message per packet and saturated.",
        "outage — steady echo traffic through the profile's blackhole: gap, time to recover after the blackhole ends, missing / duplicated.",
        "Every figure and table: mean ± 95 % CI (Student t) over repetitions, with n (runs) shown; n = 1 has no CI (n/a). Each run has its own seed, listed in runs.jsonl, and its messages in messages/.",
    ]
    .map(String::from)
    .to_vec()
}

/// The distribution `which` over `runs`, and how many runs had it.
fn merged_histograms<'a>(runs: impl Iterator<Item = &'a RunRecord>, which: Distribution) -> (LatencyHistogram, usize) {
    let mut merged = LatencyHistogram::new();
    let mut n = 0;
    for h in runs.filter(|r| r.status == RunStatus::Ok).filter_map(|r| r.histogram(which)) {
        merged.merge(h);
        n += 1;
    }
    (merged, n)
}

/// The whole report.
pub fn document(
    dir: &str,
    manifest: Option<&Manifest>,
    completeness: &Completeness,
    runs: &[RunRecord],
    rows: &[SummaryRow],
    calibration: Vec<Block>,
) -> Document {
    let summary = Summary { rows };
    let mut doc = Document::default();
    let suite = manifest.map_or_else(|| runs.first().map_or("unknown", |r| r.suite.as_str()), |m| m.suite.as_str());
    doc.push(Block::Heading(1, format!("transport-lab report: {suite}")));
    if let Some(headline) = completeness.headline(dir) {
        doc.push(Block::Paragraph(format!("**{headline}**")));
    }
    let failed = runs.iter().filter(|r| r.status != RunStatus::Ok).count();
    let runs_line = format!("{} runs, {failed} failed or timed out", runs.len());
    doc.push(Block::List(match manifest {
        Some(manifest) => vec![
            format!("tlab {} · commit {}{}", manifest.tlab_version, manifest.git_commit.as_deref().unwrap_or("unknown"), if manifest.git_dirty == Some(true) { " (dirty)" } else { "" }),
            format!("suite `{}` (SHA-256 {}), seed {}", manifest.suite_file, &manifest.suite_sha256[..16.min(manifest.suite_sha256.len())], manifest.seed),
            runs_line,
            format!("{} · {} × {} · emulator {} · TCP congestion control {}", manifest.kernel, manifest.cores, manifest.cpu_model, manifest.emulator_backend, manifest.congestion_control),
            format!("profiles: {}", manifest.profiles.iter().map(|p| format!("{} ({})", p.name, &p.sha256[..12.min(p.sha256.len())])).collect::<Vec<_>>().join(", ")),
        ],
        None => vec![runs_line, "no manifest.json: tlab version, suite file, machine and profiles are unknown".to_string()],
    }));
    doc.push(Block::Heading(2, "Definitions".into()));
    doc.push(Block::List(definitions()));

    let experiments = distinct(runs.iter().map(|r| r.experiment.as_str()));
    for experiment in &experiments {
        let of_kind: Vec<&RunRecord> = runs.iter().filter(|r| &r.experiment == experiment).collect();
        doc.push(Block::Heading(2, format!("Experiment: {experiment}")));
        let params_list = distinct(rows.iter().filter(|r| &r.experiment == experiment).map(|r| r.params.as_str()));
        for params in &params_list {
            doc.push(Block::Paragraph(format!("Parameters: `{params}`")));
            let metrics: Vec<Metric> = headline_metrics(experiment)
                .iter()
                .copied()
                .filter(|m| rows.iter().any(|r| &r.experiment == experiment && &r.params == params && r.metric == m.name()))
                .collect();
            let mut header = vec!["transport".to_string(), "profile".to_string()];
            header.extend(metrics.iter().map(|m| m.label()));
            header.push("n".into());
            let mut table = Vec::new();
            let cells = distinct(rows.iter().filter(|r| &r.experiment == experiment && &r.params == params).map(|r| r.transport.as_str()));
            let profiles = distinct(rows.iter().filter(|r| &r.experiment == experiment && &r.params == params).map(|r| r.profile.as_str()));
            for profile in &profiles {
                for transport in &cells {
                    let n = rows.iter().find(|r| &r.experiment == experiment && &r.params == params && &r.transport == transport && &r.profile == profile).map(|r| r.n);
                    let Some(n) = n else { continue };
                    let mut row = vec![transport.clone(), profile.clone()];
                    row.extend(metrics.iter().map(|m| summary.get(experiment, Some(params), transport, profile, *m).map_or("–".into(), |(mean, ci)| fmt(mean, ci))));
                    row.push(n.to_string());
                    table.push(row);
                }
            }
            doc.push(Block::Table(header, table));
        }
        figures_for(experiment, &of_kind, &summary, &mut doc);
    }

    if suite == "seed-article" {
        doc.push(Block::Heading(2, "The seed article's claims, re-measured".into()));
        doc.push(Block::Table(vec!["claim".into(), "our measurement".into()], seed_article_claims(&summary)));
    }

    let failures: Vec<String> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Ok)
        .map(|r| format!("{} {} {} rep {}: {:?} — {}", r.experiment, r.transport, r.profile, r.repetition, r.status, r.error.as_deref().unwrap_or("")))
        .collect();
    if !failures.is_empty() {
        doc.push(Block::Heading(2, "Failed runs (recorded, not hidden)".into()));
        doc.push(Block::List(failures));
    }
    doc.blocks.extend(calibration);
    doc
}

fn figures_for(experiment: &str, runs: &[&RunRecord], summary: &Summary<'_>, doc: &mut Document) {
    let transports = distinct(runs.iter().map(|r| r.transport.as_str()));
    let profiles = distinct(runs.iter().map(|r| r.profile.as_str()));
    let bars = |metric: Metric, title: &str| BarChart {
        title: title.into(),
        y_label: metric.label(),
        groups: profiles.clone(),
        series: transports
            .iter()
            .map(|t| {
                let rows: Vec<Option<&SummaryRow>> = profiles.iter().map(|p| summary.row(experiment, None, t, p, metric)).collect();
                (with_n(t, rows.iter().flatten().map(|r| r.n)), rows.iter().map(|r| r.map(|r| (r.mean, r.ci95))).collect())
            })
            .collect(),
    };
    let line = |title: String, y: Metric, series: Vec<Series>| LineChart { title, x_label: "loss each way (%)".into(), y_label: y.label(), series, ..LineChart::default() };
    match experiment {
        "latency" => {
            for which in [Distribution::OneWay, Distribution::RoundTrip] {
                let path = which.descriptor().path.label();
                for profile in &profiles {
                    let series: Vec<Series> = transports
                        .iter()
                        .filter_map(|t| {
                            let (h, n) = merged_histograms(runs.iter().copied().filter(|r| &r.transport == t && &r.profile == profile), which);
                            let points = h.ccdf().into_iter().map(|(v, share)| (v as f64, share)).collect();
                            (n > 0).then(|| Series { name: format!("{t} (n = {n}, {} messages)", h.len()), points, ci: vec![] })
                        })
                        .collect();
                    if series.is_empty() {
                        continue;
                    }
                    let chart = LineChart {
                        title: format!("{path} latency CCDF — {profile}"),
                        x_label: format!("{}, log", which.axis_label()),
                        y_label: "share of messages with latency ≥ x (log)".into(),
                        log_x: true,
                        log_y: true,
                        series,
                        ..LineChart::default()
                    };
                    doc.push(Block::Plot(format!("{}-ccdf-{}.svg", which.name(), slug(profile)), chart.render()));
                }
                let p99 = which.metric(Stat::P99);
                let series = metric_vs_loss(experiment, p99, runs, &transports, &profiles, summary);
                if !series.is_empty() {
                    doc.push(Block::Plot(format!("{}-vs-loss.svg", p99.name()), line(format!("p99 {path} latency vs packet loss"), p99, series).render()));
                }
            }
        }
        "hol" => doc.push(Block::Plot("hol-rho.svg".into(), bars(Metric::HolRho, "HOL index ρ = ρ_raw − ρ_null (targeted drops of stream 0's marker)").render())),
        "handshake" => doc.push(Block::Plot("handshake.svg".into(), bars(Metric::Handshake, "Handshake: connect → first message").render())),
        "outage" => {
            doc.push(Block::Plot("outage-gap.svg".into(), bars(Metric::Gap, "Longest gap through the outage").render()));
            timelines(experiment, runs, &transports, &profiles, doc);
        }
        "ordering" => {
            let series = metric_vs_loss(experiment, Metric::DeliveryRatio, runs, &transports, &profiles, summary);
            doc.push(Block::Plot("delivery-vs-loss.svg".into(), line("Delivery ratio vs packet loss".into(), Metric::DeliveryRatio, series).render()));
        }
        "overhead" => {
            let sizes = distinct(runs.iter().map(|r| r.params.get("sizes").map(|s| s.to_string()).unwrap_or_default()).collect::<Vec<_>>().iter().map(String::as_str));
            let chart = BarChart {
                title: "Framing and headers per message: marginal uplink IP bytes − payload, paced".into(),
                y_label: Metric::OverheadUplinkPaced.label(),
                groups: sizes.iter().map(|s| format!("{} B", s.trim_matches(['[', ']']))).collect(),
                series: transports
                    .iter()
                    .map(|t| {
                        let cis: Vec<Option<tlab_results::MeanCi>> = sizes
                            .iter()
                            .map(|s| {
                                let values: Vec<f64> = runs
                                    .iter()
                                    .filter(|r| &r.transport == t && r.params.get("sizes").map(|v| v.to_string()).as_deref() == Some(s) && r.status == RunStatus::Ok)
                                    .filter_map(|r| r.get(Metric::OverheadUplinkPaced))
                                    .collect();
                                tlab_results::MeanCi::of(&values)
                            })
                            .collect();
                        (with_n(t, cis.iter().flatten().map(|c| c.n)), cis.iter().map(|c| c.map(|c| (c.mean, c.ci95))).collect())
                    })
                    .collect(),
            };
            doc.push(Block::Plot("overhead.svg".into(), chart.render()));
        }
        "migration" => timelines(experiment, runs, &transports, &profiles, doc),
        _ => {}
    }
}

/// `metric` against the profile's nominal loss (%), one point per profile with its CI: one series per transport
/// and link delay, so that a series never joins points of different RTTs.
fn metric_vs_loss(experiment: &str, metric: Metric, runs: &[&RunRecord], transports: &[String], profiles: &[String], summary: &Summary<'_>) -> Vec<Series> {
    let link = |p: &String, m: Metric| runs.iter().find(|r| &r.profile == p).and_then(|r| r.get(m));
    let mut delays: Vec<f64> = profiles.iter().filter_map(|p| link(p, Metric::LinkDelay)).collect();
    delays.sort_by(f64::total_cmp);
    delays.dedup();
    let mut out = Vec::new();
    for t in transports {
        for &delay in &delays {
            let mut points: Vec<(f64, &SummaryRow)> = profiles
                .iter()
                .filter(|p| link(p, Metric::LinkDelay) == Some(delay))
                .filter_map(|p| Some((link(p, Metric::LinkLoss)? * 100.0, summary.row(experiment, None, t, p, metric)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let name = if delays.len() > 1 { format!("{t}, {} ms RTT", 2.0 * delay) } else { t.clone() };
            out.push(Series {
                name: with_n(&name, points.iter().map(|(_, r)| r.n)),
                points: points.iter().map(|(x, r)| (*x, r.mean)).collect(),
                ci: points.iter().map(|(_, r)| r.ci95).collect(),
            });
        }
    }
    out
}

/// Mean of a metric over every cell of one experiment and transport whose params contain `param` (any profile).
fn mean_where(summary: &Summary<'_>, experiment: &str, transport: &str, param: &str, metric: Metric) -> Option<f64> {
    let values: Vec<f64> = summary
        .rows
        .iter()
        .filter(|r| r.experiment == experiment && r.transport == transport && r.metric == metric.name() && r.params.contains(param))
        .map(|r| r.mean)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Each claim of the seed article beside what this suite measured (– where the suite did not measure it).
fn seed_article_claims(summary: &Summary<'_>) -> Vec<Vec<String>> {
    let num = |v: Option<f64>, unit: &str| v.map_or("–".to_string(), |v| format!("{v:.1}{unit}"));
    let marginal = |t: &str, size: usize, metric: Metric| mean_where(summary, "overhead", t, &format!("[{size}]"), metric);
    let difference = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let mut rows = Vec::new();
    rows.push(vec![
        "WebSocket frames add only 2–14 bytes per message".into(),
        format!(
            "marginal uplink IP bytes per 16-B message, paced (one per packet): ws − tcp-tls (the same TLS over TCP without WebSocket) = {} (RFC 6455: 2–14 B, a client frame 6 B and up)",
            num(difference(marginal("ws", 16, Metric::MarginalUplinkPaced), marginal("tcp-tls", 16, Metric::MarginalUplinkPaced)), " B")
        ),
    ]);
    rows.push(vec![
        "SSE's base64 adds ~33 %".into(),
        format!(
            "marginal downlink IP bytes per 1000-B message, paced: (sse-h2 − ws-mux) ÷ 1000 = {} (base64 is 4/3 of the binary frame; the rest is SSE's `data:` lines against WebSocket's header)",
            num(difference(marginal("sse-h2", 1000, Metric::MarginalDownlinkPaced), marginal("ws-mux", 1000, Metric::MarginalDownlinkPaced)).map(|d| d / 10.0), " %")
        ),
    ]);
    rows.push(vec![
        "Protobuf messages are much smaller than JSON".into(),
        format!(
            "not measured as such: every tlab transport carries the same binary frame. Marginal uplink IP bytes per 256-B message, paced: grpc (protobuf) {} vs ws-mux {}",
            num(marginal("grpc", 256, Metric::MarginalUplinkPaced), " B"),
            num(marginal("ws-mux", 256, Metric::MarginalUplinkPaced), " B")
        ),
    ]);
    let outage = |t: &str, m: Metric| mean_where(summary, "outage", t, "", m);
    rows.push(vec![
        "SSE reconnects automatically; WebSocket must do it by hand".into(),
        format!(
            "through a 2 s blackhole with tlab's session layer on both: longest gap sse-h2 {} / ws {}, missing {} / {} (SSE's Last-Event-ID is what our resume generalises)",
            num(outage("sse-h2", Metric::Gap), " ms"),
            num(outage("ws", Metric::Gap), " ms"),
            num(outage("sse-h2", Metric::Missing), ""),
            num(outage("ws", Metric::Missing), "")
        ),
    ]);
    let mut goodput: Vec<(String, f64)> = ["ws", "ws-mux", "sse-h1", "sse-h2", "grpc", "quic", "h3", "wt-stream"]
        .iter()
        .filter_map(|t| mean_where(summary, "latency", t, "echo", Metric::Goodput).map(|g| (t.to_string(), g)))
        .collect();
    goodput.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rank = goodput.iter().position(|(t, _)| t == "grpc").map_or("–".to_string(), |i| format!("#{} of {}", i + 1, goodput.len()));
    rows.push(vec![
        "gRPC has the highest performance".into(),
        format!(
            "echo goodput, 4 streams, as fast as possible on a LAN: grpc ranks {rank} ({})",
            goodput.iter().map(|(t, g)| format!("{t} {g:.0}")).collect::<Vec<_>>().join(", ") + " Mbit/s"
        ),
    ]);
    // The primary design only: one connection, staggered sources, one drop per epoch.
    let primary = |params: &str| ["\"connections\":\"shared\"", "\"drop_retransmission\":false", "\"phase\":\"staggered\""].iter().all(|p| params.contains(p));
    let hol = |t: &str| {
        let rows: Vec<f64> =
            summary.rows.iter().filter(|r| r.experiment == "hol" && r.transport == t && r.metric == Metric::HolRho.name() && primary(&r.params)).map(|r| r.mean).collect();
        (!rows.is_empty()).then(|| rows.iter().sum::<f64>() / rows.len() as f64)
    };
    let rho = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    rows.push(vec![
        "HTTP/2 multiplexing removes head-of-line blocking".into(),
        format!(
            "HOL index ρ (share of stream 0's loss recovery the other streams wait, targeted drops): sse-h2 {}, grpc {} (HTTP/2 over TCP) vs h3 {}, quic {} (QUIC streams)",
            rho(hol("sse-h2")),
            rho(hol("grpc")),
            rho(hol("h3")),
            rho(hol("quic"))
        ),
    ]);
    // The browser's runs (client = "chromium"), as `mean ± CI (n = runs)`.
    let browser = |experiment: &str, mode: &str, metric: Metric, unit: &str| {
        let label = format!("{mode} (chromium)");
        summary.rows.iter().find(|r| r.experiment == experiment && r.transport == label && r.metric == metric.name()).map_or("–".to_string(), |r| {
            format!("{}{unit} (n = {})", fmt(r.mean, r.ci95), r.n)
        })
    };
    let limit = |mode: &str| {
        format!("{} stalled, longest stall {}", browser("connection-limit", mode, Metric::StalledStreams, ""), browser("connection-limit", mode, Metric::StallMax, " ms"))
    };
    rows.push(vec![
        "Browsers limit SSE to about 6 connections per domain".into(),
        format!(
            "Chromium, 8 EventSource streams of one origin opened at once (one-way: first message − open): over HTTP/1.1 (sse-h1) {}; over HTTP/2 (sse-h2) {}",
            limit("sse-h1"),
            limit("sse-h2")
        ),
    ]);
    let reconnect = |mode: &str| {
        format!(
            "gap {}, missing {}, reconnects {}",
            browser("outage", mode, Metric::Gap, " ms"),
            browser("outage", mode, Metric::Missing, ""),
            browser("outage", mode, Metric::Reconnects, "")
        )
    };
    rows.push(vec![
        "Browsers automatically reconnect SSE".into(),
        format!(
            "Chromium, 50 Hz source through a 2 s blackhole, no session layer on the client (one-way arrivals): EventSource over sse-h2 (the browser's own reconnect, Last-Event-ID) {}; WebSocket with the page's reconnect (1 s silence) {}",
            reconnect("sse-h2"),
            reconnect("ws")
        ),
    ]);
    let wt = |mode: &str| {
        format!(
            "delivered {}, round trip p50 {}, p99 {}",
            browser("latency", mode, Metric::DeliveryRatio, ""),
            browser("latency", mode, Metric::RoundTripP50, " µs"),
            browser("latency", mode, Metric::RoundTripP99, " µs")
        )
    };
    rows.push(vec![
        "WebTransport datagrams vs streams under loss (browser)".into(),
        format!("Chromium, echo at 100 Hz, 2 % loss each way (round trips): datagrams {}; streams {}", wt("wt-datagram"), wt("wt-stream")),
    ]);
    rows
}

/// Message arrivals around the profile's event (address change, NAT rebind, blackhole), repetition 0.
fn timelines(experiment: &str, runs: &[&RunRecord], transports: &[String], profiles: &[String], doc: &mut Document) {
    for profile in profiles {
        let chosen: Vec<&RunRecord> = transports
            .iter()
            .filter_map(|t| runs.iter().copied().find(|r| &r.transport == t && &r.profile == profile && r.repetition == 0 && r.status == RunStatus::Ok))
            .collect();
        let event = chosen.iter().find_map(|r| r.get(Metric::EventAt));
        let series = chosen
            .iter()
            .map(|run| {
                let mut points = run.series.get("arrivals").cloned().unwrap_or_default();
                // Zoom on the event: 1 s before to 2 s after.
                if let Some(at) = event {
                    points.retain(|(t, _)| (at - 1000.0..=at + 2000.0).contains(t));
                }
                Series { name: format!("{} (repetition 0, n = 1)", run.transport), points, ci: vec![] }
            })
            .collect();
        let chart = LineChart {
            title: format!("Message arrivals around the event — {profile}"),
            x_label: "time since link start (ms)".into(),
            y_label: "message seq".into(),
            markers: true,
            series,
            marker_x: event.map(|e| (e, "event".to_string())),
            ..LineChart::default()
        };
        doc.push(Block::Plot(format!("{experiment}-{}.svg", slug(profile)), chart.render()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_params() {
        let rows = vec![SummaryRow {
            experiment: "hol".into(),
            params: r#"{"streams":8}"#.into(),
            transport: "grpc".into(),
            profile: "lossy-2".into(),
            metric: Metric::HolRho.name().into(),
            mean: 1500.0,
            ci95: Some(20.0),
            n: 3,
            failed: 0,
        }];
        let csv = summary_csv(&rows);
        assert_eq!(csv.lines().nth(1).unwrap(), r#"hol,"{""streams"":8}",grpc,lossy-2,hol_rho,1500,20,3,0"#);
    }

    #[test]
    fn browser_claims_quote_chromium_cells_with_ci_and_n() {
        let row = |transport: &str, metric: Metric, mean: f64, ci95: Option<f64>| SummaryRow {
            experiment: "connection-limit".into(),
            params: "{}".into(),
            transport: transport.into(),
            profile: "wan-50ms".into(),
            metric: metric.name().into(),
            mean,
            ci95,
            n: 3,
            failed: 0,
        };
        let rows = [row("sse-h1 (chromium)", Metric::StalledStreams, 2.0, Some(0.0)), row("sse-h1 (chromium)", Metric::StallMax, 2031.5, Some(4.25))];
        let claims = seed_article_claims(&Summary { rows: &rows });
        let limit = claims.iter().find(|c| c[0].contains("6 connections")).expect("the connection-limit claim");
        assert!(limit[1].contains("HTTP/1.1 (sse-h1) 2 ± 0 (n = 3) stalled, longest stall 2032 ± 4 ms (n = 3)"), "{}", limit[1]);
        assert!(limit[1].contains("HTTP/2 (sse-h2) – stalled"), "a cell the suite did not run is –: {}", limit[1]);
    }

    /// A one-way latency run of `transport` over a link of `delay_ms` and `loss`, with a known distribution.
    fn latency_run(transport: &str, profile: &str, delay_ms: f64, loss: f64, repetition: u32) -> RunRecord {
        let cell = tlab_results::CellId {
            experiment: "latency".into(),
            params: Default::default(),
            transport: transport.into(),
            profile: profile.into(),
            repetition,
            seed: u64::from(repetition),
        };
        let mut run = RunRecord::new("s".into(), cell);
        let mut histogram = LatencyHistogram::new();
        for ms in 1..=100u64 {
            histogram.record_ns((delay_ms as u64 + ms) * 1_000_000);
        }
        let p = histogram.percentiles().unwrap();
        for stat in Stat::ALL {
            run.set(Distribution::OneWay.metric(stat), stat.of(&p) + f64::from(repetition));
        }
        run.set(Metric::LinkDelay, delay_ms);
        run.set(Metric::LinkLoss, loss);
        run.histograms.insert(Distribution::OneWay.name().into(), histogram);
        run
    }

    #[test]
    fn figures_show_n_never_a_zero_ci_and_keep_rtts_apart() {
        let runs = vec![
            latency_run("ws", "lan", 0.5, 0.0, 0),
            latency_run("ws", "lossy-2", 20.0, 0.02, 0),
            latency_run("ws", "clean-40", 20.0, 0.0, 0),
            latency_run("ws", "clean-40", 20.0, 0.0, 1),
        ];
        let rows = tlab_results::summarize(&runs);
        let doc = document("d", None, &Completeness::of(None, &runs), &runs, &rows, Vec::new());
        let md = doc.to_markdown();
        assert!(md.contains("one_way_p50_us (one-way, µs)"), "columns say one-way and the unit: {md}");
        assert!(md.contains("± n/a") && !md.contains("± 0 "), "n = 1 has no CI: {md}");
        let plots = doc.plots();
        let ccdf = plots.iter().find(|(name, _)| *name == "one_way_latency-ccdf-lan.svg").expect("a CCDF per profile").1;
        assert!(ccdf.contains("one-way latency (µs), log") && ccdf.contains("ws (n = 1, 100 messages)"), "{ccdf}");
        assert!(!plots.iter().any(|(name, _)| name.starts_with("round_trip")), "no round-trip plot without round trips");
        let vs_loss = plots.iter().find(|(name, _)| *name == "one_way_p99_us-vs-loss.svg").expect("p99 vs loss").1;
        assert!(vs_loss.contains("ws, 1 ms RTT (n = 1)") && vs_loss.contains("ws, 40 ms RTT (n = 1–2)"), "one series per RTT: {vs_loss}");
        assert_eq!(vs_loss.matches("<polyline").count(), 2);
        assert_eq!(vs_loss.matches("<path").count(), 1, "an error bar only on the point with n = 2");
    }

    #[test]
    fn plot_names_are_file_names() {
        assert_eq!(slug("profiles/rtt10-loss0.5.toml"), "rtt10-loss0.5");
        assert_eq!(slug("lossy-2"), "lossy-2");
        assert_eq!(slug("a b/c:d"), "c_d");
    }

    #[test]
    fn numbers_are_formatted_with_their_ci() {
        assert_eq!(fmt(1234.4, Some(10.2)), "1234 ± 10");
        assert_eq!(fmt(1.2345, None), "1.23 ± n/a", "n = 1 has no CI, which is not a CI of 0");
        assert_eq!(fmt(0.0, Some(0.0)), "0 ± 0");
        assert_eq!(fmt(3.0, None), "3 ± n/a");
        assert_eq!(fmt(0.98765, Some(0.001)), "0.9877 ± 0.0010");
        assert_eq!(with_n("ws", [3, 3]), "ws (n = 3)");
        assert_eq!(with_n("ws", [5, 2, 3]), "ws (n = 2–5)");
    }
}
