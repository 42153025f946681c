//! Benchmarks of the TUN emulator itself (`tlab netem bench`): how fast it forwards with no impairment, how exactly
//! it delays, and whether it ever drops a packet the profile did not ask it to; plus the rate the kernel backend's
//! `tbf` delivers. The goals are checked here, in a benchmark, rather than in tests, because timing depends on the
//! machine.

use std::time::Duration;

use serde::Serialize;

use crate::emulator::{DEVICE, EmulatedLink, LinkCounters};
use crate::kernel::KernelLink;
use crate::selftest::{DelayCheck, delay_check, tcp_bulk};
use crate::{IoError, Link, Profile};

/// Goal: unimpaired TCP bulk throughput, Gbit/s.
pub const GOAL_THROUGHPUT_GBIT: f64 = 1.0;
/// Goal: 99th percentile of |delay error| at 20 ms configured, µs.
pub const GOAL_DELAY_P99_US: f64 = 500.0;

/// TCP bulk client → server through the unimpaired emulator.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Length of the transfer, s.
    pub seconds: f64,
    /// Goodput, Gbit/s.
    pub gbit_per_s: f64,
    /// TCP congestion control that ran.
    pub congestion_control: String,
    /// Whether the forwarding thread ran with real-time priority.
    pub realtime: bool,
}

/// Packets lost although no profile asked for it, summed over the benchmark's links.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnintendedDrops {
    /// Writes the receiving TUN refused.
    pub write_refused: u64,
    /// Drops by the model (loss, queue, blackhole): none configured, so any is unintended.
    pub model: u64,
    /// Packets the kernel dropped before the emulator read them (a TUN's queue full) or on injection.
    pub kernel: u64,
    /// Delay probes sent but never received.
    pub lost_probes: u64,
}

impl UnintendedDrops {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.write_refused + self.model + self.kernel + self.lost_probes
    }

    /// Adds what a link that is about to stop has seen.
    fn add(&mut self, link: &EmulatedLink) -> Result<(), IoError> {
        let LinkCounters { uplink, downlink, write_refused, .. } = link.counters();
        self.write_refused += write_refused;
        for c in [uplink, downlink] {
            self.model += c.dropped_loss.packets + c.dropped_queue.packets + c.dropped_blackhole.packets;
        }
        for ns in [link.client(), link.server()] {
            let stats = ns.device_stats(DEVICE)?;
            self.kernel += stats.tx_dropped + stats.rx_dropped;
        }
        Ok(())
    }
}

/// TCP bulk client → server through the kernel backend shaped to a pure rate (a root `tbf`, which needs no
/// sch_netem): how close the kernel comes to the configured rate.
#[derive(Debug, Clone, Serialize)]
pub struct KernelRate {
    /// Configured uplink rate, Mbit/s.
    pub configured_mbit: f64,
    /// Goodput, Mbit/s (TCP/IP headers excluded, so somewhat below the configured rate).
    pub measured_mbit: f64,
}

/// Uplink rate of the kernel-backend measurement, Mbit/s.
const KERNEL_RATE_MBIT: u32 = 20;

/// Everything `tlab netem bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Benchmark {
    /// Unimpaired forwarding throughput.
    pub throughput: Throughput,
    /// Delay accuracy at 20 ms.
    pub delay: DelayCheck,
    /// Drops nobody asked for, over both runs.
    pub unintended_drops: UnintendedDrops,
    /// The kernel backend's rate shaping (a figure, not a goal: the kernel's `tbf` is not ours to tune).
    pub kernel_rate: KernelRate,
}

impl Benchmark {
    /// Whether each goal is met: throughput, delay accuracy, no unintended drop.
    pub fn goals_met(&self) -> [bool; 3] {
        [
            self.throughput.gbit_per_s >= GOAL_THROUGHPUT_GBIT,
            self.delay.p99_abs_error_us <= GOAL_DELAY_P99_US,
            self.unintended_drops.total() == 0,
        ]
    }
}

fn profile(text: &str) -> Result<Profile, IoError> {
    Profile::from_str(text, "bench").map_err(|e| IoError::Setup(e.to_string()))
}

/// Runs the benchmark: a TCP bulk transfer of `duration` through the clean link, then `probes` UDP probes
/// (every 500 µs) through a 20 ms link, then a TCP bulk transfer of `duration` through a rate-limited kernel link.
pub fn run(seed: u64, duration: Duration, probes: u64, progress: impl Fn(&str)) -> Result<Benchmark, IoError> {
    let mut drops = UnintendedDrops::default();
    progress("TCP bulk through the unimpaired emulator");
    let link = EmulatedLink::start(Link::from_profile(&profile("name = \"clean\"\n")?, seed))?;
    let (bytes, elapsed) = tcp_bulk(link.client(), link.server(), duration)?;
    let throughput = Throughput {
        seconds: elapsed.as_secs_f64(),
        gbit_per_s: bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
        congestion_control: link.congestion_control().to_string(),
        realtime: link.realtime(),
    };
    drops.add(&link)?;
    link.stop()?;
    progress("UDP probes through a 20 ms link");
    let configured = Duration::from_millis(20);
    let delay = delay_check("delay-20ms", &profile("name = \"delay-20ms\"\n[link]\ndelay_ms = 20\n")?, configured, seed, probes)?;
    drops.lost_probes = probes - delay.samples as u64;
    progress("TCP bulk through a rate-limited kernel link");
    let rate = format!("name = \"kernel-rate\"\n[uplink]\nrate_mbit = {KERNEL_RATE_MBIT}\nqueue_bytes = 100000\n");
    let link = KernelLink::start(&profile(&rate)?)?;
    let (bytes, elapsed) = tcp_bulk(link.client(), link.server(), duration)?;
    link.stop()?;
    let kernel_rate = KernelRate {
        configured_mbit: f64::from(KERNEL_RATE_MBIT),
        measured_mbit: bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
    };
    Ok(Benchmark { throughput, delay, unintended_drops: drops, kernel_rate })
}
