//! The kernel backend (needs root). This kernel may lack sch_netem: then asking for it must fail clearly and `auto`
//! must fall back to the TUN emulator. A pure rate needs only tbf, so the veth link itself is tested everywhere.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use tlab_netem::emulator::SERVER_ADDR;
use tlab_netem::kernel::netem_available;
use tlab_netem::{Backend, IoError, KernelLink, Profile, RunningLink};

fn root() {
    assert!(nix::unistd::Uid::effective().is_root(), "the kernel backend test needs root (CI runs as root)");
}

#[test]
fn kernel_without_netem_is_a_clear_error_and_auto_falls_back_to_tun() {
    root();
    let available = netem_available().unwrap();
    let lossy = Profile::builtin("lossy-2").unwrap();
    let auto = RunningLink::start(&lossy, 1, Backend::Auto).unwrap();
    assert_eq!(auto.backend(), if available { Backend::Kernel } else { Backend::Tun });
    auto.stop().unwrap();
    match RunningLink::start(&lossy, 1, Backend::Kernel) {
        Ok(link) => assert!(available && link.backend() == Backend::Kernel),
        Err(e) => {
            assert!(!available && matches!(e, IoError::NetemUnavailable), "{e}");
            assert!(e.to_string().contains("--backend tun"), "{e}");
        }
    }
    // Whatever the kernel: a trace is never expressible, and auto then takes the TUN emulator.
    let lte = Profile::builtin("lte").unwrap();
    let err = RunningLink::start(&lte, 1, Backend::Kernel).err().unwrap();
    assert!(matches!(err, IoError::NotExpressible(_)) && err.to_string().contains("--backend tun"), "{err}");
    assert_eq!(RunningLink::start(&lte, 1, Backend::Auto).unwrap().backend(), Backend::Tun);
}

#[test]
fn a_rate_limited_veth_link_carries_tcp_intact_and_counts_it() {
    root();
    let profile = Profile::from_str("name = \"rate\"\n[uplink]\nrate_mbit = 20\nqueue_bytes = 100000\n", "inline").unwrap();
    let link = KernelLink::start(&profile).unwrap();
    let listener = link.server().run(|| TcpListener::bind((SERVER_ADDR, 6100))).unwrap().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        conn.read_to_end(&mut received).unwrap();
        received
    });
    // 1 MiB: about 0.4 s at 20 Mbit/s. How close the kernel comes to the rate is measured by `tlab netem bench`.
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
    let mut stream = link.client().run(|| TcpStream::connect((SERVER_ADDR, 6100))).unwrap().unwrap();
    stream.write_all(&data).unwrap();
    drop(stream);
    let received = sink.join().unwrap();
    assert!(received == data, "{} of {} bytes arrived, or they differ", received.len(), data.len());
    let bytes = data.len() as u64;
    let counters = link.stop().unwrap();
    // Every segment is one wire packet (no GSO): at least bytes/1448 data packets crossed the uplink.
    assert!(counters.uplink.output.packets >= bytes / 1448, "{counters:?}");
    assert!(counters.uplink.output.bytes >= bytes, "{counters:?}");
    assert!(counters.downlink.output.packets > 0, "ACKs must flow back: {counters:?}");
}
