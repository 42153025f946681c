//! `tlab serve` and `tlab client` as two processes, for every transport in the registry: the client's JSON report must
//! show every message delivered exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts `tlab serve` on a free port with token `cli-token`; returns the child and its announcement line.
fn serve(transport: &str) -> (Child, serde_json::Value) {
    serve_on(transport, 0)
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
fn every_transport_finishes_an_exchange_through_the_cli() {
    for (transport, capabilities) in tlab_transports::catalogue() {
        // A one-way mode (gRPC-Web: server streaming only) runs its one direction, a source.
        let pattern = if capabilities.bidirectional { "echo" } else { "source" };
        let report = serve_and_exchange(transport, pattern, &["--quiet-ms", "500"]);
        if capabilities.reliable {
            assert_eq!(report["delivered"], 2000, "{transport}: {report}");
            assert_eq!(report["lost"], 0, "{transport}: {report}");
            assert_eq!(report["duplicated"], 0, "{transport}: {report}");
            assert_eq!(report["out_of_order"], 0, "{transport}: {report}");
            assert_eq!(report["delivery_ratio"], 1.0, "{transport}: {report}");
        } else {
            // Datagrams end by the quiet timeout; on loopback nearly all arrive, and the ratio is reported.
            let ratio = report["delivery_ratio"].as_f64().expect("delivery_ratio");
            assert!(ratio > 0.5 && ratio <= 1.0, "{transport}: {report}");
            assert_eq!(report["duplicated"], 0, "{transport}: {report}");
        }
        assert!(report["latency"]["p50_us"].as_u64().expect("p50") > 0, "{transport}: {report}");
        assert!(report["elapsed_s"].as_f64().expect("elapsed") > 0.0, "{transport}: {report}");
    }
}

#[test]
fn every_reliable_transport_completes_a_resilient_echo_through_the_cli() {
    for (transport, capabilities) in tlab_transports::catalogue() {
        if !(capabilities.reliable && capabilities.bidirectional) {
            continue;
        }
        let report = serve_and_exchange(transport, "echo", &["--resilient"]);
        assert_eq!(report["delivered"], 2000, "{transport}: {report}");
        assert_eq!(report["duplicated"], 0, "{transport}: {report}");
        assert_eq!(report["out_of_order"], 0, "{transport}: {report}");
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

/// Starts `tlab serve` on `port` (0 = any free one) with token `cli-token`.
fn serve_on(transport: &str, port: u16) -> (Child, serde_json::Value) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_tlab"))
        .args(["serve", "--transport", transport, "--listen", &format!("127.0.0.1:{port}"), "--token", "cli-token"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tlab serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("announcement");
    (server, serde_json::from_str(&line).expect("announcement JSON"))
}

/// A port that is free for both TCP and UDP on 127.0.0.1 right now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

#[test]
fn a_restarted_server_ends_a_resilient_client_with_session_lost() {
    for (transport, capabilities) in tlab_transports::catalogue() {
        if !(capabilities.reliable && capabilities.bidirectional) {
            continue;
        }
        let port = free_port();
        let (mut server, announced) = serve_on(transport, port);
        let mut client = Command::new(env!("CARGO_BIN_EXE_tlab"))
            .args(["client", "--transport", transport, "--token", "cli-token", "--insecure", "--resilient"])
            .args(["--connect", announced["url"].as_str().expect("url")])
            .args(["--streams", "1", "--messages", "100000000", "--size", "16"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tlab client");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        server.kill().expect("kill server");
        server.wait().expect("reap server");
        let (mut restarted, _) = serve_on(transport, port);
        // The client must give up by itself: poll for its exit within a bounded wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        let status = loop {
            if let Some(status) = client.try_wait().expect("poll client") {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let _ = restarted.kill();
        let _ = restarted.wait();
        let Some(status) = status else {
            let _ = client.kill();
            let _ = client.wait();
            panic!("{transport}: the resilient client never gave up after the server restarted");
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut client.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        assert!(!status.success(), "{transport}: client exited 0 after losing its session");
        assert!(stderr.contains("session lost"), "{transport}: stderr does not say session lost: {stderr}");
    }
}

#[test]
fn a_bulk_resilient_echo_completes_on_every_reliable_mode() {
    // 2 streams × 50,000 × 256 B = 25.6 MB each way: far more than the socket buffers hold, so a session layer
    // that stops reading while its writes are blocked deadlocks here (it did, at 100,000 × 64 B on one stream).
    for (transport, capabilities) in tlab_transports::catalogue() {
        if !(capabilities.reliable && capabilities.bidirectional) {
            continue;
        }
        let (mut server, announced) = serve(transport);
        let output = Command::new(env!("CARGO_BIN_EXE_tlab"))
            .args(["client", "--transport", transport, "--token", "cli-token", "--json", "--resilient"])
            .args(["--connect", announced["url"].as_str().expect("url")])
            .args(["--cert-sha256", announced["cert_sha256"].as_str().expect("hash")])
            .args(["--streams", "2", "--messages", "50000", "--size", "256"])
            .output()
            .expect("run tlab client");
        let _ = server.kill();
        let _ = server.wait();
        assert!(output.status.success(), "{transport}: {}", String::from_utf8_lossy(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("report JSON");
        assert_eq!(report["delivered"], 100_000, "{transport}: {report}");
        assert_eq!(report["duplicated"], 0, "{transport}: {report}");
        assert_eq!(report["out_of_order"], 0, "{transport}: {report}");
    }
}
