//! What a reader needs to trust and rebuild a figure: how well the link kept its schedule during each run
//! ([`LinkHealth`], in every `runs.jsonl` line), the binary that ran ([`BuildInfo`], compiled in) and the host and
//! link settings it ran on ([`HostInfo`]), both in `manifest.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The p99 release lateness a link may show before its run is marked unhealthy, µs (a suite's `link_tolerance_us`).
pub const DEFAULT_LINK_TOLERANCE_US: u64 = 1_000;

/// The link's own accuracy during one run. A run whose link released packets later than the suite's tolerance at
/// p99 is `link_ok: false`: the report flags it and leaves it out of the summaries unless asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkHealth {
    /// The emulator backend that carried the run: `tun` or `kernel`.
    pub backend: String,
    /// Packets the TUN forwarder released (absent for the kernel backend, which does not report lateness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
    /// Median release lateness (write time − due time), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_p50_us: Option<f64>,
    /// 99th percentile of release lateness, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_p99_us: Option<f64>,
    /// Largest release lateness, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness_max_us: Option<f64>,
    /// Packets released at least `tolerance_us` late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_packets: Option<u64>,
    /// The suite's tolerance for p99 lateness, µs.
    pub tolerance_us: u64,
    /// Whether the forwarding thread ran with real-time priority (absent without a forwarding thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<bool>,
    /// Share of the host's CPU time stolen by the hypervisor during the run (`/proc/stat` before and after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<f64>,
    /// p99 lateness within `tolerance_us` (true when the backend does not measure lateness).
    pub link_ok: bool,
}

/// The release lateness a forwarder measured over a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatenessSummary {
    /// Packets released.
    pub released: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Packets released at least the tolerance late.
    pub late_packets: u64,
}

impl LinkHealth {
    /// The health of a run on `backend`, judged against `tolerance_us` at p99.
    pub fn judge(backend: String, lateness: Option<LatenessSummary>, tolerance_us: u64, realtime: Option<bool>, steal: Option<f64>) -> Self {
        Self {
            backend,
            released: lateness.map(|l| l.released),
            lateness_p50_us: lateness.map(|l| l.p50_us),
            lateness_p99_us: lateness.map(|l| l.p99_us),
            lateness_max_us: lateness.map(|l| l.max_us),
            late_packets: lateness.map(|l| l.late_packets),
            tolerance_us,
            realtime,
            steal,
            link_ok: lateness.is_none_or(|l| l.p99_us <= tolerance_us as f64),
        }
    }
}

/// The binary that ran, as it was built (`tlab --version --verbose` prints the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// tlab's version.
    pub version: String,
    /// Git commit the binary was built from (`None` when built outside a checkout).
    pub git_commit: Option<String>,
    /// Whether that checkout had uncommitted changes when the binary was built.
    pub git_dirty: Option<bool>,
    /// `rustc --version` of the compiler.
    pub rustc: String,
    /// Target triple.
    pub target: String,
    /// Cargo build profile (`debug` or `release`).
    pub profile: String,
    /// Versions of the protocol and TLS libraries (quinn, h3, wtransport, tonic, tokio-tungstenite, rustls), from
    /// Cargo.lock.
    pub libraries: BTreeMap<String, String>,
}

/// The host and link settings a suite ran on, beyond the manifest's kernel, CPU model and cores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// CPU frequency governor of cpu0 (absent where the kernel exposes none, e.g. in many VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_governor: Option<String>,
    /// Share of the host's CPU time stolen by the hypervisor while the suite ran (updated after each cell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<f64>,
    /// The sysctls that shape kernel TCP, read inside the client namespace of the first cell.
    #[serde(default)]
    pub tcp_sysctls: BTreeMap<String, String>,
    /// The link device of the first cell per namespace (`client`, `server`): `ip -details link` (flags, MTU, queue
    /// length, TUN flags) and `tc qdisc show`.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceRecord>,
}

/// One link device as the kernel described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `ip -details -oneline link show dev DEV`.
    pub link: String,
    /// `tc qdisc show dev DEV`.
    pub qdisc: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_late_beyond_its_tolerance_at_p99_is_not_ok() {
        let lateness = |p99_us| LatenessSummary { released: 1000, p50_us: 20.0, p99_us, max_us: 300_000.0, late_packets: 12 };
        let ok = LinkHealth::judge("tun".into(), Some(lateness(1000.0)), 1000, Some(true), Some(0.01));
        assert!(ok.link_ok, "a max beyond the tolerance alone does not fail the link");
        let late = LinkHealth::judge("tun".into(), Some(lateness(1000.5)), 1000, Some(true), None);
        assert!(!late.link_ok);
        let kernel = LinkHealth::judge("kernel".into(), None, 1000, None, Some(0.0));
        assert!(kernel.link_ok && kernel.lateness_p99_us.is_none());
        let json = serde_json::to_string(&kernel).unwrap();
        assert_eq!(json, r#"{"backend":"kernel","tolerance_us":1000,"steal":0.0,"link_ok":true}"#);
        assert_eq!(serde_json::from_str::<LinkHealth>(&json).unwrap(), kernel);
    }
}
