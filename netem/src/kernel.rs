//! The kernel backend: the same two namespaces joined by a veth pair, each end's egress shaped by `tc` (netem + tbf)
//! as [`crate::tc::tc_commands`] maps the profile. The kernel forwards, so it costs no emulator thread, but it
//! needs sch_netem (for anything beyond a pure rate) and cannot run delivery traces or schedules.

use std::sync::Arc;

use crate::emulator::{DEVICE, LinkCounters, configure_addresses, prepare_namespaces};
use crate::io_error::IoError;
use crate::namespace::NetNs;
use crate::tc::{TcError, tc_commands};
use crate::{Counters, Direction, Profile, Tally};

/// What `tc` prints when the kernel has no such qdisc.
const UNKNOWN_QDISC: &str = "Specified qdisc kind is unknown";
/// Ethernet header bytes the veth counters include and the TUN counters (IP packets) do not.
const ETHERNET_HEADER: u64 = 14;

/// Whether this kernel has sch_netem: adds a netem qdisc to `lo` of a throwaway namespace.
pub fn netem_available() -> Result<bool, IoError> {
    // The kernel's qdiscs do not change while we run: probe once per process (a suite asks once per cell).
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(available) = AVAILABLE.get() {
        return Ok(*available);
    }
    let available = probe_netem()?;
    Ok(*AVAILABLE.get_or_init(|| available))
}

fn probe_netem() -> Result<bool, IoError> {
    let probe = NetNs::new("probe")?;
    let output = probe.exec("tc", &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.success() {
        true => Ok(true),
        false if stderr.contains(UNKNOWN_QDISC) => Ok(false),
        false => Err(IoError::Command {
            command: "tc qdisc add dev lo root netem delay 0ms".into(),
            namespace: "probe",
            stderr: stderr.trim().to_string(),
        }),
    }
}

/// A running kernel-shaped link. Dropping it (or [`KernelLink::stop`]) releases the namespaces, and the veth pair
/// and its qdiscs vanish with them.
pub struct KernelLink {
    client: Arc<NetNs>,
    server: Arc<NetNs>,
    congestion_control: &'static str,
}

impl KernelLink {
    /// Creates the namespaces and the veth pair and shapes each end's egress: the client's end carries the uplink,
    /// the server's the downlink. Fails with [`IoError::NotExpressible`] for traces or a schedule and with
    /// [`IoError::NetemUnavailable`] when the kernel lacks netem.
    pub fn start(profile: &Profile) -> Result<Self, IoError> {
        if !profile.schedule.is_empty() {
            return Err(TcError::Schedule.into());
        }
        let uplink = tc_commands(DEVICE, Direction::Uplink, &profile.uplink)?;
        let downlink = tc_commands(DEVICE, Direction::Downlink, &profile.downlink)?;
        let (client, server, congestion_control) = prepare_namespaces()?;
        client.ip(&["link", "add", "name", DEVICE, "type", "veth", "peer", "name", DEVICE, "netns", &server.path()])?;
        for ns in [&client, &server] {
            // One wire packet per skb: with segmentation offload netem would lose or delay 64 KB at a time.
            ns.ip(&["link", "set", DEVICE, "gso_max_segs", "1"])?;
        }
        configure_addresses(&client, &server)?;
        for (ns, commands) in [(&client, uplink), (&server, downlink)] {
            for args in commands {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ns.tc(&args).map_err(|e| match e {
                    IoError::Command { ref stderr, .. } if stderr.contains(UNKNOWN_QDISC) => IoError::NetemUnavailable,
                    e => e,
                })?;
            }
        }
        Ok(Self { client, server, congestion_control })
    }

    /// The TCP congestion control running in both namespaces.
    pub fn congestion_control(&self) -> &'static str {
        self.congestion_control
    }

    /// The client's namespace.
    pub fn client(&self) -> &Arc<NetNs> {
        &self.client
    }

    /// The server's namespace.
    pub fn server(&self) -> &Arc<NetNs> {
        &self.server
    }

    /// Counters from the kernel: what each end sent is a direction's input, what the other end received its output
    /// (IP bytes, like the TUN backend; ARP included). The kernel does not say why the difference was lost, so the
    /// drop counters stay zero.
    pub fn counters(&self) -> Result<LinkCounters, IoError> {
        let client = self.client.device_stats(DEVICE)?;
        let server = self.server.device_stats(DEVICE)?;
        let ip = |t: Tally| Tally { packets: t.packets, bytes: t.bytes.saturating_sub(t.packets * ETHERNET_HEADER) };
        let direction = |sent: Tally, received: Tally| Counters { input: ip(sent), output: ip(received), ..Counters::default() };
        Ok(LinkCounters {
            uplink: direction(client.tx, server.rx),
            downlink: direction(server.tx, client.rx),
            ..LinkCounters::default()
        })
    }

    /// Reads the final counters and releases the namespaces.
    pub fn stop(self) -> Result<LinkCounters, IoError> {
        self.counters()
    }
}
