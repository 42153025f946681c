//! Transports behind the emulated link (needs root, as CI runs): `tlab netem run` starts `tlab serve` in the server
//! namespace and `tlab client` in the client namespace, through 2 % loss each way and 40 ms RTT. Reliable transports
//! must still deliver every message exactly once, in order — and take at least one RTT per round trip.

use std::process::Command;

fn through_lossy_link(transport: &str, path: &str) -> serde_json::Value {
    let tlab = env!("CARGO_BIN_EXE_tlab");
    let output = Command::new(tlab)
        .args(["netem", "run", "--profile", "lossy-2", "--seed", "7", "--server"])
        .arg(format!("{tlab} serve --transport {transport} --listen 10.77.0.2:4433 --token t"))
        .args(["--", tlab, "client", "--transport", transport, "--token", "t", "--insecure", "--json"])
        .args(["--connect", &format!("{path}://10.77.0.2:4433/tlab/{}", if transport == "grpc" { "" } else { transport })])
        .args(["--streams", "4", "--messages", "300", "--size", "200"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tlab netem");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{transport}: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().expect("client report")).expect("report JSON")
}

#[test]
fn reliable_transports_deliver_everything_through_two_percent_loss() {
    assert!(nix_is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    for (transport, scheme) in [("ws-mux", "wss"), ("grpc", "https")] {
        let report = through_lossy_link(transport, scheme);
        assert_eq!(report["delivered"], 1200, "{transport}: {report}");
        assert_eq!(report["lost"], 0, "{transport}: {report}");
        assert_eq!(report["duplicated"], 0, "{transport}: {report}");
        assert_eq!(report["out_of_order"], 0, "{transport}: {report}");
        let p50 = report["latency"]["p50_us"].as_u64().expect("p50");
        assert!(p50 >= 40_000, "{transport}: round trip p50 {p50} µs below the 40 ms RTT");
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
