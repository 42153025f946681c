//! Headless Chromium as the client, inside the client namespace of an emulated lossy link (1 % loss each way,
//! 40 ms RTT): echo on ws, on 3 streams of ws-mux and on wt-stream, a source on sse-h1 (HTTP/2 disabled), sse-h2 and
//! gRPC-Web, datagram echo and a datagram source on wt-datagram, through the browser's own WebSocket, WebTransport, EventSource and
//! fetch. Reliable modes must deliver every message exactly once, in order and intact; datagrams must arrive intact,
//! most of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tlab_core::tls::Identity;
use tlab_core::{Limits, ServerConfig};
use tlab_experiments::browser::{self, BrowserJob, BrowserOutcome};
use tlab_netem::emulator::SERVER_ADDR;
use tlab_netem::{Backend, RunningLink};
use tlab_service::EchoService;

const TOKEN: &str = "tlab-browser";

/// Serves `mode` in the link's server namespace, runs `job` in Chromium in its client namespace.
fn browser_run(link: &RunningLink, identity: &Arc<Identity>, mode: &str, workload: &str, count: u64, streams: u32) -> BrowserOutcome {
    let transport = tlab_transports::by_name(mode).expect("known mode");
    let config = ServerConfig {
        listen: SocketAddr::from((SERVER_ADDR, 4433)),
        identity: identity.clone(),
        token: TOKEN.into(),
        limits: Limits::default(),
        service: Arc::new(EchoService::default()),
        congestion: tlab_core::config::CongestionControl::default(),
        deadlines: tlab_core::Deadlines::default(),
        max_connections_per_ip: None,
        allow_origin: Default::default(),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_ns = link.server().clone();
    let server = std::thread::spawn(move || {
        server_ns.enter().expect("enter the server namespace");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let server = transport.serve(config).await.expect("server starts");
            ready_tx.send(()).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("server ready");
    let job = BrowserJob {
        mode: mode.into(),
        base: format!("https://{SERVER_ADDR}:4433"),
        token: TOKEN.into(),
        cert_sha256: identity.sha256_hex(),
        workload: workload.into(),
        count,
        size: 100,
        interval_us: if mode == "wt-datagram" { 2000 } else { 0 },
        streams,
        deadline_ms: 55_000,
        session: None,
    };
    let outcome = browser::run(link.client(), identity, &job, Duration::from_secs(60));
    let _ = stop_tx.send(());
    server.join().unwrap();
    let outcome = outcome.unwrap_or_else(|e| panic!("{mode} {workload}: {e}"));
    eprintln!(
        "{mode} {workload}: received {} of {count}, {} latency p50 {:.1} µs, clock rtt {:.0} µs, error {:?}",
        outcome.received,
        outcome.latency,
        median(&outcome.latencies_us()),
        outcome.clock_rtt_us,
        outcome.error
    );
    outcome
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `count` messages on each of `streams` streams, exactly once, in order, intact, no faster than the link allows.
fn assert_exact(mode: &str, outcome: &BrowserOutcome, count: u64, streams: u32) {
    let seen: std::collections::BTreeSet<u32> = outcome.messages.iter().map(|m| m.0).collect();
    assert_eq!(outcome.error, None, "{mode}: the page failed");
    assert_eq!(outcome.received, count * u64::from(streams), "{mode}: messages lost");
    assert_eq!((outcome.duplicates, outcome.corrupt), (0, 0), "{mode}: duplicated or corrupted");
    assert!(outcome.in_order, "{mode}: out of order");
    // 40 ms RTT on the link: a one-way figure is at least 20 ms, a round trip at least 40 ms (less the clock's error).
    let floor_us = if outcome.latency == "round-trip" { 39_000.0 } else { 19_000.0 };
    assert_eq!(seen, (0..streams).collect(), "{mode}: every stream delivered");
    assert!(median(&outcome.latencies_us()) >= floor_us, "{mode}: latency below the link's delay: clock mapping wrong");
}

#[test]
fn chromium_in_the_client_namespace_through_a_lossy_link() {
    assert!(std::path::Path::new(browser::CHROMIUM).exists(), "{} missing: run scripts/setup.sh", browser::CHROMIUM);
    let profile = tlab_netem::Profile::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../netem/profiles/lossy-1.toml"))
        .expect("profile");
    let link = RunningLink::start(&profile, 7, Backend::Tun).expect("link");
    let identity = Arc::new(Identity::self_signed(&["localhost", &SERVER_ADDR.to_string()]).expect("identity"));
    let mut failures = Vec::new();
    let runs = [("ws", "echo", 1), ("ws-mux", "echo", 3), ("wt-stream", "echo", 1), ("sse-h1", "source", 1), ("sse-h2", "source", 1), ("grpc-web", "source", 1)];
    for (mode, workload, streams) in runs {
        let outcome = browser_run(&link, &identity, mode, workload, 300, streams);
        if let Err(e) = std::panic::catch_unwind(|| assert_exact(mode, &outcome, 300, streams)) {
            failures.push(format!("{mode}: {:?}", e.downcast_ref::<String>()));
        }
    }
    let datagrams = browser_run(&link, &identity, "wt-datagram", "echo", 300, 1);
    assert_eq!(datagrams.error, None, "wt-datagram: the page failed");
    assert_eq!((datagrams.duplicates, datagrams.corrupt), (0, 0), "wt-datagram: duplicated or corrupted");
    assert!(datagrams.received >= 270, "wt-datagram: {} of 300 echoed at 1 % loss each way", datagrams.received);
    // A datagram source: the server sends on its schedule after the page's open datagram; one-way, 1 % loss once.
    let source = browser_run(&link, &identity, "wt-datagram", "source", 300, 1);
    assert_eq!(source.error, None, "wt-datagram source: the page failed");
    assert_eq!(source.duplicates, 0, "wt-datagram source: duplicated");
    assert!(source.received >= 280, "wt-datagram source: {} of 300 at 1 % loss", source.received);
    assert!(median(&source.latencies_us()) >= 19_000.0, "wt-datagram source: one-way latency below the link's delay");
    let _ = link.stop();
    assert!(failures.is_empty(), "{failures:#?}");
}
