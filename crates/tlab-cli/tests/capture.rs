//! `tlab run --capture` checked by an independent tool (needs root, as CI runs, and tshark, which
//! scripts/setup.sh installs): a grpc and an h3 cell through 5 % loss each way; tshark, given only the run's pcap and
//! key log, decodes HTTP/2 frames of the grpc cell and QUIC STREAM frames of the h3 cell; the packets of each
//! sender's pcap missing from the receiver's pcap are exactly the emulator's drop count; qlog traces exist for the
//! QUIC cell only.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use support::{is_root, run_suite};

const SUITE: &str = r#"
name = "capture"
seed = 3
repetitions = 1
transports = ["grpc", "h3"]
profiles = ["loss-5.toml"]
cell_timeout_s = 30
backend = "tun"

[[experiment]]
kind = "latency"
pattern = "echo"
messages = 100
size = 200
rate_hz = 100
"#;

// No delay: every packet the link keeps is written out in the same forwarder pass, so none is inside the link when
// it stops, and "missing from the receiver's pcap" means "dropped".
const PROFILE: &str = r#"
name = "loss-5"
description = "5 % random loss each way, no delay"

[link]
loss = { model = "bernoulli", p = 0.05 }
"#;

const CLIENT: [u8; 4] = [10, 77, 0, 1];
const SERVER: [u8; 4] = [10, 77, 0, 2];

#[test]
fn tshark_decodes_captured_cells_and_the_pcaps_show_exactly_the_drops() {
    assert!(is_root(), "this test drives network namespaces and needs root (CI runs as root)");
    assert!(Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success()), "tshark missing: run scripts/setup.sh");
    let (dir, out) = run_suite("capture", SUITE, &[("loss-5.toml", PROFILE)], &["--capture"]);

    let runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = runs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{runs}");
    for record in &records {
        let transport = record["transport"].as_str().unwrap();
        assert_eq!(record["status"], "ok", "{record}");
        let capture = &record["capture"];
        let file = |key: &str| out.join(capture[key].as_str().unwrap_or_else(|| panic!("{transport}: no {key} in {capture}")));
        let (client_pcap, server_pcap, keys) = (file("client_pcap"), file("server_pcap"), file("key_log"));
        assert!(client_pcap.file_name().unwrap().to_string_lossy().starts_with(&format!("latency-{transport}-loss-5-r0-")));
        assert!(std::fs::read_to_string(&keys).unwrap().contains("CLIENT_TRAFFIC_SECRET_0 "), "{transport}: key log");

        // What tshark decodes, given the key log, from the client's side of the link.
        let (filter, decode_as, field) = match transport {
            "grpc" => ("http2", "tcp.port==4433,tls", "http2.type"),
            _ => ("quic.stream.stream_id", "udp.port==4433,quic", "quic.stream.stream_id"),
        };
        let decoded = tshark(&client_pcap, &keys, decode_as, filter, field);
        let frames = decoded.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(frames >= 100, "{transport}: tshark decoded only {frames} packets matching {filter}:\n{decoded}");
        if transport == "grpc" {
            // DATA (0) and HEADERS (1) frames of the RPC streams, not just the connection preface.
            assert!(decoded.lines().any(|l| l.split(',').any(|t| t == "0")), "{transport}: no HTTP/2 DATA frame");
            assert!(decoded.lines().any(|l| l.split(',').any(|t| t == "1")), "{transport}: no HTTP/2 HEADERS frame");
        }

        // Drops: sent (sender's pcap) minus delivered (receiver's pcap), per direction, as multisets of packets.
        let client = read(&client_pcap);
        let server = read(&server_pcap);
        let missing = missing(&from(&client, CLIENT), &from(&server, CLIENT)) + missing(&from(&server, SERVER), &from(&client, SERVER));
        assert_eq!(capture["capture_dropped"], 0, "{transport}: the capture itself lost packets");
        assert_eq!(capture["link_duplicated"], 0, "{transport}");
        let dropped = capture["link_dropped"].as_u64().unwrap_or_else(|| panic!("{transport}: no link_dropped in {capture}"));
        assert!(dropped > 0, "{transport}: 5 % loss dropped nothing");
        assert_eq!(missing, dropped, "{transport}: packets missing from the receivers' pcaps vs the emulator's drop count");
        assert_eq!(capture["client_packets"].as_u64(), Some(client.len() as u64));

        let qlogs = capture["qlogs"].as_array().unwrap();
        if transport == "h3" {
            // One client connection and one server endpoint at least.
            assert!(qlogs.len() >= 2, "{transport}: {capture}");
            for qlog in qlogs {
                let text = std::fs::read_to_string(out.join(qlog.as_str().unwrap())).unwrap();
                assert!(text.contains(":packet_sent\""), "{transport}: {qlog} has no packet_sent event");
            }
        } else {
            assert!(qlogs.is_empty(), "{transport}: {capture}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tshark(pcap: &Path, keys: &Path, decode_as: &str, filter: &str, field: &str) -> String {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .arg("-o")
        .arg(format!("tls.keylog_file:{}", keys.display()))
        .args(["-d", decode_as, "-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("run tshark");
    assert!(output.status.success(), "tshark: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn read(pcap: &Path) -> Vec<Vec<u8>> {
    let records = tlab_netem::capture::read_pcap(&std::fs::read(pcap).unwrap()).unwrap();
    records.into_iter().map(|(_, packet)| packet).collect()
}

fn from(packets: &[Vec<u8>], source: [u8; 4]) -> Vec<&[u8]> {
    packets.iter().filter(|p| p.len() >= 20 && p[12..16] == source).map(Vec::as_slice).collect()
}

/// How many of `sent` are not in `delivered` (each delivered packet accounts for one sent copy).
fn missing(sent: &[&[u8]], delivered: &[&[u8]]) -> u64 {
    let mut pending: HashMap<&[u8], i64> = HashMap::new();
    for p in delivered {
        *pending.entry(p).or_default() += 1;
    }
    let mut missing = 0;
    for p in sent {
        match pending.get_mut(p) {
            Some(n) if *n > 0 => *n -= 1,
            _ => missing += 1,
        }
    }
    assert!(pending.values().all(|n| *n == 0), "a packet was delivered that no side sent");
    missing
}
