//! Like-for-like stacks: the suite's congestion control on kernel TCP in both namespaces (quinn gets the same one
//! through `ServerConfig` / `ClientConfig::congestion`), and what each side ran, read back for the run record.
//!
//! A namespace may only pick an algorithm the initial namespace's `net.ipv4.tcp_allowed_congestion_control` lists.
//! [`AllowedGuard`] adds the suite's algorithm there for as long as a suite runs and restores the host's list when
//! it is dropped (also on a panic's unwinding); [`restore_host_settings`] does the same from a path that exits
//! without unwinding (the third signal). Where the algorithm still cannot be set, the cell fails with an error
//! naming it ([`apply_tcp`]) instead of running another one.

use std::sync::Mutex;

use tlab_core::config::CongestionControl;
use tlab_netem::namespace::NetNs;
use tlab_results::{Http2Windows, QuicStack, SideStack, TcpStack};

/// The host's list of algorithms unprivileged namespaces may choose.
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
/// The sysctl a namespace's TCP runs by.
const CONGESTION_CONTROL: &str = "net.ipv4.tcp_congestion_control";
/// The device of the link in each namespace.
const DEVICE: &str = "tlab0";

/// Linux's name of `algorithm` (NewReno is `reno` there).
pub fn kernel_name(algorithm: CongestionControl) -> &'static str {
    match algorithm {
        CongestionControl::Cubic => "cubic",
        CongestionControl::NewReno => "reno",
        CongestionControl::Bbr => "bbr",
    }
}

/// What this process changed in the host: the list it found, and how many guards rely on the change.
struct HostChange {
    original: Option<String>,
    holders: usize,
}

static HOST: Mutex<HostChange> = Mutex::new(HostChange { original: None, holders: 0 });

fn host() -> std::sync::MutexGuard<'static, HostChange> {
    HOST.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps an algorithm allowed in namespaces while it lives; the last guard of the process restores the host.
pub struct AllowedGuard(&'static str);

impl AllowedGuard {
    /// Allows `algorithm` in namespaces (best effort: without the privilege nothing changes, and [`apply_tcp`]
    /// then fails the cell with the reason).
    pub fn new(algorithm: CongestionControl) -> Self {
        host().holders += 1;
        let guard = Self(kernel_name(algorithm));
        guard.ensure();
        guard
    }

    /// Adds the algorithm to the host's list if it is missing (another process may have restored the list since),
    /// remembering the list as found the first time this process changes it.
    pub fn ensure(&self) {
        let Ok(list) = std::fs::read_to_string(ALLOWED) else { return };
        let list = list.trim().to_string();
        if list.split_whitespace().any(|name| name == self.0) {
            return;
        }
        match std::fs::write(ALLOWED, format!("{list} {}", self.0)) {
            Ok(()) => {
                let mut host = host();
                host.original.get_or_insert(list);
            }
            Err(e) => tracing::warn!(algorithm = self.0, error = %e, "cannot allow the congestion control in namespaces"),
        }
    }
}

impl Drop for AllowedGuard {
    fn drop(&mut self) {
        let last = {
            let mut host = host();
            host.holders -= 1;
            host.holders == 0
        };
        if last {
            restore_host_settings();
        }
    }
}

/// Writes back the host's `tcp_allowed_congestion_control` if this process changed it. Idempotent; for exits that
/// skip destructors.
pub fn restore_host_settings() {
    if let Some(original) = host().original.take()
        && let Err(e) = std::fs::write(ALLOWED, &original)
    {
        eprintln!("could not restore {ALLOWED} to {original:?}: {e}");
    }
}

/// Sets `kernel_name` as TCP's congestion control in `ns` and reads it back; the error names the namespace, the
/// algorithm and why (not available in this kernel, or not allowed in namespaces).
pub fn apply_tcp(ns: &NetNs, side: &str, kernel_name: &str) -> Result<TcpStack, String> {
    let cannot = |why: String| format!("TCP congestion control {kernel_name} cannot be set in the {side} namespace: {why}");
    if let Err(e) = ns.sysctl(CONGESTION_CONTROL, kernel_name) {
        let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
        let allowed = std::fs::read_to_string(ALLOWED).unwrap_or_default();
        return Err(cannot(format!(
            "{e} (available in this kernel: {}; allowed in namespaces: {})",
            available.trim(),
            allowed.trim()
        )));
    }
    let running = ns.sysctl_value(CONGESTION_CONTROL).map_err(|e| cannot(e.to_string()))?;
    if running != kernel_name {
        return Err(cannot(format!("the namespace runs {running} instead")));
    }
    Ok(TcpStack { pacing: tcp_pacing(ns, &running), initial_window: initial_window(ns), congestion_control: running })
}

/// Linux TCP paces under the fq qdisc, and BBR paces by itself (internal pacing) without it.
fn tcp_pacing(ns: &NetNs, algorithm: &str) -> String {
    let qdisc = ns
        .exec("tc", &["qdisc", "show", "dev", DEVICE])
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    match (qdisc.as_str(), algorithm) {
        ("fq", _) => format!("yes: qdisc fq on {DEVICE}"),
        (_, "bbr") => format!("yes: BBR's internal pacing (qdisc {qdisc} on {DEVICE})"),
        _ => format!("no: qdisc {qdisc} on {DEVICE}; Linux TCP paces only under fq, or with BBR's internal pacing"),
    }
}

/// The route's `initcwnd`, or Linux's default of 10 segments (RFC 6928).
fn initial_window(ns: &NetNs) -> String {
    let routes = ns.exec("ip", &["route", "show"]).map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let words: Vec<&str> = routes.split_whitespace().collect();
    match words.iter().position(|w| *w == "initcwnd").and_then(|i| words.get(i + 1)) {
        Some(segments) => format!("{segments} segments (initcwnd on the route)"),
        None => "10 segments (Linux default, no initcwnd on the route)".into(),
    }
}

/// quinn's stack at one end with `algorithm`.
pub fn quic(algorithm: CongestionControl) -> QuicStack {
    let p = tlab_quic_common::parameters(algorithm);
    QuicStack {
        congestion_control: algorithm.name().to_string(),
        pacing: "yes: quinn paces every connection".into(),
        initial_window_bytes: p.initial_window,
        stream_receive_window_bytes: p.stream_receive_window,
        receive_window_bytes: p.receive_window,
        send_window_bytes: p.send_window,
    }
}

/// One side: its namespace's TCP as read back, quinn with `algorithm`, and hyper's HTTP/2 defaults for that role
/// (hyper 1.x: client 2 MiB per stream / 5 MiB per connection, server 1 MiB / 1 MiB, not adaptive; tonic and
/// reqwest set neither, and the servers keep hyper's).
pub fn side(tcp: TcpStack, algorithm: CongestionControl, client: bool) -> SideStack {
    let (stream, connection) = if client { (2 << 20, 5 << 20) } else { (1 << 20, 1 << 20) };
    SideStack {
        tcp,
        quic: quic(algorithm),
        http2: Http2Windows { stream_window_bytes: stream, connection_window_bytes: connection, adaptive: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These tests change namespaces and the host's allowed list: they need root, as CI has.
    fn assert_root() {
        assert!(nix::unistd::Uid::effective().is_root(), "needs root (network namespaces, host sysctls); CI runs as root");
    }

    #[test]
    fn an_algorithm_the_kernel_lacks_fails_with_a_clear_error() {
        assert_root();
        let ns = NetNs::new("client").unwrap();
        let err = apply_tcp(&ns, "client", "tlab-no-such-cc").unwrap_err();
        assert!(err.contains("tlab-no-such-cc") && err.contains("client namespace"), "{err}");
        assert!(err.contains("available in this kernel"), "{err}");
    }

    #[test]
    fn the_guard_allows_every_algorithm_and_restores_the_host() {
        assert_root();
        let before = std::fs::read_to_string(ALLOWED).unwrap();
        for algorithm in CongestionControl::ALL {
            let guard = AllowedGuard::new(algorithm);
            let ns = NetNs::new("server").unwrap();
            let tcp = apply_tcp(&ns, "server", kernel_name(algorithm)).unwrap();
            assert_eq!(tcp.congestion_control, kernel_name(algorithm));
            assert!(tcp.pacing.starts_with(if algorithm == CongestionControl::Bbr { "yes" } else { "no" }), "{}", tcp.pacing);
            drop(guard);
            assert_eq!(std::fs::read_to_string(ALLOWED).unwrap(), before, "{algorithm}: the host's list is restored");
        }
    }
}
