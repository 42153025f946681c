//! From raw results to the report's tables and figures.

use tlab_results::{LatencyHistogram, Manifest, RunRecord, RunStatus, SummaryRow};

use crate::completeness::Completeness;
use crate::document::{Block, Document};
use crate::svg::{BarChart, LineChart, Series};

/// Metrics computed from others of the same run, so results written by older versions get them too:
/// `hol_penalty_p90_us` = p90(shared) − p90(separate). (p99 is set by a handful of retransmission-timeout events in
/// either case; p90 shows the head-of-line signature more steadily.)
pub fn derive_metrics(runs: &mut [RunRecord]) {
    for run in runs {
        if let (Some(shared), Some(separate)) = (run.metrics.get("shared_p90_us"), run.metrics.get("separate_p90_us")) {
            let penalty = shared - separate;
            run.metrics.entry("hol_penalty_p90_us".into()).or_insert(penalty);
        }
    }
}

/// `summary.csv`: one row per cell and metric.
pub fn summary_csv(rows: &[SummaryRow]) -> String {
    let mut csv = String::from("experiment,params,transport,profile,metric,mean,ci95,n,failed\n");
    for r in rows {
        let params = format!("\"{}\"", r.params.replace('"', "\"\""));
        csv.push_str(&format!("{},{params},{},{},{},{},{},{},{}\n", r.experiment, r.transport, r.profile, r.metric, r.mean, r.ci95, r.n, r.failed));
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

fn fmt(mean: f64, ci: f64) -> String {
    if mean.fract() == 0.0 && ci == 0.0 {
        return format!("{mean:.0}");
    }
    let digits = if mean.abs() >= 100.0 { 0 } else if mean.abs() >= 1.0 { 2 } else { 4 };
    if ci > 0.0 { format!("{mean:.digits$} ± {ci:.digits$}") } else { format!("{mean:.digits$}") }
}

struct Summary<'a> {
    rows: &'a [SummaryRow],
}

impl Summary<'_> {
    fn get(&self, experiment: &str, params: Option<&str>, transport: &str, profile: &str, metric: &str) -> Option<(f64, f64)> {
        self.rows
            .iter()
            .find(|r| r.experiment == experiment && params.is_none_or(|p| r.params == p) && r.transport == transport && r.profile == profile && r.metric == metric)
            .map(|r| (r.mean, r.ci95))
    }
}

/// Metrics shown in each experiment's table (the rest are in summary.csv).
fn headline_metrics(experiment: &str) -> &'static [&'static str] {
    match experiment {
        "latency" => &["p50_us", "p99_us", "p999_us", "goodput_mbit_s", "missing", "order_violations"],
        "hol" => &["shared_p90_us", "separate_p90_us", "hol_penalty_p90_us", "hol_penalty_us", "delayed_share_shared", "delayed_share_separate"],
        "ordering" => &["delivery_ratio", "order_violations", "duplicates", "missing", "reorder_depth"],
        "migration" => &["gap_ms", "missing", "duplicates", "reconnects", "survived_without_reconnect"],
        "handshake" => &["handshake_ms", "handshake_rtts", "rtt_ms"],
        "overhead" => &["overhead_ratio", "wire_bytes_per_message"],
        "outage" => &["gap_ms", "recovery_after_outage_ms", "missing", "duplicates", "reconnects"],
        _ => &[],
    }
}

fn definitions() -> Vec<String> {
    [
        "latency — per message, one-way (receive time − sent_at, CLOCK_MONOTONIC shared by client and server namespaces) for source streams, round trip for echo streams; HdrHistogram in µs, 3 significant digits.",
        "HOL penalty — the same workload with K streams on one connection (shared) and one connection per stream (separate), same link: p99(shared) − p99(separate), and the same at p90 (p99 of ~1,000 messages is set by a few retransmission timeouts in either case, p90 shows the head-of-line signature steadily); plus the share of messages delayed more than one RTT beyond the base delay (base = fastest message of the cell). Where one loss-limited connection cannot carry the offered load, the shared case also pays for sharing one congestion window.",
        "ordering — per stream: order violations (arrived after a higher seq), duplicates, missing; delivery ratio and reorder depth (most higher seqs that overtook a message), for datagrams too.",
        "migration — steady echo traffic through the profile's address change / NAT rebind: gap = longest inter-arrival gap; missing / duplicated messages; whether the connection survived without reconnecting (natively) or was recovered by the session layer's reconnect + resume.",
        "handshake — connect start → first message delivered, in ms and in RTTs (RTT = fastest echo on the established connection).",
        "overhead — IP bytes forwarded by the emulator (both directions, handshake included) ÷ payload bytes.",
        "outage — steady echo traffic through the profile's blackhole: gap, time to recover after the blackhole ends, missing / duplicated.",
        "Every figure: mean ± 95 % CI (Student t) over repetitions; each run has its own seed, listed in runs.jsonl.",
    ]
    .map(String::from)
    .to_vec()
}

fn merged_histograms<'a>(runs: impl Iterator<Item = &'a RunRecord>, name: &str) -> LatencyHistogram {
    let mut merged = LatencyHistogram::new();
    for run in runs {
        if let Some(h) = run.histograms.get(name) {
            merged.merge(h);
        }
    }
    merged
}

/// The whole report.
pub fn document(
    dir: &str,
    manifest: Option<&Manifest>,
    completeness: &Completeness,
    runs: &[RunRecord],
    rows: &[SummaryRow],
    calibration: Option<&serde_json::Value>,
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
        let metrics = headline_metrics(experiment);
        for params in &params_list {
            doc.push(Block::Paragraph(format!("Parameters: `{params}`")));
            let mut header = vec!["transport".to_string(), "profile".to_string()];
            header.extend(metrics.iter().map(|m| m.to_string()));
            header.push("n".into());
            let mut table = Vec::new();
            let cells = distinct(rows.iter().filter(|r| &r.experiment == experiment && &r.params == params).map(|r| r.transport.as_str()));
            let profiles = distinct(rows.iter().filter(|r| &r.experiment == experiment && &r.params == params).map(|r| r.profile.as_str()));
            for profile in &profiles {
                for transport in &cells {
                    let n = rows.iter().find(|r| &r.experiment == experiment && &r.params == params && &r.transport == transport && &r.profile == profile).map(|r| r.n);
                    let Some(n) = n else { continue };
                    let mut row = vec![transport.clone(), profile.clone()];
                    row.extend(metrics.iter().map(|m| summary.get(experiment, Some(params), transport, profile, m).map_or("–".into(), |(mean, ci)| fmt(mean, ci))));
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
    if let Some(calibration) = calibration {
        doc.push(Block::Heading(2, "Emulator calibration (tlab netem selftest)".into()));
        doc.push(Block::Paragraph(format!("```\n{}\n```", serde_json::to_string_pretty(calibration).unwrap_or_default())));
    }
    doc
}

fn figures_for(experiment: &str, runs: &[&RunRecord], summary: &Summary<'_>, doc: &mut Document) {
    let transports = distinct(runs.iter().map(|r| r.transport.as_str()));
    let profiles = distinct(runs.iter().map(|r| r.profile.as_str()));
    let bars = |metric: &str, title: &str, y_label: &str| BarChart {
        title: title.into(),
        y_label: y_label.into(),
        groups: profiles.clone(),
        series: transports.iter().map(|t| (t.clone(), profiles.iter().map(|p| summary.get(experiment, None, t, p, metric)).collect())).collect(),
    };
    match experiment {
        "latency" => {
            for profile in &profiles {
                let series = transports
                    .iter()
                    .map(|t| {
                        let h = merged_histograms(runs.iter().copied().filter(|r| &r.transport == t && &r.profile == profile), "latency");
                        Series { name: t.clone(), points: h.cdf().into_iter().map(|(v, q)| (v as f64, q)).collect() }
                    })
                    .collect();
                let chart = LineChart { title: format!("Latency CDF — {profile}"), x_label: "latency (µs, log)".into(), y_label: "share of messages".into(), log_x: true, markers: false, series, marker_x: None };
                doc.push(Block::Plot(format!("latency-cdf-{}.svg", slug(profile)), chart.render()));
            }
            let series = metric_vs_loss(experiment, "p99_us", runs, &transports, &profiles, summary);
            let chart = LineChart { title: "p99 latency vs packet loss".into(), x_label: "loss each way (%)".into(), y_label: "p99 latency (µs)".into(), log_x: false, markers: false, series, marker_x: None };
            doc.push(Block::Plot("p99-vs-loss.svg".into(), chart.render()));
        }
        "hol" => {
            doc.push(Block::Plot("hol-penalty.svg".into(), bars("hol_penalty_us", "HOL penalty: p99(shared) − p99(separate)", "µs").render()));
            doc.push(Block::Plot("hol-penalty-p90.svg".into(), bars("hol_penalty_p90_us", "HOL penalty at p90: p90(shared) − p90(separate)", "µs").render()));
            // Per RTT, the penalty against loss: TCP-multiplexed modes should grow, QUIC streams should not.
            let mut delays: Vec<f64> = runs.iter().filter_map(|r| r.metrics.get("link_delay_ms").copied()).collect();
            delays.sort_by(f64::total_cmp);
            delays.dedup();
            if delays.len() > 1 || profiles.len() > 2 {
                for delay in delays {
                    let same_delay: Vec<String> = profiles
                        .iter()
                        .filter(|p| runs.iter().any(|r| &r.profile == *p && r.metrics.get("link_delay_ms") == Some(&delay)))
                        .cloned()
                        .collect();
                    let series = metric_vs_loss(experiment, "hol_penalty_p90_us", runs, &transports, &same_delay, summary);
                    let rtt = 2.0 * delay;
                    let chart = LineChart { title: format!("HOL penalty (p90) vs loss, {rtt} ms RTT"), x_label: "loss each way (%)".into(), y_label: "p90(shared) − p90(separate), µs".into(), log_x: false, markers: false, series, marker_x: None };
                    doc.push(Block::Plot(format!("hol-p90-vs-loss-rtt{rtt}.svg"), chart.render()));
                }
            }
        }
        "handshake" => doc.push(Block::Plot("handshake.svg".into(), bars("handshake_ms", "Handshake: connect → first message", "ms").render())),
        "outage" => {
            doc.push(Block::Plot("outage-gap.svg".into(), bars("gap_ms", "Longest gap through the outage", "ms").render()));
            timelines(experiment, runs, &transports, &profiles, doc);
        }
        "ordering" => {
            let series = metric_vs_loss(experiment, "delivery_ratio", runs, &transports, &profiles, summary);
            let chart = LineChart { title: "Delivery ratio vs packet loss".into(), x_label: "loss each way (%)".into(), y_label: "delivered / sent".into(), log_x: false, markers: false, series, marker_x: None };
            doc.push(Block::Plot("delivery-vs-loss.svg".into(), chart.render()));
        }
        "overhead" => {
            let sizes = distinct(runs.iter().map(|r| r.params.get("sizes").map(|s| s.to_string()).unwrap_or_default()).collect::<Vec<_>>().iter().map(String::as_str));
            let chart = BarChart {
                title: "Wire overhead: IP bytes ÷ payload bytes".into(),
                y_label: "ratio".into(),
                groups: sizes.iter().map(|s| format!("{} B", s.trim_matches(['[', ']']))).collect(),
                series: transports
                    .iter()
                    .map(|t| {
                        let values = sizes
                            .iter()
                            .map(|s| {
                                let values: Vec<f64> = runs
                                    .iter()
                                    .filter(|r| &r.transport == t && r.params.get("sizes").map(|v| v.to_string()).as_deref() == Some(s) && r.status == RunStatus::Ok)
                                    .filter_map(|r| r.metrics.get("overhead_ratio").copied())
                                    .collect();
                                tlab_results::MeanCi::of(&values).map(|ci| (ci.mean, ci.ci95))
                            })
                            .collect();
                        (t.clone(), values)
                    })
                    .collect(),
            };
            doc.push(Block::Plot("overhead.svg".into(), chart.render()));
        }
        "migration" => timelines(experiment, runs, &transports, &profiles, doc),
        _ => {}
    }
}

/// One series per transport: `metric` against the profile's nominal loss (%), one point per profile.
fn metric_vs_loss(experiment: &str, metric: &str, runs: &[&RunRecord], transports: &[String], profiles: &[String], summary: &Summary<'_>) -> Vec<Series> {
    transports
        .iter()
        .map(|t| {
            let mut points: Vec<(f64, f64)> = profiles
                .iter()
                .filter_map(|p| {
                    let loss = runs.iter().find(|r| &r.profile == p).and_then(|r| r.metrics.get("link_loss")).copied()?;
                    summary.get(experiment, None, t, p, metric).map(|(m, _)| (loss * 100.0, m))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { name: t.clone(), points }
        })
        .collect()
}

/// Mean of a metric over every cell of one experiment and transport whose params contain `param` (any profile).
fn mean_where(summary: &Summary<'_>, experiment: &str, transport: &str, param: &str, metric: &str) -> Option<f64> {
    let values: Vec<f64> = summary
        .rows
        .iter()
        .filter(|r| r.experiment == experiment && r.transport == transport && r.metric == metric && r.params.contains(param))
        .map(|r| r.mean)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Each claim of the seed article beside what this suite measured (– where the suite did not measure it).
fn seed_article_claims(summary: &Summary<'_>) -> Vec<Vec<String>> {
    let num = |v: Option<f64>, unit: &str| v.map_or("–".to_string(), |v| format!("{v:.1}{unit}"));
    let per_message = |t: &str, size: usize| mean_where(summary, "overhead", t, &format!("[{size}]"), "wire_bytes_per_message");
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let mut rows = Vec::new();
    rows.push(vec![
        "WebSocket frames add only 2–14 bytes per message".into(),
        format!(
            "ws: {} on the wire per 16-B message and direction (IP + TCP + TLS + WebSocket + our 24-B frame; the WebSocket header itself is 2–14 B by RFC 6455), vs quic {}",
            num(per_message("ws", 16).map(|b| b / 2.0), " B"),
            num(per_message("quic", 16).map(|b| b / 2.0), " B")
        ),
    ]);
    rows.push(vec![
        "SSE's base64 adds ~33 %".into(),
        format!(
            "sse-h2 / ws-mux wire bytes at 4 KiB: {} (echo: base64 downlink, binary POST uplink — base64 on one direction alone predicts ≈ 1.17)",
            num(ratio(per_message("sse-h2", 4096), per_message("ws-mux", 4096)), "×")
        ),
    ]);
    rows.push(vec![
        "Protobuf messages are much smaller than JSON".into(),
        format!(
            "not measured as such: every tlab transport carries the same binary frame. gRPC (protobuf) per 256-B message and direction: {} vs ws-mux {}",
            num(per_message("grpc", 256).map(|b| b / 2.0), " B"),
            num(per_message("ws-mux", 256).map(|b| b / 2.0), " B")
        ),
    ]);
    let outage = |t: &str, m: &str| mean_where(summary, "outage", t, "", m);
    rows.push(vec![
        "SSE reconnects automatically; WebSocket must do it by hand".into(),
        format!(
            "through a 2 s blackhole with tlab's session layer on both: longest gap sse-h2 {} / ws {}, missing {} / {} (SSE's Last-Event-ID is what our resume generalises)",
            num(outage("sse-h2", "gap_ms"), " ms"),
            num(outage("ws", "gap_ms"), " ms"),
            num(outage("sse-h2", "missing"), ""),
            num(outage("ws", "missing"), "")
        ),
    ]);
    let mut goodput: Vec<(String, f64)> = ["ws", "ws-mux", "sse-h1", "sse-h2", "grpc", "quic", "h3", "wt-stream"]
        .iter()
        .filter_map(|t| mean_where(summary, "latency", t, "echo", "goodput_mbit_s").map(|g| (t.to_string(), g)))
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
    let hol = |t: &str| mean_where(summary, "hol", t, "", "hol_penalty_us").map(|us| us / 1000.0);
    rows.push(vec![
        "HTTP/2 multiplexing removes head-of-line blocking".into(),
        format!(
            "HOL penalty at 2 % loss (p99 shared − separate): sse-h2 {}, grpc {} (HTTP/2 over TCP) vs h3 {}, quic {} (QUIC streams)",
            num(hol("sse-h2"), " ms"),
            num(hol("grpc"), " ms"),
            num(hol("h3"), " ms"),
            num(hol("quic"), " ms")
        ),
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
        let event = chosen.iter().find_map(|r| r.metrics.get("event_at_ms").copied());
        let series = chosen
            .iter()
            .map(|run| {
                let mut points = run.series.get("arrivals").cloned().unwrap_or_default();
                // Zoom on the event: 1 s before to 2 s after.
                if let Some(at) = event {
                    points.retain(|(t, _)| (at - 1000.0..=at + 2000.0).contains(t));
                }
                Series { name: run.transport.clone(), points }
            })
            .collect();
        let chart = LineChart {
            title: format!("Message arrivals around the event — {profile}"),
            x_label: "time since link start (ms)".into(),
            y_label: "message seq".into(),
            log_x: false,
            markers: true,
            series,
            marker_x: event.map(|e| (e, "event".to_string())),
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
            metric: "hol_penalty_us".into(),
            mean: 1500.0,
            ci95: 20.0,
            n: 3,
            failed: 0,
        }];
        let csv = summary_csv(&rows);
        assert_eq!(csv.lines().nth(1).unwrap(), r#"hol,"{""streams"":8}",grpc,lossy-2,hol_penalty_us,1500,20,3,0"#);
    }

    #[test]
    fn plot_names_are_file_names() {
        assert_eq!(slug("profiles/rtt10-loss0.5.toml"), "rtt10-loss0.5");
        assert_eq!(slug("lossy-2"), "lossy-2");
        assert_eq!(slug("a b/c:d"), "c_d");
    }

    #[test]
    fn numbers_are_formatted_with_their_ci() {
        assert_eq!(fmt(1234.4, 10.2), "1234 ± 10");
        assert_eq!(fmt(1.2345, 0.0), "1.23");
        assert_eq!(fmt(0.0, 0.0), "0");
        assert_eq!(fmt(0.98765, 0.001), "0.9877 ± 0.0010");
    }
}
