//! What a captured run left beside its record: the packet captures, the TLS key log and the qlog traces
//! (`tlab run --capture`, or `capture = true` in a suite).

use serde::{Deserialize, Serialize};

/// The files of one run's capture, relative to the results directory (`captures/<run>.*`), and how complete the
/// packet capture is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRecord {
    /// pcap of the client's side of the link: what the client sent, before impairment, and what it received.
    pub client_pcap: String,
    /// pcap of the server's side of the link: what the server sent, before impairment, and what it received.
    pub server_pcap: String,
    /// `SSLKEYLOGFILE`-format secrets of every TLS and QUIC connection of the run (Wireshark's `tls.keylog_file`).
    pub key_log: String,
    /// qlog traces (JSON-SEQ): one per QUIC client connection and one per QUIC server endpoint; empty for TCP modes.
    #[serde(default)]
    pub qlogs: Vec<String>,
    /// Packets in the client's pcap.
    pub client_packets: u64,
    /// Packets in the server's pcap.
    pub server_packets: u64,
    /// Packets the capture left out because its writer fell behind (0 means both pcaps are complete).
    pub capture_dropped: u64,
    /// Packets the link dropped (both directions, every cause): with a complete capture, the sent packets missing
    /// from the receiver's pcap are these plus any still inside the link when it stopped. Absent if the link did
    /// not stop cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_dropped: Option<u64>,
    /// Extra copies the link's duplication delivered (absent as `link_dropped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_duplicated: Option<u64>,
}
