//! `tlab compare`: the same exchanges on every chosen transport over loopback, written to a results directory with
//! a markdown report. (No link emulation yet: this measures the protocol stacks themselves.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tlab_service::EchoService;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{ClientConfig, Limits, ServerConfig};

use crate::exchange::{self, Pattern, Plan, Report};

/// One workload of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Short name in the report.
    pub name: &'static str,
    /// What runs.
    pub plan: Plan,
}

/// The default workloads: many small echoes on 8 streams, one-way source latency, bulk 16 KiB messages.
pub fn default_workloads(messages: u64) -> Vec<Workload> {
    let plan = |streams, size, pattern| Plan { streams, messages, size, pattern, resilient: false, quiet: std::time::Duration::from_secs(1) };
    vec![
        Workload { name: "echo-8x256B", plan: plan(8, 256, Pattern::Echo) },
        Workload { name: "source-1x64B", plan: plan(1, 64, Pattern::Source) },
        Workload { name: "echo-1x16KiB", plan: plan(1, 16 << 10, Pattern::Echo) },
    ]
}

/// Runs every workload on every transport named in `names`, writing `runs.jsonl` and `report.md` under `out`.
pub async fn run(names: &[String], workloads: &[Workload], out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"])?);
    let mut runs = std::fs::File::create(out.join("runs.jsonl"))?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    let total = names.len() * workloads.len();
    for (i, name) in names.iter().enumerate() {
        let transport: Arc<dyn tlab_core::Transport> = Arc::from(tlab_transports::by_name(name)?);
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            identity: identity.clone(),
            token: "compare".into(),
            limits: Limits::default(),
            service: Arc::new(EchoService::default()),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = transport.serve(config).await.with_context(|| format!("serving {name}"))?;
        for (j, workload) in workloads.iter().enumerate() {
            eprintln!("[{}/{total}] {name} {}", i * workloads.len() + j + 1, workload.name);
            let client = ClientConfig::new(server.url(), CertPin::Sha256(identity.sha256()), "compare");
            match exchange::run(transport.clone(), client, workload.plan).await {
                Ok(report) => {
                    let mut row = serde_json::to_value(&report)?;
                    row["workload"] = workload.name.into();
                    writeln!(runs, "{row}")?;
                    reports.push((workload.name, report));
                }
                Err(e) => {
                    // A failed cell is a result too: recorded with its error, and the comparison goes on.
                    eprintln!("  failed: {e:#}");
                    let row = serde_json::json!({"transport": name, "workload": workload.name, "error": format!("{e:#}")});
                    writeln!(runs, "{row}")?;
                    failures.push(format!("{name} {}: {e:#}", workload.name));
                }
            }
        }
        server.shutdown().await;
    }
    let report_path = out.join("report.md");
    std::fs::write(&report_path, markdown(&reports, &failures))?;
    Ok(report_path)
}

fn markdown(reports: &[(&str, Report)], failures: &[String]) -> String {
    let mut md = String::from("# transport-lab loopback comparison\n\n");
    md.push_str(&format!(
        "tlab {} · {} · unimpaired loopback, TLS on every transport. Latency: round trip for echo, one-way for \
         source (µs, HdrHistogram, 3 significant digits).\n\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    ));
    md.push_str("| workload | transport | delivered | lost | dup | p50 µs | p99 µs | p99.9 µs | goodput Mbit/s |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (workload, r) in reports {
        let (p50, p99, p999) = r.latency.map_or((0, 0, 0), |l| (l.p50_us, l.p99_us, l.p999_us));
        md.push_str(&format!(
            "| {workload} | {} | {} | {} | {} | {p50} | {p99} | {p999} | {:.1} |\n",
            r.transport, r.delivery.delivered, r.delivery.lost, r.delivery.duplicated, r.goodput_mbit_s
        ));
    }
    if !failures.is_empty() {
        md.push_str("\n**Failed cells** (recorded in runs.jsonl):\n\n");
        for failure in failures {
            md.push_str(&format!("- {failure}\n"));
        }
    }
    md
}
