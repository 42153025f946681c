//! End to end through the TUN backend (needs root, as CI runs): real kernel TCP and UDP between two namespaces
//! through a lossy, delayed link; what arrives must match the profile, and nothing may be left behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use tlab_netem::emulator::{SERVER_ADDR, EmulatedLink};
use tlab_netem::{Link, Profile};

fn seed() -> u64 {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_125);
    eprintln!("TLAB_SEED={seed}");
    seed
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[test]
fn tcp_and_udp_cross_a_lossy_delayed_link_and_nothing_leaks() {
    assert!(nix::unistd::Uid::effective().is_root(), "the TUN backend test needs root (CI runs as root)");
    let fds_before = open_fds();
    let profile = Profile::from_str(
        "name = \"e2e\"\n[link]\ndelay_ms = 10\nloss = { model = \"bernoulli\", p = 0.05 }\n",
        "inline e2e profile",
    )
    .unwrap();
    let link = EmulatedLink::start(Link::from_profile(&profile, seed())).unwrap();

    // UDP: 2000 datagrams client → server, each carrying its send time.
    let server_udp = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 5001))).unwrap().unwrap();
    server_udp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    // Room for every datagram even if the receiving thread is starved on a loaded machine: a drop in the socket is
    // not the link's, and would bias the loss check below.
    nix::sys::socket::setsockopt(&server_udp, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20)).unwrap();
    let client_udp = link.client().run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    let sent = 2000u64;
    let receiver = std::thread::spawn(move || {
        let mut delays = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok(n) = server_udp.recv(&mut buf) {
            assert_eq!(n, 100, "datagram size changed on the way");
            delays.push(monotonic_ns() - u64::from_be_bytes(buf[..8].try_into().unwrap()));
        }
        delays
    });
    for i in 0..sent {
        let mut datagram = [0u8; 100];
        datagram[..8].copy_from_slice(&monotonic_ns().to_be_bytes());
        client_udp.send_to(&datagram, (SERVER_ADDR, 5001)).unwrap();
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let delays = receiver.join().unwrap();
    let received = delays.len() as u64;
    // Binomial(2000, 0.95): mean 1900, sd 9.7; 99.9 % two-sided ≈ ±3.29 sd.
    assert!((1868..=1932).contains(&received), "{received} of {sent} datagrams arrived at 5 % loss");
    let min = *delays.iter().min().unwrap();
    assert!(min >= 10_000_000, "a datagram arrived after {min} ns, below the 10 ms delay");
    let counters = link.counters();
    assert_eq!(counters.uplink.dropped_queue.packets, 0, "drops the profile did not ask for");
    assert_eq!(counters.write_refused, 0, "the receiving TUN refused packets");

    // TCP: 256 KiB echoed back intact despite 5 % loss each way; the handshake takes at least one 20 ms RTT.
    let listener = link.server().run(|| TcpListener::bind((SERVER_ADDR, 5000))).unwrap().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).unwrap();
        }
    });
    let started = Instant::now();
    let mut stream = link.client().run(|| TcpStream::connect((SERVER_ADDR, 5000))).unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20), "TCP handshake faster than the RTT: {:?}", started.elapsed());
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            stream.write_all(&data).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    echo.join().unwrap();
    assert!(back == data, "TCP echo differs ({} of {} bytes back)", back.len(), data.len());

    let counters = link.stop().unwrap();
    assert!(counters.uplink.dropped_loss.packets > 0 && counters.downlink.dropped_loss.packets > 0, "{counters:?}");
    assert_eq!(counters.non_ipv4, 0, "IPv6 noise reached the emulator: {counters:?}");
    drop((client_udp, stream));
    assert_eq!(open_fds(), fds_before, "file descriptors (namespaces, TUN devices) left open");
    let host_links = String::from_utf8(std::process::Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).unwrap();
    assert!(!host_links.contains("tlab0"), "a TUN device leaked into the host namespace");
}
