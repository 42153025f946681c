//! How well a link kept its schedule, for the record of each cell: the TUN forwarder's release lateness (actual
//! write time − due time) in a small fixed-bucket histogram ([`Lateness`]), the host's CPU steal between two
//! readings of `/proc/stat` ([`CpuTimes`]), and the settings that shape kernel TCP and the link device inside a
//! namespace ([`tcp_sysctls`], [`describe_device`]).
//!
//! The histogram's buckets are 1 µs wide below 1,024 µs and then 512 per power of two (a relative width of at most
//! 1/512), so quantiles are exact to the microsecond where a tolerance usually sits and within 0.2 % above.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::io_error::IoError;
use crate::namespace::NetNs;

/// Buckets 1 µs wide below this many µs.
const LINEAR: u64 = 1024;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: u64 = LINEAR / 2;
/// Largest lateness told apart, µs (about 71 minutes); later releases count in the last bucket.
const CAP_US: u64 = u32::MAX as u64;

/// Release lateness of every packet a forwarder wrote: a fixed-bucket histogram in µs plus the exact maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lateness {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self { counts: vec![0; bucket(CAP_US) + 1], total: 0, max_ns: 0 }
    }
}

/// The bucket of a lateness of `us` microseconds.
fn bucket(us: u64) -> usize {
    let us = us.min(CAP_US);
    if us < LINEAR {
        return us as usize;
    }
    // us >> shift lies in [PER_OCTAVE, LINEAR).
    let shift = u64::from(63 - us.leading_zeros()) - PER_OCTAVE.trailing_zeros() as u64;
    (LINEAR + (shift - 1) * PER_OCTAVE + (us >> shift) - PER_OCTAVE) as usize
}

/// The smallest lateness (µs) in bucket `index`, and the bucket's width (µs).
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, 1);
    }
    let shift = (index - LINEAR) / PER_OCTAVE + 1;
    (((index - LINEAR) % PER_OCTAVE + PER_OCTAVE) << shift, 1 << shift)
}

impl Lateness {
    /// Records one release `late` after its due time.
    pub fn record(&mut self, late: Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns / 1000)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Releases recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest lateness, µs (exact).
    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }

    /// The `q` quantile (0 ≤ q ≤ 1), µs: the upper end of the bucket holding it, never above the maximum; 0 when
    /// nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bounds(index);
                return ((low + width) as f64).min(self.max_us());
            }
        }
        self.max_us()
    }

    /// Releases at least `tolerance_us` late (exact below 1,024 µs, to the bucket above: within 0.2 %).
    pub fn at_least_us(&self, tolerance_us: u64) -> u64 {
        let first = bucket(tolerance_us);
        let partial = if bounds(first).0 < tolerance_us { 1 } else { 0 };
        self.counts[first + partial..].iter().sum()
    }
}

/// The host's CPU time counters (all CPUs, clock ticks) from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every column summed (user, nice, system, idle, iowait, irq, softirq, steal; guest time is inside user).
    pub total: u64,
    /// The steal column: time the hypervisor ran something else while this VM wanted the CPU.
    pub steal: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn now() -> Result<Self, IoError> {
        let text = std::fs::read_to_string("/proc/stat").map_err(|e| IoError::io("reading /proc/stat", e))?;
        Self::parse(&text).ok_or_else(|| IoError::Setup("/proc/stat has no cpu line with a steal column".into()))
    }

    /// Parses the `cpu` line of `/proc/stat` text.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
        let values: Vec<u64> = line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>().ok()?;
        // guest and guest_nice (columns 9 and 10) are already counted in user and nice.
        let total = values.iter().take(8).sum();
        Some(Self { total, steal: *values.get(7)? })
    }

    /// The share of CPU time stolen between `earlier` and `self` (0 when no time passed).
    pub fn steal_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 { 0.0 } else { self.steal.saturating_sub(earlier.steal) as f64 / total as f64 }
    }
}

/// The sysctls that shape kernel TCP, as `ns` sees them (`net.*` values are per namespace; a new namespace starts
/// from the kernel's defaults, not the host's). Keys the kernel lacks are left out.
pub const TCP_SYSCTLS: [&str; 8] = [
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_ecn",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_recovery",
    "net.ipv4.tcp_autocorking",
    "net.ipv4.tcp_rto_min_us",
    "net.ipv4.tcp_rto_max_ms",
];

/// [`TCP_SYSCTLS`] read inside `ns`, whitespace collapsed (`4096 16384 4194304`).
pub fn tcp_sysctls(ns: &NetNs) -> Result<BTreeMap<String, String>, IoError> {
    ns.run(|| {
        TCP_SYSCTLS
            .iter()
            .filter_map(|key| {
                let value = std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/"))).ok()?;
                Some((key.to_string(), value.split_whitespace().collect::<Vec<_>>().join(" ")))
            })
            .collect()
    })
}

/// The link's device in `ns` as `ip -details link` shows it (flags, MTU, qdisc, queue length, the TUN flags) and
/// its root qdisc as `tc qdisc show` does, each on one line.
pub fn describe_device(ns: &NetNs) -> Result<(String, String), IoError> {
    let dev = crate::emulator::DEVICE;
    let one_line = |program: &str, args: &[&str]| -> Result<String, IoError> {
        let out = ns.exec(program, args)?;
        Ok(String::from_utf8_lossy(&out.stdout).replace('\\', " ").split_whitespace().collect::<Vec<_>>().join(" "))
    };
    Ok((one_line("ip", &["-details", "-oneline", "link", "show", "dev", dev])?, one_line("tc", &["qdisc", "show", "dev", dev])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut previous_end = 0;
        for index in 0..bucket(CAP_US) {
            let (low, width) = bounds(index);
            assert_eq!(low, previous_end, "bucket {index} starts where the previous one ended");
            assert_eq!(bucket(low), index);
            assert_eq!(bucket(low + width - 1), index);
            assert!(low < LINEAR || width * PER_OCTAVE <= low, "bucket {index} is wider than 1/{PER_OCTAVE} of its values");
            previous_end = low + width;
        }
    }

    #[test]
    fn quantiles_counts_and_max() {
        let mut lateness = Lateness::default();
        assert_eq!((lateness.quantile_us(0.99), lateness.count()), (0.0, 0));
        for us in 1..=100u64 {
            lateness.record(Duration::from_micros(us) + Duration::from_nanos(300));
        }
        lateness.record(Duration::from_millis(250));
        assert_eq!(lateness.count(), 101);
        assert_eq!(lateness.quantile_us(0.5), 52.0, "the 51st value (51.3 µs) lies in [51, 52)");
        assert_eq!(lateness.quantile_us(0.99), 101.0);
        assert_eq!(lateness.max_us(), 250_000.0);
        assert_eq!(lateness.quantile_us(1.0), 250_000.0, "never above the exact maximum");
        assert_eq!(lateness.at_least_us(100), 2, "100.3 µs and 250 ms");
        assert_eq!(lateness.at_least_us(1000), 1);
        assert_eq!(lateness.at_least_us(0), 101);
        lateness.record(Duration::from_secs(10_000));
        assert_eq!(lateness.at_least_us(1_000_000), 1, "beyond the cap counts in the last bucket");
        assert_eq!(lateness.max_us(), 1e10);
    }

    #[test]
    fn steal_share_between_two_readings() {
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        assert_eq!(before, CpuTimes { total: 1000, steal: 35 });
        let after = CpuTimes::parse("cpu  200 0 100 1500 10 0 5 185 7 0\n").unwrap();
        assert_eq!(after.steal_since(&before), 0.15);
        assert_eq!(after.steal_since(&after), 0.0);
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None, "a kernel without a steal column");
        assert!(CpuTimes::now().is_ok());
    }
}
