//! Runs a suite's cells, each with a fresh emulated link: the server on a runtime inside the server namespace, the
//! client workload on a runtime inside the client namespace, a per-cell timeout, and every run appended to
//! `runs.jsonl` as soon as it ends (a killed suite loses nothing that finished). Independent cells run side by side,
//! as many at once as [`crate::schedule`] allows (their link health can lower it; a cell whose link missed its
//! tolerance beside others runs again); when the suite ends `runs.jsonl` is put back in the planned order.
//! `manifest.json` is written before the first cell (status `running`, the planned cells, the concurrency) and
//! replaced atomically after every cell; an [`Interrupt`] starts no more cells and lets the running ones finish, or
//! abandons them, leaving status `interrupted`; [`resume_suite`] runs the cells a directory is missing. Every run records how well its link kept its schedule ([`LinkHealth`], judged
//! against the suite's `link_tolerance_us`), and an error of the link itself fails the cell with its reason; the
//! manifest records the binary as it was built ([`BuildInfo`], from [`RunOptions::build`]: not the current
//! directory's checkout) and the host: CPU governor, steal, and the TCP sysctls and link devices of the first cell.

use std::collections::VecDeque;
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
use tlab_netem::capture::CaptureSink;
use tlab_netem::emulator::{CLIENT_ALT_ADDR, SERVER_ADDR};
use tlab_netem::health::{CpuTimes, describe_device, tcp_sysctls};
use tlab_results::{BuildInfo, DeviceRecord, HostInfo, LatenessSummary, LinkHealth};
use tlab_results::{CellId, ConcurrencyChange, ConcurrencyRecord, Manifest, ManifestPart, ManifestStatus, Metric, ProfileRecord, RunRecord, RunStatus, StackInfo};

use crate::schedule::{self, Concurrency, Finished, Verdict};
use crate::stack::{self, AllowedGuard};
use crate::capture::CellCapture;
use crate::browser;
use crate::suite::{Cell, Client, Suite};
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
    /// `--resume` with a suite file that is not the one the directory was started with.
    #[error(
        "{file} has SHA-256 {found}, but the results directory was started with a suite file of SHA-256 {expected}: \
         resuming would mix two suites (restore the original file, or start a new run)"
    )]
    SuiteChanged {
        /// The suite file given.
        file: String,
        /// The manifest's `suite_sha256`.
        expected: String,
        /// The file's SHA-256 now.
        found: String,
    },
    /// `--resume` where a profile's text differs from the one the directory was started with.
    #[error("profile {name} has SHA-256 {found} now, but the results directory ran it with SHA-256 {expected}")]
    ProfileChanged {
        /// The profile.
        name: String,
        /// SHA-256 in the manifest.
        expected: String,
        /// SHA-256 now.
        found: String,
    },
    /// `--resume` where a planned cell of the manifest is not a cell of the suite (e.g. its seed derivation changed).
    #[error("the manifest plans {0}, which the suite no longer has")]
    UnknownCell(String),
}

/// Which cells run and where results go.
pub struct RunOptions {
    /// Results directory (created).
    pub out: PathBuf,
    /// `Some((i, n))` to run only shard i of n.
    pub shard: Option<(u32, u32)>,
    /// Makes transports by name.
    pub transports: TransportFactory,
    /// Raised (by a signal handler) to stop early.
    pub interrupt: Arc<Interrupt>,
    /// The binary that runs the suite, as compiled in (the manifest's commit is its commit).
    pub build: BuildInfo,
}

/// How far a request to stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep going.
    No,
    /// Stop after the current cell.
    AfterCell,
    /// Abandon the current cell now (it is not recorded and stays missing).
    Now,
}

/// A request to stop a suite early, shared between the runner and whoever catches signals.
pub struct Interrupt {
    stop: tokio::sync::watch::Sender<Stop>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self { stop: tokio::sync::watch::Sender::new(Stop::No) }
    }
}

impl Interrupt {
    /// Escalates: the first call stops after the current cell, the second abandons it. Returns the new state.
    pub fn raise(&self) -> Stop {
        self.stop.send_modify(|stop| *stop = if *stop == Stop::No { Stop::AfterCell } else { Stop::Now });
        *self.stop.borrow()
    }

    /// How far the request to stop has gone.
    pub fn state(&self) -> Stop {
        *self.stop.borrow()
    }

    /// Completes once the current cell is to be abandoned.
    async fn abandoned(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s == Stop::Now).await;
    }
}

/// What a suite run left in its directory.
pub struct SuiteRun {
    /// Every run in `runs.jsonl` (on resume, the earlier ones too).
    pub records: Vec<RunRecord>,
    /// The manifest as written last: status `complete`, or `interrupted` with the missing cells.
    pub manifest: Manifest,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + use<> {
    let path = path.to_owned();
    move |source| RunError::Write { path, source }
}

/// The identity a cell's run record will carry.
pub fn cell_id(cell: &Cell) -> CellId {
    CellId {
        experiment: cell.spec.kind().to_string(),
        params: cell.spec.params(),
        transport: cell.transport.clone(),
        profile: cell.profile.clone(),
        repetition: cell.repetition,
        seed: cell.seed,
    }
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Runs the suite's cells (or one shard of them) into a new `runs.jsonl` and `manifest.json`.
pub fn run_suite(suite: &Suite, options: &RunOptions) -> Result<SuiteRun, RunError> {
    std::fs::create_dir_all(&options.out).map_err(write_err(&options.out))?;
    let cells = match options.shard {
        Some((i, n)) => suite.shard(i, n),
        None => suite.cells.clone(),
    };
    let runs_path = options.out.join("runs.jsonl");
    let runs_file = std::fs::File::create(&runs_path).map_err(write_err(&runs_path))?;
    let mut manifest = manifest(suite, this_part(options.shard.map_or("all".into(), |(i, n)| format!("{i}/{n}"))), &options.build);
    manifest.cells = cells.iter().map(cell_id).collect();
    run_cells(suite, &cells, options, manifest, runs_file, Vec::new())
}

/// Runs the cells of `manifest` that `done` (the directory's `runs.jsonl`) lacks, with their planned seeds,
/// appending to `runs.jsonl`. Refuses a suite or profile whose text differs from the manifest's.
pub fn resume_suite(suite: &Suite, options: &RunOptions, mut manifest: Manifest, done: Vec<RunRecord>) -> Result<SuiteRun, RunError> {
    let found = sha256(&suite.text);
    if found != manifest.suite_sha256 {
        return Err(RunError::SuiteChanged { file: suite.file.clone(), expected: manifest.suite_sha256, found });
    }
    for recorded in &manifest.profiles {
        let found = suite.profiles.get(&recorded.name).map_or_else(|| "none (not in the suite)".into(), |p| sha256(&p.source));
        if found != recorded.sha256 {
            return Err(RunError::ProfileChanged { name: recorded.name.clone(), expected: recorded.sha256.clone(), found });
        }
    }
    let mut cells = Vec::new();
    for i in tlab_results::missing_cells(&manifest.cells, &done) {
        let id = &manifest.cells[i];
        let cell = suite.cells.iter().find(|c| &cell_id(c) == id).ok_or_else(|| {
            RunError::UnknownCell(format!("{} {} {} rep {} seed {}", id.experiment, id.transport, id.profile, id.repetition, id.seed))
        })?;
        cells.push(cell.clone());
    }
    let runs_path = options.out.join("runs.jsonl");
    let runs_file = open_for_append(&runs_path).map_err(write_err(&runs_path))?;
    let shard = manifest.parts.first().map_or_else(|| "all".into(), |p| p.shard.clone());
    manifest.parts.push(this_part(shard));
    run_cells(suite, &cells, options, manifest, runs_file, done)
}

/// Opens `runs.jsonl` for appending, first cutting off a last line a killed run left without its newline.
fn open_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    let text = std::fs::read(path)?;
    let file = std::fs::OpenOptions::new().append(true).open(path)?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        file.set_len(keep as u64)?;
    }
    Ok(file)
}

/// This process's part of the manifest.
fn this_part(shard: String) -> ManifestPart {
    ManifestPart {
        shard,
        host: read_trimmed("/proc/sys/kernel/hostname"),
        started_utc: utc_now(),
        runs: 0,
        pid: Some(std::process::id()),
        concurrency: None,
    }
}

/// Replaces `manifest.json` atomically (a temporary file renamed over it), so a kill never leaves half a manifest.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), RunError> {
    let path = dir.join("manifest.json");
    let temporary = dir.join("manifest.json.tmp");
    std::fs::write(&temporary, serde_json::to_string_pretty(manifest).expect("manifest serializes")).map_err(write_err(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(write_err(&path))
}

/// Runs `cells`, appending each run to `runs_file` and accounting for it in `manifest` (whose last part is this
/// process); `records` are the runs already in the file.
fn run_cells(
    suite: &Suite,
    cells: &[Cell],
    options: &RunOptions,
    mut manifest: Manifest,
    mut runs_file: std::fs::File,
    mut records: Vec<RunRecord>,
) -> Result<SuiteRun, RunError> {
    let runs_path = options.out.join("runs.jsonl");
    manifest.account(&records, ManifestStatus::Running);
    // Running even with nothing missing (resuming a complete directory): this process holds the directory.
    manifest.status = ManifestStatus::Running;
    write_manifest(&options.out, &manifest)?;
    let identity = Arc::new(Identity::self_signed(&["localhost", &SERVER_ADDR.to_string()])?);
    // Restores the host's allowed list when the suite ends, however `run_cells` returns.
    let allowed = AllowedGuard::new(suite.congestion_control);
    let cpu_at_start = CpuTimes::now().ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A capture's TLS key log is process-wide for its cell, so a capturing suite runs its cells one at a time.
    let requested = if suite.capture { Some(1) } else { suite.concurrency };
    let mut concurrency = Concurrency::new(schedule::initial_limit(requested, cores, cells.len()));
    let estimates: Vec<Duration> = cells.iter().map(|c| schedule::expected(c, &suite.profiles[&c.profile])).collect();
    let expected = schedule::makespan(estimates.iter().copied(), concurrency.limit());
    eprintln!(
        "expected duration {} ({} cells, {} at a time; {} one after the other)",
        format_secs(expected.as_secs_f64()),
        cells.len(),
        concurrency.limit(),
        format_secs(estimates.iter().sum::<Duration>().as_secs_f64())
    );
    let part = manifest.parts.last_mut().expect("this process's part");
    part.concurrency = Some(ConcurrencyRecord {
        initial: concurrency.limit(),
        peak: 0,
        last: concurrency.limit(),
        changes: Vec::new(),
        expected_s: expected.as_secs_f64(),
        wall_s: None,
    });
    let started = Instant::now();
    // Wall time and estimate of the cells recorded so far, to scale the estimate of the rest.
    let (mut took, mut estimated) = (Duration::ZERO, Duration::ZERO);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<(), RunError> {
        let mut pending: VecDeque<usize> = (0..cells.len()).collect();
        let mut runs = vec![0u32; cells.len()];
        // The cells running now (positions in `cells`), each with whether another cell ran beside it.
        let mut running: Vec<(usize, bool)> = Vec::new();
        loop {
            while options.interrupt.state() == Stop::No && running.len() < concurrency.limit() {
                let Some(i) = pending.pop_front() else { break };
                allowed.ensure();
                let beside = !running.is_empty();
                running.iter_mut().for_each(|(_, shared)| *shared |= beside);
                running.push((i, beside));
                runs[i] += 1;
                let part = manifest.parts.last_mut().and_then(|p| p.concurrency.as_mut()).expect("set above");
                part.peak = part.peak.max(running.len());
                let (done_tx, identity) = (done_tx.clone(), &identity);
                scope.spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_cell(suite, &cells[i], identity, options)));
                    let _ = done_tx.send((i, result));
                });
            }
            if running.is_empty() {
                return Ok(());
            }
            let (i, result) = done_rx.recv().expect("every running cell reports");
            let (_, shared) = running.swap_remove(running.iter().position(|(j, _)| *j == i).expect("a running cell"));
            let cell = &cells[i];
            let label = format!("{} {} {} rep {}", cell.spec.kind(), cell.transport, cell.profile, cell.repetition);
            let Some((record, info)) = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic)) else {
                eprintln!("{label}: abandoned");
                continue;
            };
            let host = manifest.host.get_or_insert_with(HostInfo::default);
            host.steal = cpu_at_start.zip(CpuTimes::now().ok()).map(|(start, now)| now.steal_since(&start));
            if let Some(info) = info {
                if host.tcp_sysctls.is_empty() {
                    (host.tcp_sysctls, host.devices) = (info.host.tcp_sysctls, info.host.devices);
                }
                manifest.emulator_backend = info.backend;
                manifest.stack = Some(info.stack);
            }
            let (next, verdict) = concurrency.after_cell(Finished {
                link_ok: record.link_ok(),
                shared,
                runs: runs[i],
                took: Duration::from_secs_f64(record.duration_s),
            });
            let recorded = manifest.parts.last().map_or(0, |p| p.runs);
            let part = manifest.parts.last_mut().and_then(|p| p.concurrency.as_mut()).expect("set above");
            if next.limit() != concurrency.limit() {
                let unhealthy = !record.link_ok();
                part.changes.push(ConcurrencyChange {
                    after_runs: recorded,
                    from: concurrency.limit(),
                    to: next.limit(),
                    unhealthy: unhealthy.then(|| cell_id(cell)),
                    lateness_p99_us: record.link.as_ref().and_then(|l| l.lateness_p99_us).filter(|_| unhealthy),
                });
                eprintln!("concurrency {} from now on (was {})", next.limit(), concurrency.limit());
            }
            part.last = next.limit();
            concurrency = next;
            if verdict == Verdict::Retry {
                let p99 = record.link.as_ref().and_then(|l| l.lateness_p99_us).unwrap_or(f64::NAN);
                eprintln!("{label}: link released packets late (p99 {p99:.0} µs) beside other cells: running it again");
                // Its files are rewritten by the next run; drop the ones it may not write again.
                for file in record.messages.iter().chain(&record.drops) {
                    let _ = std::fs::remove_file(options.out.join(file));
                }
                pending.push_front(i);
                continue;
            }
            took += Duration::from_secs_f64(record.duration_s);
            estimated += estimates[i];
            let scale = if estimated.is_zero() { 1.0 } else { took.as_secs_f64() / estimated.as_secs_f64() };
            let rest = schedule::makespan(pending.iter().map(|&j| estimates[j]), concurrency.limit()).as_secs_f64() * scale;
            let outcome = match &record.error {
                None => format!("ok ({:.1} s)", record.duration_s),
                Some(e) => format!("{:?}: {e}", record.status),
            };
            eprintln!("[{}/{}] eta {}  {label}: {outcome}", recorded + 1, cells.len(), format_secs(rest));
            let line = serde_json::to_string(&record).expect("record serializes");
            writeln!(runs_file, "{line}").and_then(|_| runs_file.flush()).map_err(write_err(&runs_path))?;
            records.push(record);
            manifest.parts.last_mut().expect("this process's part").runs += 1;
            manifest.account(&records, ManifestStatus::Running);
            write_manifest(&options.out, &manifest)?;
        }
    })?;
    let part = manifest.parts.last_mut().and_then(|p| p.concurrency.as_mut()).expect("set above");
    part.wall_s = Some(started.elapsed().as_secs_f64());
    // Cells finish in any order; the directory keeps them in the planned order, so that everything read from it
    // (summaries, reports) comes out the same whatever ran beside what.
    let positions = planned_positions(&manifest.cells, records.iter().map(|r| Some(r.cell_id())));
    let records = in_order(records, positions);
    write_in_planned_order(&runs_path, &manifest.cells).map_err(write_err(&runs_path))?;
    manifest.account(&records, ManifestStatus::Interrupted);
    write_manifest(&options.out, &manifest)?;
    Ok(SuiteRun { records, manifest })
}

/// For each of `runs` (the cell each one ran, if known), the position in `planned` of its cell: each planned cell
/// pairs with one run, as in [`tlab_results::missing_cells`]; `usize::MAX` for a run of no planned cell.
fn planned_positions(planned: &[CellId], runs: impl Iterator<Item = Option<CellId>>) -> Vec<usize> {
    let mut taken = vec![false; planned.len()];
    runs.map(|id| match id.and_then(|id| (0..planned.len()).find(|&i| !taken[i] && planned[i] == id)) {
        Some(i) => {
            taken[i] = true;
            i
        }
        None => usize::MAX,
    })
    .collect()
}

/// `items` in the order of their `positions` (stable: equal positions keep their order).
fn in_order<T>(items: impl IntoIterator<Item = T>, positions: Vec<usize>) -> Vec<T> {
    let mut keyed: Vec<(usize, T)> = positions.into_iter().zip(items).collect();
    keyed.sort_by_key(|(position, _)| *position);
    keyed.into_iter().map(|(_, item)| item).collect()
}

/// Rewrites `runs.jsonl` (atomically, line by line as written) in the order of `planned`; lines of no planned cell
/// keep their order at the end. Leaves a file already in that order untouched.
fn write_in_planned_order(path: &Path, planned: &[CellId]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let positions = planned_positions(planned, lines.iter().map(|l| serde_json::from_str::<RunRecord>(l).ok().map(|r| r.cell_id())));
    if positions.is_sorted() {
        return Ok(());
    }
    let temporary = path.with_extension("jsonl.tmp");
    std::fs::write(&temporary, in_order(lines, positions).into_iter().map(|line| format!("{line}\n")).collect::<String>())?;
    std::fs::rename(&temporary, path)
}

/// What the manifest records about the links that ran.
#[derive(Clone)]
struct LinkInfo {
    stack: StackInfo,
    backend: String,
    /// The TCP sysctls and link devices of the cell (the rest of [`HostInfo`] is the suite's).
    host: HostInfo,
}

/// Runs one cell; never fails: errors and timeouts become the record's status. Also returns what the link ran
/// with. `None` when the cell was abandoned.
fn run_cell(suite: &Suite, cell: &Cell, identity: &Arc<Identity>, options: &RunOptions) -> Option<(RunRecord, Option<LinkInfo>)> {
    let started = Instant::now();
    let mut record = RunRecord::new(suite.name.clone(), cell_id(cell));
    record.client = cell.client.name().into();
    let (capture, sink) = match CellCapture::start_if(suite.capture, &options.out, &record.file_stem()) {
        Ok(started) => started,
        Err(e) => {
            (record.status, record.error) = (RunStatus::Failed, Some(format!("starting the capture: {e}")));
            return Some((record, None));
        }
    };
    let result = execute(suite, cell, identity, options, &mut record.link, sink);
    let captured = capture.map(CellCapture::finish).transpose();
    let info = result.as_ref().ok().map(|(_, info)| info.clone());
    match result {
        Ok((outcome, info)) => {
            record.stack = Some(info.stack);
            match outcome.write_records(&options.out, &record.file_stem()) {
                Ok(files) => (record.messages, record.drops) = files,
                Err(e) => {
                    record.status = RunStatus::Failed;
                    record.error = Some(e.to_string());
                }
            }
            record.metrics = outcome.metrics;
            // The link's nominal impairment, so plots against loss or delay need nothing but the record.
            let profile = &suite.profiles[&cell.profile];
            record.set(Metric::LinkLoss, profile.uplink.loss.mean_loss());
            record.set(Metric::LinkDelay, profile.uplink.delay.as_secs_f64() * 1000.0);
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
        Err(CellError::Abandoned) => return None,
    }
    match captured {
        Ok(files) => record.capture = files,
        Err(e) => (record.status, record.error) = (RunStatus::Failed, Some(format!("capture: {e}"))),
    }
    record.duration_s = started.elapsed().as_secs_f64();
    Some((record, info))
}

enum CellError {
    Timeout,
    Failed(String),
    Abandoned,
}

/// Runs one cell on a fresh link; `health` gets the link's health once the workload is over (also when it failed).
/// An error of the link itself (the forwarder's or stopping it) fails the cell with its reason. `capture` gets the
/// link's packets.
fn execute(
    suite: &Suite,
    cell: &Cell,
    identity: &Arc<Identity>,
    options: &RunOptions,
    health: &mut Option<LinkHealth>,
    capture: Option<CaptureSink>,
) -> Result<(workload::Outcome, LinkInfo), CellError> {
    let transports = &options.transports;
    let failed = |what: &str, e: &dyn std::fmt::Display| CellError::Failed(format!("{what}: {e}"));
    let make = || transports(&cell.transport).ok_or_else(|| CellError::Failed(format!("unknown transport {}", cell.transport)));
    let profile = suite.profiles[&cell.profile].clone();
    let cpu_before = CpuTimes::now().ok();
    let link = match capture {
        Some(sink) => RunningLink::start_captured(&profile, cell.seed, suite.backend, sink),
        None => RunningLink::start(&profile, cell.seed, suite.backend),
    };
    let link = Arc::new(link.map_err(|e| failed("starting the link", &e))?);
    let link_started = tokio::time::Instant::now();
    // Both namespaces' TCP on the suite's algorithm, read back; quinn gets it through the configs below.
    let congestion = suite.congestion_control;
    let tcp = |ns: &tlab_netem::namespace::NetNs, side: &str| stack::apply_tcp(ns, side, stack::kernel_name(congestion)).map_err(CellError::Failed);
    let stack = StackInfo {
        client: stack::side(tcp(link.client(), "client")?, congestion, true),
        server: stack::side(tcp(link.server(), "server")?, congestion, false),
    };
    let link_info = LinkInfo { stack, backend: link.backend().to_string(), host: describe_link(&link) };

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_transport: Box<dyn Transport> = make()?;
    let server_config = ServerConfig {
        listen: SocketAddr::from((SERVER_ADDR, 4433)),
        identity: identity.clone(),
        token: "tlab-run".into(),
        limits: Limits::default(),
        service: Arc::new(EchoService::default()),
        congestion,
        deadlines: tlab_core::Deadlines::default(),
        max_connections_per_ip: None,
        allow_origin: Default::default(),
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
        client: ClientConfig { congestion, ..ClientConfig::new(url, CertPin::Sha256(identity.sha256()), "tlab-run") },
        profile,
        link_started,
        link: link.clone(),
        wire_bytes: Arc::new(move || {
            counters_link.counters().map_or(0, |c| c.uplink.output.bytes + c.downlink.output.bytes)
        }),
        alternate_local: SocketAddr::from((CLIENT_ALT_ADDR, 0)),
        seed: cell.seed,
    };
    let spec = cell.spec.clone();
    let timeout = suite.cell_timeout;
    let client_ns = link.client().clone();
    let interrupt = options.interrupt.clone();
    let (client, mode, browser_identity) = (cell.client, cell.transport.clone(), identity.clone());
    let client_thread = std::thread::spawn(move || -> Result<workload::Outcome, CellError> {
        client_ns.enter().map_err(|e| CellError::Failed(e.to_string()))?;
        let runtime = runtime().map_err(CellError::Failed)?;
        runtime.block_on(async move {
            // The cell's workload through the native client, or through the browser's own APIs.
            let work = async {
                match client {
                    Client::Native => workload::run(&spec, &ctx).await.map_err(|e| e.to_string()),
                    Client::Chromium => {
                        browser::run_workload(&spec, &mode, &ctx, browser_identity, timeout).await.map_err(|e| e.to_string())
                    }
                }
            };
            tokio::select! {
                result = tokio::time::timeout(timeout, work) => match result {
                    Ok(Ok(outcome)) => Ok(outcome),
                    Ok(Err(e)) => Err(CellError::Failed(e)),
                    Err(_) => Err(CellError::Timeout),
                },
                () = interrupt.abandoned() => Err(CellError::Abandoned),
            }
        })
    });
    let outcome = client_thread.join().unwrap_or_else(|_| Err(CellError::Failed("client thread panicked".into())));
    let _ = stop_tx.send(());
    let _ = server_thread.join();
    *health = Some(link_health(&link, suite.link_tolerance_us, cpu_before));
    let stopped = Arc::try_unwrap(link).map_err(|_| "still in use when the cell ended".to_string()).and_then(|l| l.stop().map_err(|e| e.to_string()));
    match (outcome, stopped) {
        (Err(CellError::Abandoned), _) => Err(CellError::Abandoned),
        (_, Err(e)) => Err(CellError::Failed(format!("link: {e}"))),
        (outcome, Ok(_)) => outcome.map(|o| (o, link_info)),
    }
}

/// How well `link` kept its schedule since `cpu_before`, judged against the suite's tolerance at p99.
fn link_health(link: &RunningLink, tolerance_us: u64, cpu_before: Option<CpuTimes>) -> LinkHealth {
    let lateness = link.lateness().map(|l| LatenessSummary {
        released: l.count(),
        p50_us: l.quantile_us(0.5),
        p99_us: l.quantile_us(0.99),
        max_us: l.max_us(),
        late_packets: l.at_least_us(tolerance_us),
    });
    let steal = cpu_before.zip(CpuTimes::now().ok()).map(|(before, after)| after.steal_since(&before));
    LinkHealth::judge(link.backend().to_string(), lateness, tolerance_us, link.realtime(), steal)
}

/// The client namespace's TCP sysctls and both link devices as the kernel describes them (best effort: what
/// cannot be read is left out).
fn describe_link(link: &RunningLink) -> HostInfo {
    let devices = [("client", link.client()), ("server", link.server())]
        .into_iter()
        .filter_map(|(side, ns)| describe_device(ns).ok().map(|(link, qdisc)| (side.to_string(), DeviceRecord { link, qdisc })))
        .collect();
    HostInfo { tcp_sysctls: tcp_sysctls(link.client()).unwrap_or_default(), devices, ..HostInfo::default() }
}

/// A runtime for one side of a cell; built on a thread inside a namespace, its sockets live there.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())
}

/// A manifest for `suite` run by `build` with no cells yet; the link fields are filled in as cells run.
fn manifest(suite: &Suite, part: ManifestPart, build: &BuildInfo) -> Manifest {
    Manifest {
        tlab_version: build.version.clone(),
        git_commit: build.git_commit.clone(),
        git_dirty: build.git_dirty,
        build: Some(build.clone()),
        host: Some(HostInfo {
            cpu_governor: std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").ok().map(|g| g.trim().to_string()),
            ..HostInfo::default()
        }),
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
        emulator_backend: "unknown".into(),
        congestion_control: suite.congestion_control.name().into(),
        stack: None,
        parts: vec![part],
        status: ManifestStatus::Running,
        planned_cells: 0,
        cells: Vec::new(),
        completed_cells: 0,
        missing_cells: Vec::new(),
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
    fn interrupts_escalate_and_wake_the_current_cell() {
        let interrupt = Arc::new(Interrupt::default());
        assert_eq!(interrupt.state(), Stop::No);
        let waiter = {
            let interrupt = interrupt.clone();
            std::thread::spawn(move || tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(interrupt.abandoned()))
        };
        assert_eq!(interrupt.raise(), Stop::AfterCell);
        assert!(!waiter.is_finished(), "the first signal lets the current cell finish");
        assert_eq!(interrupt.raise(), Stop::Now);
        waiter.join().unwrap();
        assert_eq!(interrupt.raise(), Stop::Now);
    }

    #[test]
    fn appending_cuts_off_a_line_a_kill_left_unfinished() {
        let path = std::env::temp_dir().join(format!("tlab-runner-append-{}.jsonl", std::process::id()));
        for (before, after) in [("{\"a\":1}\n{\"b\"", "{\"a\":1}\n"), ("{\"a\"", ""), ("{\"a\":1}\n", "{\"a\":1}\n"), ("", "")] {
            std::fs::write(&path, before).unwrap();
            let mut file = open_for_append(&path).unwrap();
            writeln!(file, "{{\"c\":3}}").unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{after}{{\"c\":3}}\n"), "{before:?}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn runs_are_put_back_in_the_planned_order() {
        let id = |repetition: u32| CellId {
            experiment: "latency".into(),
            params: Default::default(),
            transport: "ws".into(),
            profile: "clean".into(),
            repetition,
            seed: u64::from(repetition),
        };
        let planned = [id(0), id(1), id(1), id(2)];
        let runs = [Some(id(2)), Some(id(1)), None, Some(id(1)), Some(id(0)), Some(id(1))];
        let positions = planned_positions(&planned, runs.into_iter());
        assert_eq!(positions, [3, 1, usize::MAX, 2, 0, usize::MAX], "a cell planned twice pairs with two runs, no more");
        assert_eq!(in_order(["c", "b1", "x", "b2", "a", "y"], positions), ["a", "b1", "b2", "c", "x", "y"]);
    }

    #[test]
    fn eta_formatting() {
        assert_eq!(format_secs(59.4), "59s");
        assert_eq!(format_secs(125.0), "2m05s");
    }
}
