//! Runs a suite's cells, each with a fresh emulated link: the server on a runtime inside the server namespace, the
//! client workload on a runtime inside the client namespace, a per-cell timeout, and every run appended to
//! `runs.jsonl` as soon as it ends (a killed suite loses nothing that finished).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlab_service::EchoService;
use tlab_core::tls::{CertPin, Identity};
use tlab_core::{ClientConfig, Limits, ServerConfig, Transport};
use tlab_netem::RunningLink;
use tlab_netem::emulator::{CLIENT_ALT_ADDR, SERVER_ADDR};
use tlab_results::{Manifest, ManifestPart, ProfileRecord, RunRecord, RunStatus};

use crate::suite::{Cell, Suite};
use crate::workload::{self, Context};

/// Makes a transport by name (the CLI knows them all; this crate depends on none).
pub type TransportFactory = Arc<dyn Fn(&str) -> Option<Box<dyn Transport>> + Send + Sync>;

/// Errors that stop a whole suite (a failing cell does not: it is recorded and the suite goes on).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The results directory could not be written.
    #[error("writing results to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS identity for the servers could not be made.
    #[error("TLS identity: {0}")]
    Identity(#[from] tlab_core::Error),
}

/// Which cells run and where results go.
pub struct RunOptions {
    /// Results directory (created).
    pub out: PathBuf,
    /// `Some((i, n))` to run only shard i of n.
    pub shard: Option<(u32, u32)>,
    /// Makes transports by name.
    pub transports: TransportFactory,
}

/// Runs the suite's cells (or one shard of them) and writes `manifest.json` and `runs.jsonl`; returns the records.
pub fn run_suite(suite: &Suite, options: &RunOptions) -> Result<Vec<RunRecord>, RunError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::Write { path, source }
    };
    std::fs::create_dir_all(&options.out).map_err(write_err(&options.out))?;
    let cells = match options.shard {
        Some((i, n)) => suite.shard(i, n),
        None => suite.cells.clone(),
    };
    let identity = Arc::new(Identity::self_signed(&["localhost", &SERVER_ADDR.to_string()])?);
    let runs_path = options.out.join("runs.jsonl");
    let mut runs_file = std::fs::File::create(&runs_path).map_err(write_err(&runs_path))?;
    let started = Instant::now();
    let started_utc = utc_now();
    let mut records = Vec::with_capacity(cells.len());
    let mut link_info = LinkInfo { congestion_control: "unknown".into(), backend: "unknown".into() };
    for (done, cell) in cells.iter().enumerate() {
        let eta = if done == 0 { String::from("?") } else { format_secs(started.elapsed().as_secs_f64() / done as f64 * (cells.len() - done) as f64) };
        eprint!(
            "[{}/{}] eta {eta}  {} {} {} rep {} … ",
            done + 1,
            cells.len(),
            cell.spec.kind(),
            cell.transport,
            cell.profile,
            cell.repetition
        );
        let (record, info) = run_cell(suite, cell, &identity, &options.transports);
        if let Some(info) = info {
            link_info = info;
        }
        match &record.error {
            None => eprintln!("ok ({:.1} s)", record.duration_s),
            Some(e) => eprintln!("{:?}: {e}", record.status),
        }
        let line = serde_json::to_string(&record).expect("record serializes");
        writeln!(runs_file, "{line}").and_then(|_| runs_file.flush()).map_err(write_err(&runs_path))?;
        records.push(record);
    }
    let manifest = manifest(suite, &link_info, ManifestPart {
        shard: options.shard.map_or("all".into(), |(i, n)| format!("{i}/{n}")),
        host: read_trimmed("/proc/sys/kernel/hostname"),
        started_utc,
        runs: records.len(),
    });
    let manifest_path = options.out.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest).expect("manifest serializes"))
        .map_err(write_err(&manifest_path))?;
    Ok(records)
}

/// Runs one cell; never fails: errors and timeouts become the record's status. Also returns the link's TCP
/// congestion control.
/// What the manifest records about the links that ran.
#[derive(Clone)]
struct LinkInfo {
    congestion_control: String,
    backend: String,
}

fn run_cell(suite: &Suite, cell: &Cell, identity: &Arc<Identity>, transports: &TransportFactory) -> (RunRecord, Option<LinkInfo>) {
    let started = Instant::now();
    let mut record = RunRecord {
        suite: suite.name.clone(),
        experiment: cell.spec.kind().to_string(),
        params: cell.spec.params(),
        transport: cell.transport.clone(),
        profile: cell.profile.clone(),
        repetition: cell.repetition,
        seed: cell.seed,
        status: RunStatus::Ok,
        error: None,
        duration_s: 0.0,
        metrics: Default::default(),
        histograms: Default::default(),
        series: Default::default(),
    };
    let result = execute(suite, cell, identity, transports);
    let info = result.as_ref().ok().map(|(_, info)| info.clone());
    match result {
        Ok((outcome, _)) => {
            record.metrics = outcome.metrics;
            // The link's nominal impairment, so plots against loss or delay need nothing but the record.
            let profile = &suite.profiles[&cell.profile];
            record.metrics.insert("link_loss".into(), profile.uplink.loss.mean_loss());
            record.metrics.insert("link_delay_ms".into(), profile.uplink.delay.as_secs_f64() * 1000.0);
            record.histograms = outcome.histograms;
            record.series = outcome.series;
        }
        Err(CellError::Timeout) => {
            record.status = RunStatus::Timeout;
            record.error = Some(format!("no result within the cell timeout of {:?}", suite.cell_timeout));
        }
        Err(CellError::Failed(e)) => {
            record.status = RunStatus::Failed;
            record.error = Some(e);
        }
    }
    record.duration_s = started.elapsed().as_secs_f64();
    (record, info)
}

enum CellError {
    Timeout,
    Failed(String),
}

fn execute(
    suite: &Suite,
    cell: &Cell,
    identity: &Arc<Identity>,
    transports: &TransportFactory,
) -> Result<(workload::Outcome, LinkInfo), CellError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| CellError::Failed(format!("{what}: {e}"));
    let make = || transports(&cell.transport).ok_or_else(|| CellError::Failed(format!("unknown transport {}", cell.transport)));
    let profile = suite.profiles[&cell.profile].clone();
    let link = Arc::new(RunningLink::start(&profile, cell.seed, suite.backend).map_err(|e| failed("starting the link", &e))?);
    let link_started = tokio::time::Instant::now();
    let link_info = LinkInfo { congestion_control: link.congestion_control().to_string(), backend: link.backend().to_string() };

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_transport: Box<dyn Transport> = make()?;
    let server_config = ServerConfig {
        listen: SocketAddr::from((SERVER_ADDR, 4433)),
        identity: identity.clone(),
        token: "tlab-run".into(),
        limits: Limits::default(),
        service: Arc::new(EchoService::default()),
        congestion: tlab_core::config::CongestionControl::default(),
    };
    let server_ns = link.server().clone();
    let server_thread = std::thread::spawn(move || {
        let runtime = match server_ns.enter().map_err(|e| e.to_string()).and_then(|_| runtime()) {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        runtime.block_on(async move {
            match server_transport.serve(server_config).await {
                Ok(server) => {
                    let _ = ready_tx.send(Ok(server.url()));
                    let _ = stop_rx.await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
    });
    let url = match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(url)) => url,
        Ok(Err(e)) => return Err(CellError::Failed(format!("server: {e}"))),
        Err(_) => return Err(CellError::Failed("server did not start within 10 s".into())),
    };

    let counters_link = link.clone();
    let ctx = Context {
        transport: Arc::from(make()?),
        client: ClientConfig::new(url, CertPin::Sha256(identity.sha256()), "tlab-run"),
        profile,
        link_started,
        wire_bytes: Arc::new(move || {
            counters_link.counters().map_or(0, |c| c.uplink.output.bytes + c.downlink.output.bytes)
        }),
        alternate_local: SocketAddr::from((CLIENT_ALT_ADDR, 0)),
        seed: cell.seed,
    };
    let spec = cell.spec.clone();
    let timeout = suite.cell_timeout;
    let client_ns = link.client().clone();
    let client_thread = std::thread::spawn(move || -> Result<workload::Outcome, CellError> {
        client_ns.enter().map_err(|e| CellError::Failed(e.to_string()))?;
        let runtime = runtime().map_err(CellError::Failed)?;
        runtime.block_on(async move {
            match tokio::time::timeout(timeout, workload::run(&spec, &ctx)).await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(e)) => Err(CellError::Failed(e.to_string())),
                Err(_) => Err(CellError::Timeout),
            }
        })
    });
    let outcome = client_thread.join().unwrap_or_else(|_| Err(CellError::Failed("client thread panicked".into())));
    let _ = stop_tx.send(());
    let _ = server_thread.join();
    drop(Arc::try_unwrap(link).map(RunningLink::stop));
    outcome.map(|o| (o, link_info))
}

/// A runtime for one side of a cell; built on a thread inside a namespace, its sockets live there.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())
}

fn manifest(suite: &Suite, link: &LinkInfo, part: ManifestPart) -> Manifest {
    let sha256 = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
    let git = |args: &[&str]| {
        std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    Manifest {
        tlab_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        suite: suite.name.clone(),
        suite_file: suite.file.clone(),
        suite_sha256: sha256(&suite.text),
        suite_text: suite.text.clone(),
        profiles: suite
            .profiles
            .iter()
            .map(|(name, p)| ProfileRecord { name: name.clone(), origin: p.origin.clone(), sha256: sha256(&p.source), text: p.source.clone() })
            .collect(),
        seed: suite.seed,
        kernel: format!("{} {}", read_trimmed("/proc/sys/kernel/ostype"), read_trimmed("/proc/sys/kernel/osrelease")),
        cpu_model: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
            .unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        emulator_backend: link.backend.clone(),
        congestion_control: link.congestion_control.clone(),
        parts: vec![part],
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn format_secs(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs >= 60 { format!("{}m{:02}s", secs / 60, secs % 60) } else { format!("{secs}s") }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_now_is_well_formed() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z') && &now[10..11] == "T", "{now}");
    }

    #[test]
    fn eta_formatting() {
        assert_eq!(format_secs(59.4), "59s");
        assert_eq!(format_secs(125.0), "2m05s");
    }
}
