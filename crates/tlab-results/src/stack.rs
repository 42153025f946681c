//! What the network stacks of a run ran with, per side: the congestion control of kernel TCP (read back from the
//! namespace's sysctl) and of QUIC, whether each paces, their initial windows and the flow-control windows of quinn
//! and of HTTP/2 — so that a TCP-vs-QUIC figure can be checked to compare protocols, not controllers.

use serde::{Deserialize, Serialize};

/// Both sides of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackInfo {
    /// The client's namespace and endpoints.
    pub client: SideStack,
    /// The server's namespace and endpoints.
    pub server: SideStack,
}

/// One side's stacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideStack {
    /// Kernel TCP in this side's namespace.
    pub tcp: TcpStack,
    /// quinn, for the QUIC modes (`quic`, `h3`, `wt-stream`, `wt-datagram`).
    pub quic: QuicStack,
    /// HTTP/2 receive windows this side announces (modes `grpc`, `sse-h2`; hyper's defaults, which tonic and
    /// reqwest keep).
    pub http2: Http2Windows,
}

/// Kernel TCP of one namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpStack {
    /// `net.ipv4.tcp_congestion_control` read back from the namespace (Linux names: `cubic`, `reno`, `bbr`).
    pub congestion_control: String,
    /// Whether TCP paces and why, e.g. "no: qdisc noqueue (Linux TCP paces only under fq, or BBR's internal pacing)".
    pub pacing: String,
    /// The initial congestion window, e.g. "10 segments (Linux default, no initcwnd on the route)".
    pub initial_window: String,
}

/// quinn at one end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuicStack {
    /// The controller this end was given (`cubic`, `newreno`, `bbr`).
    pub congestion_control: String,
    /// quinn paces every connection (its pacer spreads a congestion window over the RTT).
    pub pacing: String,
    /// The controller's initial window, bytes, as quinn's controller reports it.
    pub initial_window_bytes: u64,
    /// Per-stream receive window, bytes (quinn's `stream_receive_window`).
    pub stream_receive_window_bytes: u64,
    /// Connection receive window, bytes (quinn's `receive_window`; `u64::MAX >> 2` = unlimited).
    pub receive_window_bytes: u64,
    /// Connection send window, bytes (quinn's `send_window`).
    pub send_window_bytes: u64,
}

/// HTTP/2 receive windows one side announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Http2Windows {
    /// SETTINGS_INITIAL_WINDOW_SIZE, bytes.
    pub stream_window_bytes: u32,
    /// The connection window after the initial WINDOW_UPDATE, bytes.
    pub connection_window_bytes: u32,
    /// Whether the windows adapt to the measured bandwidth-delay product (BDP pings).
    pub adaptive: bool,
}
