//! Interop: clients nobody on this project wrote (Python `websockets`, `httpx-sse`, `grpcio`, `aioquic`) talk to
//! `tlab serve`.
//! The Python peers live in a venv made by `scripts/setup.sh` (the README's test command runs it); `TLAB_PYTHON`
//! names its interpreter.
//!
//! A peer's `ok` is not trusted: each reports, per stream, what it received (`received`, see `interop/tally.py`:
//! count, payload bytes, CRC-32 over seq and payload in arrival order), and the test recomputes that from what it
//! asked the peer to send (`MESSAGES` messages of `SIZE` bytes per stream, the protocol's test pattern) or the server
//! to source.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// Messages per stream and payload bytes per message, passed to every peer.
const MESSAGES: u64 = 200;
const SIZE: usize = 100;
/// Streams the WebSocket peer opens per endpoint.
const WS_STREAMS: u32 = 4;

/// CRC-32 as zlib computes it (IEEE polynomial, reflected), continuing from `crc`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = !crc;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The payload every peer sends: byte i of message `seq` is (seq + i) mod 251.
fn pattern(seq: u64, size: usize) -> Vec<u8> {
    (0..size as u64).map(|i| ((seq + i) % 251) as u8).collect()
}

/// The `received` entry of a stream on which exactly the messages `seqs` arrived, in that order, each with the
/// pattern payload of `size` bytes.
fn echoed(seqs: impl IntoIterator<Item = u64>, size: usize) -> Value {
    let (mut count, mut crc) = (0u64, 0u32);
    for seq in seqs {
        crc = crc32(crc32(crc, &seq.to_be_bytes()), &pattern(seq, size));
        count += 1;
    }
    json!({"count": count, "bytes": count * size as u64, "crc32": crc})
}

/// What a peer must have received on each stream.
enum Expect {
    /// Exactly this entry (count, bytes and CRC): an echo of what the peer sent.
    Entry(Value),
    /// `count` messages of `size` bytes (a server source stream: its payload bytes are not part of the protocol).
    Sourced { count: u64, size: usize },
}

/// Checks the peer's `received` report against `expected`: the same streams, and on each what `Expect` says.
fn check_received(summary: &Value, expected: &[(String, Expect)]) {
    let received = summary["received"].as_object().unwrap_or_else(|| panic!("no `received` report in {summary}"));
    let mut labels: Vec<&str> = received.keys().map(String::as_str).collect();
    let mut wanted: Vec<&str> = expected.iter().map(|(label, _)| label.as_str()).collect();
    labels.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(labels, wanted, "streams the peer reported vs the streams it was asked to run: {summary}");
    for (label, expect) in expected {
        let entry = &received[label];
        match expect {
            Expect::Entry(want) => assert_eq!(entry, want, "{label}: received vs sent (count, bytes, crc32)"),
            Expect::Sourced { count, size } => {
                let got = (entry["count"].as_u64(), entry["bytes"].as_u64());
                assert_eq!(got, (Some(*count), Some(count * *size as u64)), "{label}: (count, bytes) from the source");
            }
        }
    }
}

/// The echo of `MESSAGES` pattern messages, in order, on `label`.
fn echo(label: &str) -> (String, Expect) {
    (label.to_string(), Expect::Entry(echoed(0..MESSAGES, SIZE)))
}

/// `MESSAGES` source messages of `SIZE` bytes on `label`.
fn sourced(label: &str) -> (String, Expect) {
    (label.to_string(), Expect::Sourced { count: MESSAGES, size: SIZE })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn python() -> PathBuf {
    // A relative TLAB_PYTHON (e.g. `target/py/bin/python`) is relative to the workspace root, not to this crate's
    // directory, where cargo runs the test.
    let path = workspace_root().join(std::env::var_os("TLAB_PYTHON").unwrap_or_else(|| "target/py/bin/python".into()));
    assert!(path.exists(), "no Python venv at {}: run `bash scripts/setup.sh` (the README's test command does)", path.display());
    path
}

/// A `tlab serve` child process, killed (by PID) when dropped.
struct Served {
    child: Child,
    announcement: serde_json::Value,
}

impl Served {
    fn start(transport: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlab"))
            .args(["serve", "--transport", transport, "--listen", "127.0.0.1:0", "--token", "interop-token"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tlab serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announcement line");
        let announcement: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("announcement `{line}`: {e}"));
        Self { child, announcement }
    }

    fn field(&self, key: &str) -> String {
        self.announcement[key].as_str().unwrap_or_else(|| panic!("announcement lacks {key}")).to_string()
    }

    /// `--token`, `--cert-sha256` and a small workload, plus `address_flag ADDRESS`.
    fn peer_args(&self, address_flag: &str, address: String) -> Vec<String> {
        self.peer_args_with(vec![address_flag.to_string(), address])
    }

    /// The same with `--host 127.0.0.1 --port PORT` (the QUIC peers).
    fn peer_args_host_port(&self) -> Vec<String> {
        let listen = self.field("listen");
        let (host, port) = listen.rsplit_once(':').expect("host:port");
        self.peer_args_with(vec!["--host".into(), host.into(), "--port".into(), port.into()])
    }

    fn peer_args_with(&self, mut args: Vec<String>) -> Vec<String> {
        args.extend(["--token".into(), self.field("token"), "--cert-sha256".into(), self.field("cert_sha256")]);
        args.extend(["--messages".into(), MESSAGES.to_string(), "--size".into(), SIZE.to_string()]);
        args
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an interop script with `args`, requires exit 0 and returns its JSON summary line.
fn run_peer(script: &str, args: &[String]) -> serde_json::Value {
    let script = workspace_root().join("crates/tlab-cli/tests/interop").join(script);
    let mut child = Command::new(python()).arg(&script).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn python");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not finish within 120 s", script.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", script.display(), output.status);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("summary `{last}`: {e}\nstderr: {stderr}"))
}

#[test]
fn python_websockets_client_against_ws() {
    let served = Served::start("ws");
    let mut args = served.peer_args("--url", served.field("url"));
    args.extend(["--streams".into(), WS_STREAMS.to_string()]);
    let summary = run_peer("ws_client.py", &args);
    assert_eq!(summary["ok"], true, "{summary}");
    let streams = (0..WS_STREAMS).flat_map(|s| [echo(&format!("ws/{s}")), echo(&format!("ws-mux/{s}"))]);
    check_received(&summary, &streams.collect::<Vec<_>>());
}

#[test]
fn python_httpx_sse_client_against_sse() {
    let served = Served::start("sse-h1");
    let url = served.field("url");
    let base = url.split("/tlab").next().expect("base URL").to_string();
    let summary = run_peer("sse_client.py", &served.peer_args("--url", base));
    assert_eq!(summary["ok"], true, "{summary}");
    check_received(&summary, &[sourced("source/0"), echo("echo/1")]);
}

#[test]
fn python_grpcio_client_against_grpc() {
    let served = Served::start("grpc");
    let mut args = served.peer_args("--target", served.field("listen"));
    args.extend(["--proto-dir".into(), workspace_root().join("proto").display().to_string()]);
    let summary = run_peer("grpc_client.py", &args);
    assert_eq!(summary["ok"], true, "{summary}");
    check_received(&summary, &[echo("echo/0"), sourced("source/1")]);
    // The Sink RPC's answer is the server's own count of what arrived.
    assert_eq!(summary["sink"], MESSAGES, "the server's count of the sink stream: {summary}");
}

#[test]
fn python_aioquic_raw_quic_client_against_quic() {
    let served = Served::start("quic");
    let summary = run_peer("quic_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
    check_received(&summary, &[echo("echo/0"), echo("echo/1")]);
}

#[test]
fn python_aioquic_http3_client_against_h3() {
    let served = Served::start("h3");
    let summary = run_peer("h3_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
    check_received(&summary, &[echo("echo/0"), sourced("source/1")]);
}

#[test]
fn python_aioquic_webtransport_client_against_wt() {
    let served = Served::start("wt-stream");
    let summary = run_peer("wt_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
    // The datagram session echoes one datagram: stream 5, seq 42, the pattern payload of min(SIZE, 1000) bytes.
    let datagram = ("datagram/5".to_string(), Expect::Entry(echoed([42], SIZE.min(1000))));
    check_received(&summary, &[echo("echo/0"), datagram]);
}

#[test]
fn list_names_every_mode() {
    let output = Command::new(env!("CARGO_BIN_EXE_tlab")).args(["list", "--json"]).output().expect("tlab list");
    assert!(output.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("json");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for name in ["ws", "ws-mux", "sse-h1", "sse-h2", "grpc", "quic", "h3", "wt-stream", "wt-datagram"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(rows.iter().all(|r| r["capabilities"]["reliable"].is_boolean()));
}
