//! Interop: clients nobody on this project wrote (Python `websockets`, `httpx-sse`, `grpcio`, `aioquic`) talk to
//! `tlab serve`.
//! The Python peers live in a venv made by `scripts/setup.sh` (the README's test command runs it); `TLAB_PYTHON`
//! names its interpreter.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn python() -> PathBuf {
    let path = std::env::var_os("TLAB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/py/bin/python"));
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
        args.extend(["--messages", "200", "--size", "100"].map(String::from));
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
    args.extend(["--streams".into(), "4".into()]);
    let summary = run_peer("ws_client.py", &args);
    assert_eq!(summary["ok"], true, "{summary}");
}

#[test]
fn python_httpx_sse_client_against_sse() {
    let served = Served::start("sse-h1");
    let url = served.field("url");
    let base = url.split("/tlab").next().expect("base URL").to_string();
    let summary = run_peer("sse_client.py", &served.peer_args("--url", base));
    assert_eq!(summary["ok"], true, "{summary}");
}

#[test]
fn python_grpcio_client_against_grpc() {
    let served = Served::start("grpc");
    let mut args = served.peer_args("--target", served.field("listen"));
    args.extend(["--proto-dir".into(), workspace_root().join("proto").display().to_string()]);
    let summary = run_peer("grpc_client.py", &args);
    assert_eq!(summary["ok"], true, "{summary}");
}

#[test]
fn python_aioquic_raw_quic_client_against_quic() {
    let served = Served::start("quic");
    let summary = run_peer("quic_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
}

#[test]
fn python_aioquic_http3_client_against_h3() {
    let served = Served::start("h3");
    let summary = run_peer("h3_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
}

#[test]
fn python_aioquic_webtransport_client_against_wt() {
    let served = Served::start("wt-stream");
    let summary = run_peer("wt_client.py", &served.peer_args_host_port());
    assert_eq!(summary["ok"], true, "{summary}");
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
