//! Targeted drops through the TUN backend (needs root): a rule armed at run time drops exactly the one datagram of
//! the marker size sent after its start, and the drop log puts it on the monotonic clock between the send times of
//! its neighbours.

use std::net::UdpSocket;
use std::time::Duration;

use tlab_netem::emulator::{EmulatedLink, SERVER_ADDR};
use tlab_netem::{Direction, DropRule, Impairments, Link};

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[test]
fn an_armed_rule_drops_exactly_the_marker_datagram_once_and_logs_it_on_the_monotonic_clock() {
    assert!(nix::unistd::Uid::effective().is_root(), "the TUN backend test needs root (CI runs as root)");
    let delay = Impairments { delay: Duration::from_millis(2), ..Impairments::default() };
    let link = EmulatedLink::start(Link::new(delay.clone(), delay, 1)).unwrap();
    let server = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 6101))).unwrap().unwrap();
    server.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let client = link.client().run(|| UdpSocket::bind(("0.0.0.0", 0))).unwrap().unwrap();
    // Marker datagrams: 500 payload bytes = 528 IP bytes; others 100 (128 IP bytes).
    let armed_from = link.link_time(monotonic_ns()) + Duration::from_millis(50);
    let rule = link.arm_drop(DropRule::once(Direction::Uplink, 520..=540, armed_from));
    let mut sent_ns = Vec::new();
    for i in 0..40u8 {
        let len = if i % 10 == 5 { 500 } else { 100 };
        sent_ns.push((monotonic_ns(), len));
        client.send_to(&vec![i; len], (SERVER_ADDR, 6101)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    while server.recv(&mut buf).is_ok() {
        received.push(buf[0]);
    }
    // Index 5 (sent at ~25 ms) is before the rule's start; index 15 is the first marker after it.
    let lost: Vec<u8> = (0..40).filter(|i| !received.contains(i)).collect();
    assert_eq!(lost, [15], "received {received:?}");
    let log = link.drop_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].drop.rule, log[0].drop.len, log[0].drop.retransmission), (rule, 528, false));
    assert!(sent_ns[15].0 <= log[0].at_ns && log[0].at_ns < sent_ns[16].0, "drop at {} ns, sent {:?}", log[0].at_ns, &sent_ns[15..17]);
    let status = link.drop_rules();
    assert_eq!((status[0].matched, status[0].dropped), (3, 1), "markers 15, 25, 35 match; one is dropped");
    assert_eq!(link.stop().unwrap().uplink.dropped_targeted.packets, 1);
}
