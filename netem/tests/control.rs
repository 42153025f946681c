//! Changing a running TUN link (needs root, as CI runs): impairments set and blackholes added mid-run apply to the
//! packets that enter after the change, and only to those.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use tlab_netem::emulator::{EmulatedLink, SERVER_ADDR};
use tlab_netem::{Impairments, Link, LossModel, Target};

/// Sends `count` datagrams client → server and returns how many arrived (each waits up to the read timeout).
fn delivered(client: &UdpSocket, server: &UdpSocket, count: u64) -> u64 {
    let mut arrived = 0;
    for i in 0..count {
        client.send_to(&i.to_be_bytes(), (SERVER_ADDR, 6001)).unwrap();
        if server.recv(&mut [0u8; 8]).is_ok() {
            arrived += 1;
        }
    }
    arrived
}

/// Sends datagrams until the uplink has dropped one more for `reason` (the forwarder applies commands at its next
/// wake-up, not at once), then discards those that crossed before the change; panics after two seconds.
fn until_dropped(link: &EmulatedLink, client: &UdpSocket, server: &UdpSocket, reason: impl Fn(&EmulatedLink) -> u64) {
    let (before, deadline) = (reason(link), Instant::now() + Duration::from_secs(2));
    while reason(link) == before {
        assert!(Instant::now() < deadline, "the change never took effect: {:?}", link.counters());
        client.send_to(b"probe", (SERVER_ADDR, 6001)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    while server.recv(&mut [0u8; 8]).is_ok() {}
}

#[test]
fn impairments_changed_mid_run_apply_to_later_packets() {
    assert!(nix::unistd::Uid::effective().is_root(), "the TUN backend test needs root (CI runs as root)");
    let link = EmulatedLink::start(Link::new(Impairments::default(), Impairments::default(), 1)).unwrap();
    let server = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 6001))).unwrap().unwrap();
    server.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let client = link.client().run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    assert_eq!(delivered(&client, &server, 20), 20, "an unimpaired link lost datagrams: {:?}", link.counters());

    // Total loss from now on: every later datagram is dropped by the loss stage, none arrives.
    link.set_impairments(Target::Uplink, Impairments { loss: LossModel::Bernoulli { p: 1.0 }, ..Impairments::default() });
    until_dropped(&link, &client, &server, |l| l.counters().uplink.dropped_loss.packets);
    let dropped_before = link.counters().uplink.dropped_loss.packets;
    assert_eq!(delivered(&client, &server, 10), 0, "a datagram crossed a link with 100 % loss");
    assert_eq!(link.counters().uplink.dropped_loss.packets, dropped_before + 10);
    assert_eq!(link.counters().downlink.dropped_loss.packets, 0, "the downlink was not changed");

    // Back to unimpaired: later datagrams arrive again, and the loss stage drops no more.
    link.set_impairments(Target::Uplink, Impairments::default());
    let deadline = Instant::now() + Duration::from_secs(2);
    while delivered(&client, &server, 1) == 0 {
        assert!(Instant::now() < deadline, "the link never recovered: {:?}", link.counters());
    }
    let dropped_after_recovery = link.counters().uplink.dropped_loss.packets;
    assert_eq!(delivered(&client, &server, 20), 20, "{:?}", link.counters());
    assert_eq!(link.counters().uplink.dropped_loss.packets, dropped_after_recovery);

    // A blackhole drops what enters it and counts it as such.
    link.blackhole(Target::Uplink, Duration::from_secs(30));
    until_dropped(&link, &client, &server, |l| l.counters().uplink.dropped_blackhole.packets);
    let blackholed = link.counters().uplink.dropped_blackhole.packets;
    assert_eq!(delivered(&client, &server, 5), 0, "a datagram crossed a blackhole");
    let counters = link.stop().unwrap();
    assert_eq!(counters.uplink.dropped_blackhole.packets, blackholed + 5, "{counters:?}");
    assert_eq!(counters.uplink.dropped_loss.packets, dropped_after_recovery, "{counters:?}");
}
