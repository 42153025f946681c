//! Packet capture of the emulated link: one pcap file per side, written off the forwarding thread.
//!
//! Each side's file holds what a capture on that side's device would show: the packets the side sent, as read by
//! the forwarder *before* any impairment, and the packets delivered to it, as written *after* impairment. A packet
//! the link dropped is therefore in its sender's file and missing from its receiver's. Files are pcap with
//! nanosecond timestamps and link type `LINKTYPE_RAW` (101: each record is one IPv4 packet, no link header), which
//! Wireshark, tshark and tcpdump read. Timestamps are the forwarder's CLOCK_MONOTONIC stamps (read time for sent
//! packets, write time for delivered ones) shifted once by the wall clock's offset at [`Capture::start`], so
//! intervals are monotonic and dates are real.
//!
//! The forwarder hands each packet to a [`CaptureSink`], which copies it into a bounded channel and never waits: when
//! the writer thread falls behind, the packet is left out of the capture and counted in [`CaptureStats::dropped`]
//! (the link itself is not affected). When the forwarder stops it hands over its final counters, so the stats say
//! how many packets the link dropped and duplicated: with a complete capture, the packets of the senders' files
//! missing from the receivers' files are exactly the dropped ones plus any still inside the link at its stop.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

use crate::emulator::LinkCounters;
use crate::io_error::IoError;

/// pcap link type of raw IP packets without a link-layer header.
pub const LINKTYPE_RAW: u32 = 101;
/// Magic number of a pcap file with nanosecond timestamps.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// The snapshot length the header declares (tcpdump's default): larger than any read (64 KiB), so every packet is
/// recorded whole.
const SNAPLEN: u32 = 262_144;
/// Packets waiting for the writer before further ones are left out of the capture.
const QUEUE: usize = 16_384;

/// Where a link's capture goes: one file per side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFiles {
    /// What the client sent (before impairment) and what it received (after).
    pub client: PathBuf,
    /// What the server sent (before impairment) and what it received (after).
    pub server: PathBuf,
}

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's device.
    Client,
    /// The server's device.
    Server,
}

/// What a finished capture wrote and left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaptureStats {
    /// Packets in the client's file.
    pub client_packets: u64,
    /// Packets in the server's file.
    pub server_packets: u64,
    /// Packets left out of the capture because the writer fell behind.
    pub dropped: u64,
    /// Packets the link dropped, both directions, every cause (random and targeted loss, queue, blackhole, old
    /// address, expired NAT mapping, refused by the receiving device); `None` if the forwarder did not stop cleanly.
    pub link_dropped: Option<u64>,
    /// Extra copies the link's duplication created; `None` as for `link_dropped`.
    pub link_duplicated: Option<u64>,
}

impl CaptureStats {
    fn with_link(mut self, counters: &LinkCounters) -> Self {
        let model = [counters.uplink, counters.downlink];
        let dropped = model.iter().map(|d| d.dropped_targeted.packets + d.dropped_loss.packets + d.dropped_queue.packets + d.dropped_blackhole.packets);
        self.link_dropped =
            Some(dropped.sum::<u64>() + counters.old_address_dropped + counters.nat_expired_dropped + counters.write_refused);
        self.link_duplicated = Some(model.iter().map(|d| d.duplicated.packets).sum());
        self
    }
}

/// A running capture: the writer thread, which ends once every [`CaptureSink`] is gone.
pub struct Capture {
    writer: JoinHandle<Result<CaptureStats, IoError>>,
    dropped: Arc<AtomicU64>,
}

/// The forwarder's end of a capture: hands packets to the writer thread without blocking.
pub struct CaptureSink {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

enum Item {
    Packet { side: Side, monotonic_ns: u64, packet: Vec<u8> },
    /// The forwarder's final counters.
    Stopped(LinkCounters),
}

impl Capture {
    /// Creates both files (with their pcap headers) and starts the writer thread; give the sink to the link.
    pub fn start(files: &CaptureFiles) -> Result<(Capture, CaptureSink), IoError> {
        let open = |path: &PathBuf| -> Result<BufWriter<File>, IoError> {
            let what = || format!("creating capture file {}", path.display());
            let mut file = BufWriter::new(File::create(path).map_err(|e| IoError::io(&what(), e))?);
            file.write_all(&file_header()).map_err(|e| IoError::io(&what(), e))?;
            Ok(file)
        };
        let mut outputs = [open(&files.client)?, open(&files.server)?];
        let offset = realtime_minus_monotonic_ns();
        let (queue, items) = mpsc::sync_channel::<Item>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let names = [files.client.display().to_string(), files.server.display().to_string()];
        let writer = std::thread::Builder::new()
            .name("tlab-capture".into())
            .spawn(move || {
                let mut counts = [0u64; 2];
                let mut link = None;
                for item in items {
                    let (side, monotonic_ns, packet) = match item {
                        Item::Packet { side, monotonic_ns, packet } => (side, monotonic_ns, packet),
                        Item::Stopped(counters) => {
                            link = Some(counters);
                            continue;
                        }
                    };
                    let i = side as usize;
                    let at = monotonic_ns as i128 + offset;
                    let out = &mut outputs[i];
                    out.write_all(&record_header(at.max(0) as u64, packet.len()))
                        .and_then(|()| out.write_all(&packet))
                        .map_err(|e| IoError::io(&format!("writing {}", names[i]), e))?;
                    counts[i] += 1;
                }
                for (out, name) in outputs.iter_mut().zip(&names) {
                    out.flush().map_err(|e| IoError::io(&format!("writing {name}"), e))?;
                }
                let stats = CaptureStats { client_packets: counts[0], server_packets: counts[1], ..CaptureStats::default() };
                Ok(link.map_or(stats, |counters| stats.with_link(&counters)))
            })
            .map_err(|e| IoError::io("spawning the capture writer", e))?;
        Ok((Capture { writer, dropped: dropped.clone() }, CaptureSink { queue, dropped }))
    }

    /// Whether the writer is done: the sink is gone (the link stopped) and everything is written.
    pub fn is_finished(&self) -> bool {
        self.writer.is_finished()
    }

    /// Waits until the sink is gone (the link stopped) and everything is written, and says how much.
    pub fn finish(self) -> Result<CaptureStats, IoError> {
        let stats = self.writer.join().map_err(|_| IoError::Setup("capture writer panicked".into()))??;
        Ok(CaptureStats { dropped: self.dropped.load(Ordering::Relaxed), ..stats })
    }
}

impl CaptureSink {
    /// Records `packet` on `side` at `monotonic_ns` (CLOCK_MONOTONIC); never blocks.
    pub(crate) fn record(&self, side: Side, monotonic_ns: u64, packet: &[u8]) {
        let item = Item::Packet { side, monotonic_ns, packet: packet.to_vec() };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.queue.try_send(item) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the capture with the link's final counters (waits for room in the queue: the link is stopping).
    pub(crate) fn link_stopped(self, counters: &LinkCounters) {
        // A gone writer has failed; its error surfaces in `Capture::finish`.
        let _ = self.queue.send(Item::Stopped(*counters));
    }
}

/// The pcap global header: nanosecond timestamps, version 2.4, UTC, [`SNAPLEN`], [`LINKTYPE_RAW`].
fn file_header() -> [u8; 24] {
    let mut header = [0u8; 24];
    header[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    header[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    header
}

/// A pcap record header for a packet of `len` bytes, recorded whole, at `unix_ns`.
fn record_header(unix_ns: u64, len: usize) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&((unix_ns / 1_000_000_000) as u32).to_le_bytes());
    header[4..8].copy_from_slice(&((unix_ns % 1_000_000_000) as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    header
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, in ns: added to a monotonic stamp it gives the wall-clock time.
fn realtime_minus_monotonic_ns() -> i128 {
    let ns = |clock| {
        let ts = nix::time::clock_gettime(clock).expect("the clock exists on Linux");
        ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
    };
    ns(nix::time::ClockId::CLOCK_REALTIME) - ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// Reads a pcap file this module wrote: each record's timestamp (Unix ns) and packet. For tests and tools that
/// compare the two sides of a capture.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, IoError> {
    let bad = |why: &str| IoError::Setup(format!("not a capture of this emulator: {why}"));
    let header = bytes.get(..24).ok_or_else(|| bad("shorter than a pcap header"))?;
    if header[0..4] != MAGIC_NANOS.to_le_bytes() || header[20..24] != LINKTYPE_RAW.to_le_bytes() {
        return Err(bad("not a little-endian nanosecond pcap of raw IP"));
    }
    let mut records = Vec::new();
    let mut rest = &bytes[24..];
    while !rest.is_empty() {
        let head = rest.get(..16).ok_or_else(|| bad("a record header is cut short"))?;
        let field = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let len = field(8) as usize;
        let packet = rest.get(16..16 + len).ok_or_else(|| bad("a packet is cut short"))?;
        records.push((u64::from(field(0)) * 1_000_000_000 + u64::from(field(4)), packet.to_vec()));
        rest = &rest[16 + len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_are_written_in_order_with_their_stamps() {
        let dir = std::env::temp_dir().join(format!("tlab-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CaptureFiles { client: dir.join("c.pcap"), server: dir.join("s.pcap") };
        let (capture, sink) = Capture::start(&files).unwrap();
        let packets: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x45, i, i, i]).collect();
        for (i, p) in packets.iter().enumerate() {
            sink.record(if i % 2 == 0 { Side::Client } else { Side::Server }, 1_000 * i as u64, p);
        }
        let mut counters = LinkCounters { write_refused: 1, nat_expired_dropped: 1, ..LinkCounters::default() };
        counters.uplink.dropped_loss.packets = 2;
        counters.downlink.dropped_queue.packets = 3;
        counters.downlink.duplicated.packets = 4;
        sink.link_stopped(&counters);
        let stats = capture.finish().unwrap();
        let expected = CaptureStats { client_packets: 3, server_packets: 2, dropped: 0, link_dropped: Some(7), link_duplicated: Some(4) };
        assert_eq!(stats, expected);
        let client = read_pcap(&std::fs::read(&files.client).unwrap()).unwrap();
        let server = read_pcap(&std::fs::read(&files.server).unwrap()).unwrap();
        assert_eq!(client.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), vec![packets[0].clone(), packets[2].clone(), packets[4].clone()]);
        assert_eq!(server.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), vec![packets[1].clone(), packets[3].clone()]);
        // One offset for all: the stamps keep their monotonic spacing.
        assert_eq!(client[1].0 - client[0].0, 2_000);
        assert_eq!(server[1].0 - server[0].0, 2_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn headers_follow_the_pcap_format() {
        let header = file_header();
        assert_eq!(&header[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(header[20..24].try_into().unwrap()), 101);
        let record = record_header(3_000_000_007, 1500);
        assert_eq!(u32::from_le_bytes(record[0..4].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(record[4..8].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(record[8..12].try_into().unwrap()), 1500);
        assert_eq!(u32::from_le_bytes(record[12..16].try_into().unwrap()), 1500);
    }
}
