//! Changing a running TUN link (needs root, as CI runs): impairments set mid-run apply to the next packets.

use std::net::UdpSocket;
use std::time::Duration;

use tlab_netem::emulator::{EmulatedLink, SERVER_ADDR};
use tlab_netem::{Impairments, Link, Target};

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Sends `count` probes and returns the smallest one-way delay seen, ns.
fn min_delay(client: &UdpSocket, server: &UdpSocket, count: usize) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..count {
        client.send_to(&monotonic_ns().to_be_bytes(), (SERVER_ADDR, 6001)).unwrap();
        let mut buf = [0u8; 8];
        let n = server.recv(&mut buf).expect("probe arrives on a lossless link");
        assert_eq!(n, 8);
        best = best.min(monotonic_ns() - u64::from_be_bytes(buf));
    }
    best
}

#[test]
fn impairments_changed_mid_run_apply_to_later_packets() {
    let link = EmulatedLink::start(Link::new(Impairments::default(), Impairments::default(), 1)).unwrap();
    let server = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 6001))).unwrap().unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let client = link.client().run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    let before = min_delay(&client, &server, 20);
    assert!(before < 5_000_000, "unimpaired one-way delay {before} ns");

    link.set_impairments(Target::Uplink, Impairments { delay: Duration::from_millis(30), ..Impairments::default() });
    std::thread::sleep(Duration::from_millis(50)); // the forwarder applies commands at its next wake-up
    let after = min_delay(&client, &server, 20);
    assert!(after >= 30_000_000, "after the change: {after} ns, below the new 30 ms delay");

    link.blackhole(Target::Uplink, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(50));
    client.send_to(&monotonic_ns().to_be_bytes(), (SERVER_ADDR, 6001)).unwrap();
    let mut buf = [0u8; 8];
    assert!(server.recv(&mut buf).is_err(), "a datagram crossed a blackhole");
    assert_eq!(link.stop().unwrap().uplink.dropped_blackhole.packets, 1);
}
