//! `tlab soak`: hold many concurrent sessions per mode for a while on loopback and report what they cost.
//!
//! For each mode a fresh `tlab serve` process is started and a fresh client process (this command re-run for one
//! mode) opens `--sessions` connections, each with one echo stream that sends a 16-byte ping every `--interval-ms`
//! (phases spread evenly, so the pings do not come in bursts) and waits for its echo. After `--seconds` it reads the
//! resident set size (VmRSS) and descriptor count of both processes, closes every session and reads the server's
//! again. Memory per connection is (RSS while holding − RSS before connecting) / sessions held, for each side.
//!
//! A session fails when it cannot connect or open its stream, when its stream ends or errs, or when a ping of a
//! reliable mode gets no echo within 5 s; on a datagram mode a missing echo is counted as lost, not as a failure.
//! Counts and time are bounded (at most 20,000 sessions and 3,600 s), and the descriptor limit is raised to its hard
//! limit first, for this process and the server it starts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tlab_core::tls::CertPin;
use tlab_core::{ClientConfig, Message, StreamOpen, Transport};

/// Most sessions one soak holds per mode.
const MAX_SESSIONS: u32 = 20_000;
/// Longest hold, seconds.
const MAX_SECONDS: u64 = 3_600;
/// Handshakes in flight at once while the sessions connect.
const CONNECT_CONCURRENCY: usize = 64;
/// How long a ping may wait for its echo, and a connect for its session.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after connecting (and after closing) the processes are left to settle before they are measured.
const SETTLE: Duration = Duration::from_secs(2);

/// What to soak.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Transport modes and groups, as in suites (default: all).
    #[arg(long, value_delimiter = ',')]
    pub transports: Vec<String>,
    /// Concurrent sessions per mode.
    #[arg(long, default_value_t = 1000)]
    pub sessions: u32,
    /// How long the sessions are held, seconds.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Milliseconds between the pings of one session.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print one JSON object per mode instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one mode.
#[derive(Debug, Serialize, Deserialize)]
pub struct SoakReport {
    /// Transport mode.
    pub transport: String,
    /// Sessions asked for.
    pub sessions: u32,
    /// Sessions that were connected and answering at the end of the hold.
    pub held: u32,
    /// Sessions that failed (see the module documentation).
    pub failures: u32,
    /// First failure, if any.
    pub first_failure: Option<String>,
    /// Pings answered, over all sessions.
    pub pings: u64,
    /// Pings without an echo on a datagram mode.
    pub lost_pings: u64,
    /// Seconds until every session had connected or failed.
    pub connect_s: f64,
    /// Server VmRSS before any session, KiB.
    pub server_rss_before_kib: u64,
    /// Server VmRSS at the end of the hold, KiB.
    pub server_rss_held_kib: u64,
    /// Server VmRSS after every session closed, KiB.
    pub server_rss_after_kib: u64,
    /// Client VmRSS before any session, KiB.
    pub client_rss_before_kib: u64,
    /// Client VmRSS at the end of the hold, KiB.
    pub client_rss_held_kib: u64,
    /// Server descriptors before, while holding, after.
    pub server_fds: [u64; 3],
    /// Client descriptors before and while holding.
    pub client_fds: [u64; 2],
}

impl SoakReport {
    /// Server memory per held session, KiB.
    pub fn server_kib_per_session(&self) -> f64 {
        per_session(self.server_rss_held_kib, self.server_rss_before_kib, self.held)
    }

    /// Client memory per held session, KiB.
    pub fn client_kib_per_session(&self) -> f64 {
        per_session(self.client_rss_held_kib, self.client_rss_before_kib, self.held)
    }
}

fn per_session(held: u64, before: u64, sessions: u32) -> f64 {
    if sessions == 0 { 0.0 } else { held.saturating_sub(before) as f64 / f64::from(sessions) }
}

/// Runs the soak: one mode in this process, several by re-running this command once per mode.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=MAX_SESSIONS).contains(&args.sessions), "--sessions must be 1 to {MAX_SESSIONS}");
    anyhow::ensure!((1..=MAX_SECONDS).contains(&args.seconds), "--seconds must be 1 to {MAX_SECONDS}");
    anyhow::ensure!(args.interval_ms >= 10, "--interval-ms must be at least 10");
    let list = if args.transports.is_empty() { vec!["all".to_string()] } else { args.transports.clone() };
    let modes = crate::run_cmd::resolve_transports(&list)?;
    let nofile = raise_nofile()?;
    anyhow::ensure!(
        nofile > u64::from(args.sessions) * 3 + 100,
        "the descriptor limit ({nofile}) is too low for {} sessions",
        args.sessions
    );
    let reports = if let [mode] = modes.as_slice() {
        vec![soak_one(mode, &args).await?]
    } else {
        let mut reports = Vec::new();
        for mode in &modes {
            eprintln!("soak: {mode}: {} sessions for {} s…", args.sessions, args.seconds);
            reports.push(soak_in_child(mode, &args)?);
        }
        reports
    };
    if args.json {
        for report in &reports {
            println!("{}", serde_json::to_string(report)?);
        }
    } else {
        print_table(&reports, &args);
    }
    Ok(())
}

/// Re-runs `tlab soak` for `mode` alone, so that each mode's client starts with a fresh heap.
fn soak_in_child(mode: &str, args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let output = Command::new(std::env::current_exe()?)
        .args(["soak", "--json", "--transports", mode])
        .args(["--sessions", &args.sessions.to_string(), "--seconds", &args.seconds.to_string()])
        .args(["--interval-ms", &args.interval_ms.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the {mode} soak"))?;
    anyhow::ensure!(output.status.success(), "the {mode} soak exited with {}", output.status);
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(text.lines().last().context("no soak report")?)?)
}

/// A `tlab serve` child, ended by its PID when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(mode: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--transport", mode, "--listen", "127.0.0.1:0", "--token", "soak"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting tlab serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading the server's announcement")?;
        let announcement: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("server announcement `{}`", line.trim()))?;
        let url = announcement["url"].as_str().context("no url in the announcement")?.to_string();
        Ok(Self { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = tlab_netem::namespace::terminate(&mut self.child, Duration::from_secs(2));
    }
}

/// What the sessions count while they run.
#[derive(Default)]
struct Tally {
    pings: AtomicU64,
    lost: AtomicU64,
}

async fn soak_one(mode: &str, args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let transport: Arc<dyn Transport> = Arc::from(tlab_transports::by_name(mode)?);
    let reliable = transport.capabilities().reliable;
    let server = ServerProcess::start(mode)?;
    tokio::time::sleep(SETTLE).await;
    let me = std::process::id();
    let (server_rss_before_kib, client_rss_before_kib) = (rss_kib(server.pid())?, rss_kib(me)?);
    let (server_fds_before, client_fds_before) = (fd_count(server.pid())?, fd_count(me)?);

    let interval = Duration::from_millis(args.interval_ms);
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel::<()>(args.sessions as usize);
    let started = Instant::now();
    let sessions: Vec<_> = (0..args.sessions)
        .map(|i| {
            let config = ClientConfig::new(server.url.clone(), CertPin::AnyCertificate, "soak");
            let phase = interval.mul_f64(f64::from(i) / f64::from(args.sessions));
            let (transport, tally, gate) = (transport.clone(), tally.clone(), gate.clone());
            let (connected, stop) = (connected_tx.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let (connection, stream) = {
                    let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
                    let connect = async {
                        let connection = transport.connect(config).await.map_err(|e| format!("connect: {e}"))?;
                        let stream = connection.open_stream(StreamOpen::echo(0)).await.map_err(|e| format!("open: {e}"))?;
                        Ok::<_, String>((connection, stream))
                    };
                    tokio::time::timeout(PING_TIMEOUT * 6, connect).await.map_err(|_| "connect timed out".to_string())??
                };
                let _ = connected.send(()).await;
                drop(connected);
                let outcome = ping_until_stopped(stream, phase, interval, reliable, &tally, stop).await;
                connection.close().await;
                outcome
            })
        })
        .collect();
    drop(connected_tx);
    // Every session either connects (and reports it) or fails (and drops its sender): the loop ends either way.
    let mut connected = 0u32;
    while connected_rx.recv().await.is_some() {
        connected += 1;
    }
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!("soak: {mode}: {connected} of {} sessions connected in {connect_s:.1} s; holding {} s", args.sessions, args.seconds);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (server_rss_held_kib, client_rss_held_kib) = (rss_kib(server.pid())?, rss_kib(me)?);
    let (server_fds_held, client_fds_held) = (fd_count(server.pid())?, fd_count(me)?);
    let _ = stop_tx.send(true);
    let (mut held, mut failures, mut first_failure) = (0u32, 0u32, None);
    for handle in sessions {
        match tokio::time::timeout(PING_TIMEOUT * 2, handle).await {
            Ok(Ok(Ok(()))) => held += 1,
            Ok(Ok(Err(why))) => {
                failures += 1;
                first_failure.get_or_insert(why);
            }
            Ok(Err(join)) => {
                failures += 1;
                first_failure.get_or_insert(format!("session task: {join}"));
            }
            Err(_) => {
                failures += 1;
                first_failure.get_or_insert("session did not stop".to_string());
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let (server_rss_after_kib, server_fds_after) = (rss_kib(server.pid())?, fd_count(server.pid())?);
    Ok(SoakReport {
        transport: mode.to_string(),
        sessions: args.sessions,
        held,
        failures,
        first_failure,
        pings: tally.pings.load(Ordering::Relaxed),
        lost_pings: tally.lost.load(Ordering::Relaxed),
        connect_s,
        server_rss_before_kib,
        server_rss_held_kib,
        server_rss_after_kib,
        client_rss_before_kib,
        client_rss_held_kib,
        server_fds: [server_fds_before, server_fds_held, server_fds_after],
        client_fds: [client_fds_before, client_fds_held],
    })
}

/// One session's life after connecting: a ping every `interval` (first after `phase`) until `stop` turns true.
async fn ping_until_stopped(
    stream: tlab_core::MessageStream,
    phase: Duration,
    interval: Duration,
    reliable: bool,
    tally: &Tally,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let tlab_core::MessageStream { mut sink, mut source } = stream;
    let payload = Bytes::from_static(b"soak-ping-16byte");
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 0u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        sink.send(Message::data(0, seq, payload.clone())).await.map_err(|e| format!("ping {seq}: {e}"))?;
        // Wait for this ping's echo; on a datagram mode an older one may still come in first, or none at all.
        let answered = tokio::time::timeout(PING_TIMEOUT, async {
            loop {
                match source.recv().await {
                    Ok(Some(echo)) if echo.seq == seq => return Ok(()),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(format!("stream ended after ping {seq}")),
                    Err(e) => return Err(format!("echo of ping {seq}: {e}")),
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(())) => {
                tally.pings.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(why)) => return Err(why),
            Err(_) if !reliable => {
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => return Err(format!("no echo of ping {seq} within {PING_TIMEOUT:?}")),
        }
    }
    let _ = sink.finish().await;
    Ok(())
}

fn print_table(reports: &[SoakReport], args: &SoakArgs) {
    println!(
        "{} sessions per mode, one echo stream each pinging every {} ms, held {} s on loopback",
        args.sessions, args.interval_ms, args.seconds
    );
    println!("| mode | held | failures | pings (lost) | server RSS before → held → after (MiB) | server KiB/conn | client KiB/conn | server fds before/held/after | client fds held |");
    println!("|---|---:|---:|---:|---|---:|---:|---|---:|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for r in reports {
        println!(
            "| {} | {} | {} | {} ({}) | {:.1} → {:.1} → {:.1} | {:.0} | {:.0} | {}/{}/{} | {} |",
            r.transport,
            r.held,
            r.failures,
            r.pings,
            r.lost_pings,
            mib(r.server_rss_before_kib),
            mib(r.server_rss_held_kib),
            mib(r.server_rss_after_kib),
            r.server_kib_per_session(),
            r.client_kib_per_session(),
            r.server_fds[0],
            r.server_fds[1],
            r.server_fds[2],
            r.client_fds[1]
        );
    }
    for r in reports.iter().filter(|r| r.first_failure.is_some()) {
        println!("{}: first failure: {}", r.transport, r.first_failure.as_deref().unwrap_or_default());
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Open descriptors of `pid`.
fn fd_count(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("listing /proc/{pid}/fd"))?.count() as u64)
}

/// Raises the soft descriptor limit to the hard limit (children inherit it); returns the new soft limit.
fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    Ok(hard)
}
