//! Schedule events through the TUN backend (needs root): a NAT rebinding, scheduled or fired at run time, rewrites the
//! client's source address and port on the way while the client keeps its own, and its old mapping works until it
//! expires; an address change moves the client itself to its new address, keeping UDP flows of unconnected sockets
//! (what QUIC uses) and either aborting TCP connections bound to the old address or leaving them to silence.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tlab_netem::emulator::{CLIENT_ADDR, CLIENT_ALT_ADDR, EmulatedLink, SERVER_ADDR, next_nat_address};
use tlab_netem::{EventKind, Link, Profile};

/// A 1 ms link whose profile schedules `event` (with any extra keys of its entry), if given, at 0.4 s.
fn link_with_event(event: Option<&str>) -> EmulatedLink {
    assert!(nix::unistd::Uid::effective().is_root(), "the TUN backend test needs root (CI runs as root)");
    let mut text = "name = \"events\"\n[link]\ndelay_ms = 1\n".to_string();
    if let Some(event) = event {
        text += &format!("[[schedule]]\nat_s = 0.4\nevent = {event}\n");
    }
    let profile = Profile::from_str(&text, "inline event profile").unwrap();
    EmulatedLink::start(Link::from_profile(&profile, 1)).unwrap()
}

/// A UDP echo server in the server namespace that reports the source of every datagram.
fn udp_echo(link: &EmulatedLink, port: u16) -> (UdpSocket, mpsc::Receiver<SocketAddr>) {
    let socket = link.server().run(|| UdpSocket::bind((SERVER_ADDR, port))).unwrap().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let (tx, rx) = mpsc::channel();
    let echo = socket.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            echo.send_to(&buf[..n], from).unwrap();
            if tx.send(from).is_err() {
                break;
            }
        }
    });
    (socket, rx)
}

/// Sends a datagram every 10 ms for `duration`; returns (replies received before `split`, replies after it).
fn ping(client: &UdpSocket, duration: Duration, split: Duration) -> (u32, u32) {
    client.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let (mut before, mut after) = (0, 0);
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while start.elapsed() < duration {
        client.send_to(b"ping", (SERVER_ADDR, 6001)).unwrap();
        while let Ok((_, from)) = client.recv_from(&mut buf) {
            assert_eq!(from, SocketAddr::from((SERVER_ADDR, 6001)), "the reply must come from the server's address");
            if start.elapsed() < split { before += 1 } else { after += 1 }
        }
    }
    (before, after)
}

#[test]
fn nat_rebinding_changes_the_source_address_and_port_the_server_sees_and_replies_still_arrive() {
    let link = link_with_event(Some("\"nat-rebind\""));
    let (_server, sources) = udp_echo(&link, 6001);
    // Bound to the old address explicitly: replies to 10.77.0.3 reach it only if the emulator rewrites them back.
    let client = link.client().run(|| UdpSocket::bind((CLIENT_ADDR, 0))).unwrap().unwrap();
    let port = client.local_addr().unwrap().port();
    let (before, after) = ping(&client, Duration::from_millis(1000), Duration::from_millis(600));
    let seen: Vec<SocketAddr> = sources.try_iter().collect();
    assert_eq!(seen.first(), Some(&SocketAddr::from((CLIENT_ADDR, port))), "{seen:?}");
    // One switch to one new address and port, never back.
    let public = IpAddr::from(next_nat_address(None));
    let switch = seen.iter().position(|s| s.ip() == public).expect("no datagram was rebound");
    let rebound = seen[switch];
    assert_ne!(rebound.port(), port, "the NAT kept the port");
    assert!(seen[..switch].iter().all(|s| *s == SocketAddr::from((CLIENT_ADDR, port))), "{seen:?}");
    assert!(seen[switch..].iter().all(|s| *s == rebound), "{seen:?}");
    // The server answers the new mapping, and the NAT maps the replies back to the client's own port.
    assert!(before >= 20 && after >= 20, "replies before/after the rebinding: {before}/{after}");
    let counters = link.stop().unwrap();
    assert_eq!(counters.events, 1);
    assert_eq!(counters.old_address_dropped, 0, "a NAT rebinding is not an address change");
}

/// Datagrams the server sends to the client's original endpoint every 10 ms still arrive after a rebinding at
/// 0.4 s, until the old mapping expires 0.5 s later; from then on the NAT drops them.
#[test]
fn the_old_nat_mapping_reaches_the_client_until_it_expires() {
    let link = link_with_event(Some("\"nat-rebind\"\nold_mapping_s = 0.5"));
    let started = Instant::now();
    let client = link.client().run(|| UdpSocket::bind((CLIENT_ADDR, 0))).unwrap().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let old_mapping = client.local_addr().unwrap();
    let server = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 6002))).unwrap().unwrap();
    let sender = std::thread::spawn(move || {
        while started.elapsed() < Duration::from_millis(1400) {
            server.send_to(b"to the old mapping", old_mapping).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut arrivals = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        if client.recv(&mut [0u8; 64]).is_ok() {
            arrivals.push(started.elapsed());
        }
    }
    sender.join().unwrap();
    // `started` is at most a few ms after the link's own start; the windows leave 50–100 ms for that and for delay.
    let between = |from: u64, to: u64| {
        arrivals.iter().filter(|t| (Duration::from_millis(from)..Duration::from_millis(to)).contains(t)).count()
    };
    assert!(between(0, 350) >= 20, "before the rebinding: {arrivals:?}");
    assert!(between(450, 850) >= 20, "while the old mapping lives: {arrivals:?}");
    assert_eq!(between(1000, 1500), 0, "after the old mapping expired: {arrivals:?}");
    let counters = link.stop().unwrap();
    assert!(counters.nat_expired_dropped >= 20, "{counters:?}");
}

#[test]
fn a_nat_rebinding_fired_at_run_time_rewrites_only_the_packets_after_it() {
    let link = link_with_event(None);
    let (_server, sources) = udp_echo(&link, 6001);
    let client = link.client().run(|| UdpSocket::bind((CLIENT_ADDR, 0))).unwrap().unwrap();
    let port = client.local_addr().unwrap().port();
    let (replies, _) = ping(&client, Duration::from_millis(300), Duration::MAX);
    let before: Vec<SocketAddr> = sources.try_iter().collect();
    assert!(replies >= 10, "replies before the rebinding: {replies}");
    assert!(before.iter().all(|s| *s == SocketAddr::from((CLIENT_ADDR, port))), "{before:?}");
    assert_eq!(link.counters().events, 0, "an event fired that nobody asked for");

    link.fire_event(EventKind::NatRebind { old_mapping: Duration::ZERO });
    let (replies, _) = ping(&client, Duration::from_millis(300), Duration::MAX);
    let after: Vec<SocketAddr> = sources.try_iter().collect();
    assert!(replies >= 10, "replies after the rebinding: {replies}");
    // The command reaches the forwarder at its next wake-up: a few datagrams may still pass unchanged, then all
    // are rewritten and stay so.
    let public = IpAddr::from(next_nat_address(None));
    let switch = after.iter().position(|s| s.ip() == public).expect("no datagram was rebound");
    assert!(after[..switch].iter().all(|s| *s == SocketAddr::from((CLIENT_ADDR, port))), "{after:?}");
    assert_ne!(after[switch].port(), port, "the NAT kept the port");
    assert!(after[switch..].iter().all(|s| *s == after[switch]), "{after:?}");
    let counters = link.stop().unwrap();
    assert_eq!(counters.events, 1);
    assert_eq!(counters.old_address_dropped, 0, "a NAT rebinding drops nothing");
}

fn client_addresses(link: &EmulatedLink) -> String {
    String::from_utf8(link.client().exec("ip", &["-o", "-4", "addr", "show", "dev", "tlab0"]).unwrap().stdout).unwrap()
}

#[test]
fn address_change_moves_udp_flows_and_ends_tcp_connections_of_the_old_address() {
    let link = link_with_event(Some("\"address-change\""));
    let (server_udp, sources) = udp_echo(&link, 6001);
    let listener = link.server().run(|| TcpListener::bind((SERVER_ADDR, 6000))).unwrap().unwrap();
    let (peers_tx, peers) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            peers_tx.send(conn.peer_addr().unwrap()).unwrap();
            // Hold the connection open; it answers nothing.
            std::thread::spawn(move || while conn.read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {});
        }
    });
    let mut tcp = link.client().run(|| TcpStream::connect((SERVER_ADDR, 6000))).unwrap().unwrap();
    assert_eq!(peers.recv_timeout(Duration::from_secs(2)).unwrap().ip(), IpAddr::from(CLIENT_ADDR));
    // An unconnected wildcard socket, as QUIC stacks use: the kernel picks its source per datagram.
    let quic_like = link.client().run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    let port = quic_like.local_addr().unwrap().port();
    let (before, after) = ping(&quic_like, Duration::from_millis(1200), Duration::from_millis(700));

    let addresses = client_addresses(&link);
    assert!(addresses.contains(&CLIENT_ALT_ADDR.to_string()) && !addresses.contains(&format!("{CLIENT_ADDR}/")), "{addresses}");
    let seen: Vec<SocketAddr> = sources.try_iter().collect();
    assert_eq!(seen.first(), Some(&SocketAddr::from((CLIENT_ADDR, port))), "{seen:?}");
    assert_eq!(seen.last(), Some(&SocketAddr::from((CLIENT_ALT_ADDR, port))), "{seen:?}");
    assert!(before >= 20 && after >= 20, "UDP replies before/after the address change: {before}/{after}");

    // The TCP connection from the old address is gone: aborted, not merely silent.
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let err = tcp.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted, "{err}");
    // A new connection comes from the new address.
    let mut fresh = link.client().run(|| TcpStream::connect((SERVER_ADDR, 6000))).unwrap().unwrap();
    fresh.write_all(b"hello").unwrap();
    assert_eq!(peers.recv_timeout(Duration::from_secs(2)).unwrap().ip(), IpAddr::from(CLIENT_ALT_ADDR));

    // Whatever the server still sends to the old address is dropped on the path.
    server_udp.send_to(b"late", (CLIENT_ADDR, port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while link.counters().old_address_dropped == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let counters = link.stop().unwrap();
    assert_eq!(counters.events, 1);
    assert!(counters.old_address_dropped >= 1, "{counters:?}");
}

/// With `tcp = "silent"` nothing resets the client's TCP connection on an address change: its packets vanish with
/// the old address, and both ends merely stop hearing from each other.
#[test]
fn a_silent_address_change_leaves_tcp_connections_to_find_out_by_themselves() {
    let link = link_with_event(Some("\"address-change\"\ntcp = \"silent\""));
    let listener = link.server().run(|| TcpListener::bind((SERVER_ADDR, 6003))).unwrap().unwrap();
    let mut tcp = link.client().run(|| TcpStream::connect((SERVER_ADDR, 6003))).unwrap().unwrap();
    let (mut accepted, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), IpAddr::from(CLIENT_ADDR));
    tcp.write_all(b"before").unwrap();
    let mut buf = [0u8; 16];
    accepted.read_exact(&mut buf[..6]).unwrap();

    let deadline = Instant::now() + Duration::from_secs(3);
    while client_addresses(&link).contains(&format!("{CLIENT_ADDR}/")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!client_addresses(&link).contains(&format!("{CLIENT_ADDR}/")), "the address change did not happen");
    // Both ends may still write (into their buffers); nothing of it arrives, and neither end is reset or closed.
    tcp.write_all(b"after").unwrap();
    accepted.write_all(b"to the old address").unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    accepted.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let client_read = tcp.read(&mut buf).unwrap_err();
    assert!(matches!(client_read.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "client: {client_read}");
    let server_read = accepted.read(&mut buf).unwrap_err();
    assert!(matches!(server_read.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "server: {server_read}");
    let counters = link.stop().unwrap();
    assert_eq!(counters.events, 1);
    assert!(counters.old_address_dropped >= 1, "the server's segments to the old address should vanish: {counters:?}");
}
