//! A run's capture (`capture = true` in the suite, `tlab run --capture`): a pcap of each side of the link, the TLS
//! key log and the QUIC qlog traces, all in `captures/` of the results directory and named after the run
//! (`<run>.client.pcap`, `<run>.server.pcap`, `<run>.keys`, `<run>-<n>.sqlog`). The key log and the qlog traces are
//! process-wide settings ([`tlab_core::tls::KeyLogCapture`], [`tlab_quic_common::qlog::QlogCapture`]): the runner
//! runs one cell at a time, so everything built during the cell is the cell's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tlab_core::tls::KeyLogCapture;
use tlab_netem::capture::{Capture, CaptureFiles, CaptureSink};
use tlab_quic_common::qlog::QlogCapture;
use tlab_results::CaptureRecord;

/// The capture directory inside a results directory.
const DIR: &str = "captures";
/// How long [`CellCapture::finish`] waits for the packet writer once the link has stopped.
const WRITER_GRACE: Duration = Duration::from_secs(10);

/// Everything capturing one run.
pub(crate) struct CellCapture {
    packets: Capture,
    keys: KeyLogCapture,
    qlog: QlogCapture,
    out: PathBuf,
    record: CaptureRecord,
}

impl CellCapture {
    /// [`CellCapture::start`] when `enabled`: the capture and the link's sink, or neither.
    pub(crate) fn start_if(enabled: bool, out: &Path, stem: &str) -> Result<(Option<Self>, Option<CaptureSink>), String> {
        if !enabled {
            return Ok((None, None));
        }
        let (capture, sink) = Self::start(out, stem)?;
        Ok((Some(capture), Some(sink)))
    }

    /// Creates the run's files under `out/captures/` and starts capturing; the sink goes to the link.
    pub(crate) fn start(out: &Path, stem: &str) -> Result<(Self, CaptureSink), String> {
        let dir = out.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let relative = |suffix: &str| format!("{DIR}/{stem}{suffix}");
        let record = CaptureRecord {
            client_pcap: relative(".client.pcap"),
            server_pcap: relative(".server.pcap"),
            key_log: relative(".keys"),
            ..CaptureRecord::default()
        };
        let files = CaptureFiles { client: out.join(&record.client_pcap), server: out.join(&record.server_pcap) };
        let (packets, sink) = Capture::start(&files).map_err(|e| e.to_string())?;
        let keys = KeyLogCapture::start(&out.join(&record.key_log)).map_err(|e| e.to_string())?;
        let qlog = QlogCapture::start(&dir.join(stem)).map_err(|e| e.to_string())?;
        Ok((Self { packets, keys, qlog, out: out.to_owned(), record }, sink))
    }

    /// Ends the capture once the link has stopped (its sink gone) and the run's endpoints are dropped (their qlog
    /// traces flushed); the record lists the files and says how complete the packet capture is.
    pub(crate) fn finish(self) -> Result<CaptureRecord, String> {
        let Self { packets, keys, qlog, out, mut record } = self;
        keys.finish().map_err(|e| e.to_string())?;
        let qlogs = qlog.finish().map_err(|e| e.to_string())?;
        record.qlogs = qlogs
            .iter()
            .map(|path| path.strip_prefix(&out).unwrap_or(path).display().to_string())
            .collect();
        let deadline = Instant::now() + WRITER_GRACE;
        while !packets.is_finished() {
            if Instant::now() >= deadline {
                return Err(format!("the packet capture did not finish within {WRITER_GRACE:?} of the link's stop"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = packets.finish().map_err(|e| e.to_string())?;
        record.client_packets = stats.client_packets;
        record.server_packets = stats.server_packets;
        record.capture_dropped = stats.dropped;
        (record.link_dropped, record.link_duplicated) = (stats.link_dropped, stats.link_duplicated);
        Ok(record)
    }
}
