//! Bulk throughput and CPU per byte on loopback: raw quinn beside every reliable, bidirectional mode of the registry,
//! one stream and 8 streams of 64 KiB messages, all QUIC ends on the same congestion controller ([`CONGESTION`]).
//! A small harness rather than criterion, because each sample also reads the process's CPU time (getrusage).
//!
//! `cargo bench -p tlab-benches --bench bulk [-- <substring of a mode name>]`; `TLAB_BULK_SAMPLES` (default 5)
//! samples of `TLAB_BULK_MIB` (default 128) MiB per mode and stream count, after one warm-up sample. Prints a
//! Markdown table: median and min–max of Gbit/s (payload bytes) and CPU ns per payload byte (client and server
//! together, both in this process), and the median Gbit/s as a fraction of raw quinn's with the same stream count.

use std::time::Duration;

use tlab_benches::bulk::{self, BulkClient, MESSAGE_LEN, Sample};
use tlab_benches::{raw_quic, reliable_bidirectional};
use tlab_core::config::CongestionControl;
use tokio::runtime::Runtime;

/// The congestion controller of every QUIC end (ours and raw quinn's); kernel TCP runs the host's.
const CONGESTION: CongestionControl = CongestionControl::Cubic;
/// Stream counts measured per mode.
const STREAMS: [u32; 2] = [1, 8];
/// A sample that takes longer than this fails the run (bounds a stalled transfer).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The baseline's row name.
const RAW: &str = "raw quinn";

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number"))).unwrap_or(default)
}

/// Median, minimum and maximum.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
    (median, values[0], values[n - 1])
}

/// One row of the table: a mode at one stream count.
struct Row {
    mode: String,
    streams: u32,
    samples: Vec<Sample>,
}

/// A warm-up sample, then `samples` measured ones, each of `per_stream` messages on each of `streams` streams.
async fn measure<C: BulkClient>(client: &mut C, streams: u32, per_stream: u64, samples: u64) -> Vec<Sample> {
    let mut measured = Vec::new();
    for i in 0..=samples {
        let sample = tokio::time::timeout(SAMPLE_TIMEOUT, bulk::sample(client, streams, per_stream))
            .await
            .unwrap_or_else(|_| panic!("a bulk sample took longer than {SAMPLE_TIMEOUT:?}"));
        if i > 0 {
            measured.push(sample);
        }
    }
    measured
}

fn main() {
    let samples = env_or("TLAB_BULK_SAMPLES", 5).max(1);
    let mib = env_or("TLAB_BULK_MIB", 128).max(1);
    // cargo bench passes `--bench`; the first other argument filters the modes.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_default();
    let rt = Runtime::new().expect("tokio runtime");
    let tcp = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    println!(
        "bulk: {samples} samples × {mib} MiB of {} KiB messages per mode and stream count; QUIC {CONGESTION}, kernel TCP {}",
        MESSAGE_LEN >> 10,
        tcp.trim()
    );
    let mut rows = Vec::new();
    for streams in STREAMS {
        let per_stream = (mib << 20) / MESSAGE_LEN as u64 / u64::from(streams);
        if RAW.contains(&filter) {
            let samples = rt.block_on(async {
                let mut client = raw_quic::bulk(CONGESTION, MESSAGE_LEN).await;
                measure(&mut client, streams, per_stream, samples).await
            });
            rows.push(Row { mode: RAW.into(), streams, samples });
        }
        for transport in reliable_bidirectional().into_iter().filter(|t| t.name().contains(&filter)) {
            let samples = rt.block_on(async {
                let mut client = bulk::tlab(&*transport, CONGESTION).await;
                let samples = measure(&mut client, streams, per_stream, samples).await;
                client.shutdown().await;
                samples
            });
            rows.push(Row { mode: transport.name().into(), streams, samples });
        }
    }
    println!("| mode | streams | Gbit/s median (min–max) | × raw quinn | CPU ns/B median (min–max) |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        let (rate, rate_min, rate_max) = spread(row.samples.iter().map(Sample::gbit_per_s).collect());
        let (cpu, cpu_min, cpu_max) = spread(row.samples.iter().map(Sample::cpu_ns_per_byte).collect());
        let raw = rows.iter().find(|r| r.mode == RAW && r.streams == row.streams);
        let ratio = raw.map_or("n/a".to_string(), |raw| {
            format!("{:.2}×", rate / spread(raw.samples.iter().map(Sample::gbit_per_s).collect()).0)
        });
        println!(
            "| {} | {} | {rate:.2} ({rate_min:.2}–{rate_max:.2}) | {ratio} | {cpu:.3} ({cpu_min:.3}–{cpu_max:.3}) |",
            row.mode, row.streams
        );
    }
}
