//! The browser as a client: headless Chromium, started inside the client network namespace so that its traffic
//! crosses the emulated link, runs one workload through the browser's own APIs (WebSocket, EventSource, WebTransport
//! streams and datagrams, `fetch` for gRPC-Web) against a `tlab serve`-style server.
//!
//! The page (`assets/page.html`, embedded) is served by a small HTTPS page host that this module runs on the client
//! namespace's loopback, with the run's certificate: `https://127.0.0.1:PORT/tlab/page#<job JSON>`. From there
//! WebSocket and WebTransport need no CORS, gRPC-Web and SSE get it from their servers (`--allow-origin`), and a
//! loopback page may reach the namespace's private addresses. The page host also answers `GET /tlab/clock` with
//! the host's CLOCK_MONOTONIC in ns, so that the page maps `performance.now()` onto the clock of `sent_at` (the
//! shortest of 9 loopback round trips; Chromium coarsens `performance.now()` to 100 µs on a page that is not
//! cross-origin isolated, which bounds every browser latency figure's resolution), and takes the outcome as
//! `POST /tlab/result`. Echo latencies are round trips; source latencies are one-way (server `sent_at` → page).
//!
//! [`run_workload`] is the runner's hook for a cell with `client = "chromium"`: it maps the experiment onto a page
//! workload ([`page_workload`]) and the page's report onto the metrics the native workload records, so both land in
//! the same `runs.jsonl`. Latency echo (ws, ws-mux, wt-stream, wt-datagram) gives round trips; latency source (ws,
//! sse-h1, sse-h2, grpc-web), outage and connection-limit give one-way figures. `sse-h1` runs with HTTP/2 disabled
//! (`--disable-http2`), since the server offers both over ALPN and a browser would choose h2. An outage cell runs a
//! source through the blackhole with no session layer on the client: over SSE the URL carries `session=` and the
//! browser's EventSource reconnects by itself (after an error, with `Last-Event-ID`, at its default `retry` — the
//! server sends no `retry:` field); over ws the page reconnects when the socket closes or is silent for 1 s, asking
//! for the next seq (`session=`, `next=`, `reopen=1`).
//!
//! Chromium runs with a fresh `--user-data-dir` (removed afterwards), trusts the server certificate by its SPKI
//! hash (`--ignore-certificate-errors-spki-list`; WebTransport pins it with `serverCertificateHashes`), and is ended
//! by its process group (its PID) when the result is in or the time is up.

use std::path::PathBuf;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tlab_core::tls::Identity;
use tlab_netem::emulator::SERVER_ADDR;
use tlab_netem::namespace::NetNs;
use tlab_results::{Distribution, MessageRecord, Metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::suite::ExperimentSpec;
use crate::workload::{self, Context, Outcome, Schedule, StreamLog};

/// The page the browser loads; the job travels in its URL fragment.
const PAGE: &str = include_str!("../assets/page.html");
/// The Debian package's binary (scripts/setup.sh installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Largest request the page host reads (the result carries every latency sample).
const MAX_REQUEST: usize = 32 << 20;

/// Why a browser run produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Chromium is not installed or would not start.
    #[error("starting {CHROMIUM} (scripts/setup.sh installs it): {0}")]
    Start(std::io::Error),
    /// The page host could not start in the client namespace.
    #[error("page host: {0}")]
    PageHost(String),
    /// No result arrived in time.
    #[error("no result from the browser within {0:?}")]
    Timeout(Duration),
    /// The result was not the JSON the page sends.
    #[error("browser result: {0}")]
    Result(#[from] serde_json::Error),
    /// The page reported that its workload failed.
    #[error("in the browser: {0}")]
    Page(String),
    /// The page has no workload for this experiment on this mode.
    #[error("the browser page has no {kind} workload for {mode}")]
    Unsupported {
        /// The experiment kind.
        kind: &'static str,
        /// The mode.
        mode: String,
    },
}

/// One browser workload (serialized into the page's URL fragment).
#[derive(Debug, Clone, Serialize)]
pub struct BrowserJob {
    /// The mode, as `tlab list` names it (`ws`, `wt-stream`, `wt-datagram`, `sse-h1`, `sse-h2`, `grpc-web`).
    pub mode: String,
    /// The server's origin, `https://HOST:PORT`.
    pub base: String,
    /// The bearer token (the page sends it in the query or a header, as the mode allows).
    pub token: String,
    /// SHA-256 of the server's DER certificate, hex (WebTransport's `serverCertificateHashes`).
    pub cert_sha256: String,
    /// The page workload, as [`page_workload`] names it: `echo`, `source`, `outage` or `streams`.
    pub workload: String,
    /// Messages per stream.
    pub count: u64,
    /// Payload bytes per message.
    pub size: usize,
    /// Time between a stream's messages, µs (0 = as fast as possible): the page's schedule for echo, the server's
    /// `interval_us` for a source.
    pub interval_us: u64,
    /// Streams (ws-mux echo and `streams`; the other workloads use stream 0).
    pub streams: u32,
    /// The page gives up and reports what it has after this long, ms.
    pub deadline_ms: u64,
    /// A session id (hex) for an outage: the server's resume state that EventSource's `Last-Event-ID` and the page's
    /// WebSocket reconnect use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// What the page reports.
#[derive(Debug, Clone, Deserialize)]
pub struct BrowserOutcome {
    /// Distinct data messages received.
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Every message arrived after all smaller sequence numbers.
    pub in_order: bool,
    /// Echoed payloads that differ from what was sent.
    pub corrupt: u64,
    /// Every data message received, in arrival order: `[stream, seq, sent_at, received]`, times in host ns
    /// (`sent_at` is the page's send time for echo, the server's for a source).
    pub messages: Vec<(u32, u64, u64, u64)>,
    /// Host ns at which each stream was opened (the start of its schedule for echo); `null` for a stream never opened.
    #[serde(default)]
    pub opened_ns: Vec<Option<u64>>,
    /// Reconnections that succeeded (EventSource's own, or the page's WebSocket reconnect).
    #[serde(default)]
    pub reconnects: u64,
    /// `round-trip` or `one-way`.
    pub latency: String,
    /// The shortest clock-calibration round trip, µs (the mapping is good to ± half of it).
    #[serde(default)]
    pub clock_rtt_us: f64,
    /// The resolution of `performance.now()` the page assumes, µs.
    pub clock_resolution_us: f64,
    /// Data phase, ms.
    #[serde(default)]
    pub elapsed_ms: f64,
    /// What failed in the page, if anything.
    #[serde(default)]
    pub error: Option<String>,
}

impl BrowserOutcome {
    /// Per message latency, µs: round trips for echo, one-way for a source (see [`BrowserOutcome::latency`]).
    pub fn latencies_us(&self) -> Vec<f64> {
        self.messages.iter().map(|&(_, _, sent, received)| received.saturating_sub(sent) as f64 / 1e3).collect()
    }
}

/// The page workload that runs `spec` on `mode` (`None`: the page has none; suite expansion drops such cells).
pub fn page_workload(spec: &ExperimentSpec, mode: &str) -> Option<&'static str> {
    let one_of = |modes: &[&str]| modes.contains(&mode);
    match spec {
        ExperimentSpec::Latency { pattern, streams, .. } if pattern == "echo" => {
            (mode == "ws-mux" || (*streams == 1 && one_of(&["ws", "wt-stream", "wt-datagram"]))).then_some("echo")
        }
        ExperimentSpec::Latency { streams: 1, .. } => {
            one_of(&["ws", "wt-datagram", "sse-h1", "sse-h2", "grpc-web"]).then_some("source")
        }
        ExperimentSpec::Outage { .. } => one_of(&["ws", "sse-h1", "sse-h2"]).then_some("outage"),
        ExperimentSpec::ConnectionLimit { .. } => one_of(&["sse-h1", "sse-h2"]).then_some("streams"),
        _ => None,
    }
}

/// A stream's first message later than the fastest stream's by more than this waited for a connection.
const STALL: Duration = Duration::from_secs(1);

/// The runner's hook for a `chromium` cell: runs `spec` on the cell's server (`https://SERVER_ADDR:4433`, the token of
/// `ctx.client`) in Chromium inside the link's client namespace, and records the same metrics as the native workload
/// (plus the connection-limit ones). The page gets `timeout` less 5 s, to report what it has before the cell's end.
pub async fn run_workload(spec: &ExperimentSpec, mode: &str, ctx: &Context, identity: Arc<Identity>, timeout: Duration) -> Result<Outcome, BrowserError> {
    let workload = page_workload(spec, mode).ok_or_else(|| BrowserError::Unsupported { kind: spec.kind(), mode: mode.into() })?;
    let (count, size, rate_hz, streams) = match *spec {
        ExperimentSpec::Latency { messages, size, rate_hz, streams, .. } => (messages, size, rate_hz, streams),
        ExperimentSpec::Outage { duration_s, rate_hz } => ((duration_s * rate_hz as f64) as u64, 64, rate_hz, 1),
        ExperimentSpec::ConnectionLimit { streams, messages, rate_hz, size } => (messages, size, rate_hz, streams),
        _ => unreachable!("page_workload has a workload only for the kinds above"),
    };
    let job = BrowserJob {
        mode: mode.into(),
        base: format!("https://{SERVER_ADDR}:4433"),
        token: ctx.client.token.clone(),
        cert_sha256: identity.sha256_hex(),
        workload: workload.into(),
        count,
        size,
        interval_us: if rate_hz == 0 { 0 } else { 1_000_000 / rate_hz },
        streams,
        deadline_ms: timeout.saturating_sub(Duration::from_secs(5)).as_millis() as u64,
        session: (workload == "outage").then(|| format!("{:016x}", ctx.seed)),
    };
    let ns = ctx.link.client().clone();
    let report = tokio::task::spawn_blocking(move || run(&ns, &identity, &job, timeout))
        .await
        .map_err(|e| BrowserError::Page(format!("the browser thread: {e}")))??;
    if let Some(error) = report.error {
        return Err(BrowserError::Page(error));
    }
    let mut outcome = Outcome::default();
    let mut logs: Vec<StreamLog> = (0..streams).map(|_| StreamLog::default()).collect();
    for &(stream, seq, sent_ns, received_ns) in &report.messages {
        if let Some(log) = logs.get_mut(stream as usize) {
            log.records.push(MessageRecord { stream, seq, size: size as u64, scheduled_ns: sent_ns, sent_ns, received_ns });
        }
    }
    let opened = |stream: usize| report.opened_ns.get(stream).copied().flatten();
    let logs: Vec<StreamLog> = logs
        .into_iter()
        .enumerate()
        .map(|(stream, log)| match workload {
            "echo" => log.scheduled(Schedule::at(rate_hz, opened(stream).unwrap_or(0))),
            _ => log.scheduled_by_sender(rate_hz),
        })
        .collect();
    let ordering = workload::ordering_of(&logs, count);
    workload::record_ordering(&mut outcome, ordering, count * u64::from(streams));
    match workload {
        "outage" => {
            outcome.arrivals(&logs[0], ctx.link_started);
            outcome.set(Metric::Reconnects, report.reconnects as f64);
            outcome.set(Metric::SurvivedWithoutReconnect, f64::from(u8::from(report.reconnects == 0)));
            outcome.blackhole(&ctx.profile);
        }
        "streams" => {
            let waits: Vec<f64> = logs
                .iter()
                .enumerate()
                .filter_map(|(stream, log)| Some(log.records.first()?.received_ns.saturating_sub(opened(stream)?) as f64 / 1e6))
                .collect();
            let fastest = waits.iter().copied().fold(f64::INFINITY, f64::min);
            let stalled = waits.iter().filter(|&&w| w - fastest > STALL.as_secs_f64() * 1000.0).count();
            outcome.set(Metric::StalledStreams, stalled as f64);
            outcome.set(Metric::StallMax, waits.iter().map(|w| w - fastest).fold(0.0, f64::max));
        }
        _ => outcome.set(Metric::Goodput, workload::goodput_mbit_s(&logs, ordering.delivered, size)),
    }
    outcome.messages(if workload == "echo" { Distribution::RoundTrip } else { Distribution::OneWay }, &logs);
    Ok(outcome)
}

/// Runs `job` in headless Chromium inside `ns`, waiting at most `timeout` for its outcome.
pub fn run(ns: &NetNs, identity: &Arc<Identity>, job: &BrowserJob, timeout: Duration) -> Result<BrowserOutcome, BrowserError> {
    let (port, mut results, host) = start_page_host(ns, identity)?;
    let fragment = percent_encode(&serde_json::to_string(job)?);
    let profile = profile_dir();
    let url = format!("https://127.0.0.1:{port}/tlab/page#{fragment}");
    let mut chromium = start_chromium(ns, identity, &profile, &url, job.mode == "sse-h1")?;
    let body = results.blocking_recv_timeout(timeout);
    end(&mut chromium);
    let _ = std::fs::remove_dir_all(&profile);
    host.stop();
    let body = body.ok_or(BrowserError::Timeout(timeout))?;
    Ok(serde_json::from_slice(&body)?)
}

/// A fresh, empty profile directory for one Chromium run.
fn profile_dir() -> PathBuf {
    let unique = format!("tlab-chromium-{}-{}", std::process::id(), tlab_core::clock::monotonic_ns());
    std::env::temp_dir().join(unique)
}

fn start_chromium(ns: &NetNs, identity: &Identity, profile: &std::path::Path, url: &str, http1_only: bool) -> Result<Child, BrowserError> {
    let mut command = Command::new(CHROMIUM);
    if http1_only {
        command.arg("--disable-http2");
    }
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--ignore-certificate-errors-spki-list={}", identity.spki_sha256_base64()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that ending it ends its renderer and utility processes too.
        .process_group(0);
    ns.spawn(&mut command).map_err(BrowserError::Start)
}

/// Ends Chromium's process group (the group id is the PID of the process we started) and reaps it.
fn end(chromium: &mut Child) {
    let group = nix::unistd::Pid::from_raw(chromium.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = chromium.wait();
}

/// `encodeURIComponent` for the fragment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The results the page host received.
struct Results(mpsc::Receiver<Vec<u8>>);

impl Results {
    fn blocking_recv_timeout(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match self.0.try_recv() {
                Ok(body) => return Some(body),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    }
}

/// The page host's thread; dropping the sender ends it.
struct PageHost {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl PageHost {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Starts the HTTPS page host on 127.0.0.1 inside `ns`: its port, the channel of results, the handle.
fn start_page_host(ns: &NetNs, identity: &Arc<Identity>) -> Result<(u16, Results, PageHost), BrowserError> {
    tlab_core::tls::crypto_provider();
    let config = identity.server_config(&[b"http/1.1"]).map_err(|e| BrowserError::PageHost(e.to_string()))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    // The listener is bound on a thread inside the namespace, so it listens on that namespace's loopback.
    let listener = ns
        .run(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        })
        .map_err(|e| BrowserError::PageHost(e.to_string()))?
        .map_err(|e| BrowserError::PageHost(e.to_string()))?;
    let port = listener.local_addr().map_err(|e| BrowserError::PageHost(e.to_string()))?.port();
    let (result_tx, result_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BrowserError::PageHost(e.to_string()))?;
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let accept = async {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let (acceptor, results) = (acceptor.clone(), result_tx.clone());
                    tokio::spawn(async move {
                        let exchange = async {
                            // Nagle's algorithm behind a delayed ACK would hold a response ~40 ms.
                            tcp.set_nodelay(true)?;
                            let tls = acceptor.accept(tcp).await?;
                            answer(tls, &results).await
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(60), exchange).await;
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stop_rx => {}
            }
        });
    });
    Ok((port, Results(result_rx), PageHost { stop: stop_tx, thread }))
}

/// Answers the requests of one connection (keep-alive): the page, the clock, the result.
async fn answer<S>(mut conn: S, results: &mpsc::Sender<Vec<u8>>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > 64 << 10 {
                return Ok(());
            }
            let mut chunk = [0u8; 8192];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
            .transpose()
            .ok()
            .flatten()
            .unwrap_or(0)
            .min(MAX_REQUEST);
        while buf.len() < head_end + length {
            let mut chunk = vec![0u8; 64 << 10];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let (status, kind, content) = if request_line.starts_with("GET /tlab/page") {
            ("200 OK", "text/html; charset=utf-8", PAGE.as_bytes().to_vec())
        } else if request_line.starts_with("GET /tlab/clock") {
            ("200 OK", "text/plain", tlab_core::clock::monotonic_ns().to_string().into_bytes())
        } else if request_line.starts_with("POST /tlab/result") {
            let _ = results.try_send(body);
            ("204 No Content", "text/plain", Vec::new())
        } else {
            ("404 Not Found", "text/plain", Vec::new())
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\n\r\n",
            content.len()
        )
        .into_bytes();
        response.extend_from_slice(&content);
        conn.write_all(&response).await?;
        conn.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_is_percent_encoded_like_encode_uri_component() {
        assert_eq!(percent_encode(r#"{"a":"b c"}"#), "%7B%22a%22%3A%22b%20c%22%7D");
    }
}
