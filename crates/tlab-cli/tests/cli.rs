//! `tlab serve` and `tlab client` as two processes, for every TCP-family transport: the client's JSON report must
//! show every message delivered exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts `tlab serve` with token `cli-token`; returns the child and its announcement line.
fn serve(transport: &str) -> (Child, serde_json::Value) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["serve", "--transport", transport, "--listen", "127.0.0.1:0", "--token", "cli-token"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tlab serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("announcement");
    (server, serde_json::from_str(&line).expect("announcement JSON"))
}

fn serve_and_exchange(transport: &str, pattern: &str, extra: &[&str]) -> serde_json::Value {
    let (mut server, announced) = serve(transport);
    let output = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["client", "--transport", transport, "--token", "cli-token", "--json", "--pattern", pattern])
        .args(["--connect", announced["url"].as_str().expect("url")])
        .args(["--cert-sha256", announced["cert_sha256"].as_str().expect("hash")])
        .args(["--streams", "4", "--messages", "500", "--size", "128"])
        .args(extra)
        .output()
        .expect("run tlab client");
    let _ = server.kill();
    let _ = server.wait();
    assert!(output.status.success(), "{transport}: client failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("report JSON")
}

#[test]
fn every_tcp_transport_echoes_through_the_cli() {
    for transport in ["ws", "ws-mux", "sse-h1", "sse-h2", "grpc"] {
        let report = serve_and_exchange(transport, "echo", &[]);
        assert_eq!(report["delivered"], 2000, "{transport}: {report}");
        assert_eq!(report["lost"], 0, "{transport}: {report}");
        assert_eq!(report["duplicated"], 0, "{transport}: {report}");
        assert_eq!(report["out_of_order"], 0, "{transport}: {report}");
        assert!(report["latency"]["p50_us"].as_u64().expect("p50") > 0, "{transport}: {report}");
    }
}

#[test]
fn source_and_resilient_modes_through_the_cli() {
    let report = serve_and_exchange("grpc", "source", &[]);
    assert_eq!(report["delivered"], 2000, "{report}");
    let report = serve_and_exchange("ws-mux", "echo", &["--resilient"]);
    assert_eq!(report["delivered"], 2000, "{report}");
    assert_eq!(report["reconnects"], 0, "{report}");
}

#[test]
fn wrong_certificate_hash_is_refused() {
    let (mut server, announced) = serve("ws");
    let output = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["client", "--transport", "ws", "--token", "cli-token", "--messages", "1"])
        .args(["--connect", announced["url"].as_str().expect("url")])
        .args(["--cert-sha256", &"00".repeat(32)])
        .output()
        .expect("run tlab client");
    let _ = server.kill();
    let _ = server.wait();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match the pinned"), "{stderr}");
}
