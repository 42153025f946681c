//! Per-message records: every message a run received, with its three times, and the link's drop log, each as a
//! gzip-compressed CSV file next to `runs.jsonl` (`messages/<run>.csv.gz`, `drops/<run>.csv.gz`) that pandas reads in
//! one call (`pd.read_csv(path)`: the compression follows from the name). Encoding and decoding are pure functions of
//! bytes; the runner writes the files. Histograms stay in `runs.jsonl` for the summary; these files are for
//! reanalysis.

use std::fmt::Write as _;
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Why a per-message file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The bytes are not gzip.
    #[error("not a gzip file: {0}")]
    Gzip(#[from] std::io::Error),
    /// The header is not the one this version writes.
    #[error("unexpected header {found:?} (expected {expected:?})")]
    Header {
        /// The header found.
        found: String,
        /// The header of this record type.
        expected: &'static str,
    },
    /// A data line does not parse.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number (the header is line 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One received message. Times are CLOCK_MONOTONIC nanoseconds (the clock client and server share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRecord {
    /// Logical stream.
    pub stream: u32,
    /// Position in the stream, from 0.
    pub seq: u64,
    /// Payload bytes.
    pub size: u64,
    /// When the workload's schedule said it was to be sent (the sender's start + seq × interval; the actual send
    /// time when the stream has no schedule, at rate 0).
    pub scheduled_ns: u64,
    /// When the sender actually sent it (`sent_at` of the message).
    pub sent_ns: u64,
    /// When the client received it (the echo, for round trips).
    pub received_ns: u64,
}

impl MessageRecord {
    /// Its latency as every latency metric counts it: received − scheduled.
    pub fn latency_ns(&self) -> u64 {
        self.received_ns.saturating_sub(self.scheduled_ns)
    }

    /// How late the sender was against its schedule: sent − scheduled.
    pub fn send_lag_ns(&self) -> u64 {
        self.sent_ns.saturating_sub(self.scheduled_ns)
    }
}

/// One packet the link emulator dropped (the drop log; the emulator provides it where it keeps one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    /// When the packet entered the link, CLOCK_MONOTONIC nanoseconds (the clock of `sent_ns`).
    pub at_ns: u64,
    /// `uplink` (client → server) or `downlink`.
    pub direction: String,
    /// IP packet length, bytes.
    pub size: u64,
    /// Why it was dropped (e.g. `targeted`, `targeted-retransmission`, `loss`).
    pub cause: String,
}

/// A row type of a per-run CSV file.
pub trait CsvRecord: Sized {
    /// The header line (column names, comma-separated).
    const HEADER: &'static str;
    /// Appends the row's fields, comma-separated, without a newline.
    fn write_row(&self, out: &mut String);
    /// Parses the fields of one row.
    fn parse_row(fields: &[&str]) -> Result<Self, String>;
}

fn number(field: &str, column: &str) -> Result<u64, String> {
    field.parse().map_err(|_| format!("{column}: {field:?} is not a non-negative integer"))
}

fn text(field: &str, column: &str) -> Result<String, String> {
    if field.is_empty() || field.contains([',', '"', '\n']) {
        return Err(format!("{column}: {field:?} is empty or needs quoting"));
    }
    Ok(field.to_string())
}

impl CsvRecord for MessageRecord {
    const HEADER: &'static str = "stream,seq,size,scheduled_ns,sent_ns,received_ns";

    fn write_row(&self, out: &mut String) {
        let _ = write!(out, "{},{},{},{},{},{}", self.stream, self.seq, self.size, self.scheduled_ns, self.sent_ns, self.received_ns);
    }

    fn parse_row(fields: &[&str]) -> Result<Self, String> {
        let [stream, seq, size, scheduled, sent, received] = fields else { return Err(format!("{} fields, expected 6", fields.len())) };
        Ok(Self {
            stream: number(stream, "stream")?.try_into().map_err(|_| "stream: out of range".to_string())?,
            seq: number(seq, "seq")?,
            size: number(size, "size")?,
            scheduled_ns: number(scheduled, "scheduled_ns")?,
            sent_ns: number(sent, "sent_ns")?,
            received_ns: number(received, "received_ns")?,
        })
    }
}

impl CsvRecord for DropRecord {
    const HEADER: &'static str = "at_ns,direction,size,cause";

    fn write_row(&self, out: &mut String) {
        let _ = write!(out, "{},{},{},{}", self.at_ns, self.direction, self.size, self.cause);
    }

    fn parse_row(fields: &[&str]) -> Result<Self, String> {
        let [at, direction, size, cause] = fields else { return Err(format!("{} fields, expected 4", fields.len())) };
        Ok(Self { at_ns: number(at, "at_ns")?, direction: text(direction, "direction")?, size: number(size, "size")?, cause: text(cause, "cause")? })
    }
}

/// `rows` as a gzip-compressed CSV file with its header.
pub fn encode_csv_gz<R: CsvRecord>(rows: &[R]) -> Vec<u8> {
    let mut csv = String::with_capacity(R::HEADER.len() + 1 + rows.len() * 48);
    csv.push_str(R::HEADER);
    csv.push('\n');
    for row in rows {
        row.write_row(&mut csv);
        csv.push('\n');
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(csv.as_bytes()).expect("writing into memory cannot fail");
    encoder.finish().expect("writing into memory cannot fail")
}

/// The rows of a file [`encode_csv_gz`] wrote.
pub fn decode_csv_gz<R: CsvRecord>(bytes: &[u8]) -> Result<Vec<R>, RecordsError> {
    let mut csv = String::new();
    GzDecoder::new(bytes).read_to_string(&mut csv)?;
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    if header != R::HEADER {
        return Err(RecordsError::Header { found: header.to_string(), expected: R::HEADER });
    }
    lines
        .enumerate()
        .map(|(i, line)| R::parse_row(&line.split(',').collect::<Vec<_>>()).map_err(|message| RecordsError::Line { line: i + 2, message }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_gzip_csv() {
        let rows: Vec<MessageRecord> = (0..500)
            .map(|i| MessageRecord { stream: i % 4, seq: u64::from(i / 4), size: 256, scheduled_ns: 1_000 * u64::from(i), sent_ns: 1_000 * u64::from(i) + 7, received_ns: 1_000 * u64::from(i) + 20_000_000 })
            .collect();
        let bytes = encode_csv_gz(&rows);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic: pandas infers the compression from .gz");
        assert_eq!(decode_csv_gz::<MessageRecord>(&bytes).unwrap(), rows);
        assert_eq!(rows[3].latency_ns(), 20_000_000);
        assert_eq!(rows[3].send_lag_ns(), 7);
    }

    #[test]
    fn drops_round_trip_and_bad_files_are_refused() {
        let drops = vec![DropRecord { at_ns: 5, direction: "downlink".into(), size: 330, cause: "targeted".into() }];
        assert_eq!(decode_csv_gz::<DropRecord>(&encode_csv_gz(&drops)).unwrap(), drops);
        assert!(matches!(decode_csv_gz::<MessageRecord>(&encode_csv_gz(&drops)), Err(RecordsError::Header { .. })));
        assert!(matches!(decode_csv_gz::<MessageRecord>(b"plain text"), Err(RecordsError::Gzip(_))));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(format!("{}\n1,2,3\n", MessageRecord::HEADER).as_bytes()).unwrap();
        let err = decode_csv_gz::<MessageRecord>(&encoder.finish().unwrap()).unwrap_err();
        assert!(matches!(&err, RecordsError::Line { line: 2, .. }), "{err}");
    }
}
