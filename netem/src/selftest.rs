//! Calibration a user can cite: configured vs measured behaviour of the TUN backend on this machine — one-way delay
//! error, loss rate with its confidence interval, and TCP bulk throughput at 1 % loss against the Mathis formula.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::emulator::{EmulatedLink, SERVER_ADDR, make_realtime};
use crate::namespace::NetNs;
use crate::{IoError, Link, Profile};

/// Measured one-way delay against the configured one.
#[derive(Debug, Clone, Serialize)]
pub struct DelayCheck {
    /// Profile used.
    pub profile: String,
    /// Configured one-way delay, ms.
    pub configured_ms: f64,
    /// Probes received.
    pub samples: usize,
    /// Median of (measured − configured), µs.
    pub p50_error_us: f64,
    /// 99th percentile of (measured − configured), µs.
    pub p99_error_us: f64,
    /// Smallest (measured − configured), µs: negative would mean a packet left early.
    pub min_error_us: f64,
    /// Median of |measured − configured|, µs.
    pub p50_abs_error_us: f64,
    /// 99th percentile of |measured − configured|, µs.
    pub p99_abs_error_us: f64,
}

/// Measured loss rate against the configured one.
#[derive(Debug, Clone, Serialize)]
pub struct LossCheck {
    /// Profile used.
    pub profile: String,
    /// Configured loss probability.
    pub configured: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams lost.
    pub lost: u64,
    /// lost / sent.
    pub measured: f64,
    /// Wilson 99.9 % interval of the measured rate.
    pub ci999: (f64, f64),
}

/// TCP bulk throughput against Mathis et al.: MSS/RTT · 1.22/√p.
#[derive(Debug, Clone, Serialize)]
pub struct MathisCheck {
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Segment loss probability (data direction only).
    pub loss: f64,
    /// TCP congestion control that ran.
    pub congestion_control: String,
    /// Predicted goodput, Mbit/s.
    pub predicted_mbit: f64,
    /// Measured goodput, Mbit/s.
    pub measured_mbit: f64,
}

/// Everything `tlab netem selftest` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTest {
    /// Delay accuracy checks.
    pub delay: Vec<DelayCheck>,
    /// Loss-rate checks.
    pub loss: Vec<LossCheck>,
    /// TCP vs Mathis.
    pub mathis: MathisCheck,
}

/// The Wilson score interval of `k` successes in `n` trials at normal quantile `z`.
pub fn wilson_interval(k: u64, n: u64, z: f64) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Mathis et al. (1997): steady-state TCP goodput in bit/s for segment size `mss` bytes, `rtt` and loss `p`.
pub fn mathis_bps(mss: f64, rtt: Duration, p: f64) -> f64 {
    mss * 8.0 / rtt.as_secs_f64() * 1.22 / p.sqrt()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every namespace of the host, never stepped by NTP.
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |e| IoError::Io { what: what.to_string(), source: e }
}

/// Sends `count` UDP probes client → server at `interval`; returns the one-way delays (ns) of those that arrived.
///
/// Each delay runs from the sender's CLOCK_MONOTONIC reading just before `send` to the receiver's reading just
/// after `recv` returns. Client and server share the host, so both read the same clock (the wall clock could be
/// stepped or slewed in between). The receiver runs at real-time priority when it may, but its wake-up latency
/// still counts: the measured error is an upper bound of the emulator's own, and a negative one can only mean a
/// packet left early.
pub(crate) fn udp_probes(link: &EmulatedLink, count: u64, interval: Duration) -> Result<Vec<u64>, IoError> {
    let server = link.server().run(|| UdpSocket::bind((SERVER_ADDR, 5999)))?.map_err(io("binding the probe receiver"))?;
    server.set_read_timeout(Some(Duration::from_secs(2))).map_err(io("probe timeout"))?;
    let client = link.client().run(|| UdpSocket::bind("0.0.0.0:0"))?.map_err(io("binding the probe sender"))?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let _ = tid_tx.send(nix::unistd::gettid());
        let mut delays = Vec::new();
        let mut buf = [0u8; 64];
        // A timeout ends the run: the sender is done.
        while let Ok(n) = server.recv(&mut buf) {
            let received = monotonic_ns();
            if n >= 8 {
                delays.push(received.saturating_sub(u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"))));
            }
        }
        delays
    });
    if let Ok(tid) = tid_rx.recv() {
        make_realtime(tid);
    }
    let start = Instant::now();
    for i in 0..count {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut probe = [0u8; 64];
        probe[..8].copy_from_slice(&monotonic_ns().to_be_bytes());
        client.send_to(&probe, (SERVER_ADDR, 5999)).map_err(io("sending a probe"))?;
    }
    receiver.join().map_err(|_| IoError::Setup("probe receiver panicked".into()))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Delay accuracy of a profile whose one-way delay is `configured` with no jitter, from `probes` UDP probes.
pub fn delay_check(name: &str, profile: &Profile, configured: Duration, seed: u64, probes: u64) -> Result<DelayCheck, IoError> {
    let link = EmulatedLink::start(Link::from_profile(profile, seed))?;
    let delays = udp_probes(&link, probes, Duration::from_micros(500))?;
    link.stop()?;
    delay_errors(name, configured, &delays)
}

/// Summarises one-way `delays` (ns) against `configured`.
pub(crate) fn delay_errors(name: &str, configured: Duration, delays: &[u64]) -> Result<DelayCheck, IoError> {
    let mut errors: Vec<f64> = delays.iter().map(|&d| (d as f64 - configured.as_nanos() as f64) / 1000.0).collect();
    errors.sort_by(f64::total_cmp);
    if errors.is_empty() {
        return Err(IoError::Setup(format!("{name}: no probe arrived")));
    }
    let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    abs.sort_by(f64::total_cmp);
    Ok(DelayCheck {
        profile: name.to_string(),
        configured_ms: configured.as_secs_f64() * 1000.0,
        samples: errors.len(),
        p50_error_us: percentile(&errors, 0.5),
        p99_error_us: percentile(&errors, 0.99),
        min_error_us: errors[0],
        p50_abs_error_us: percentile(&abs, 0.5),
        p99_abs_error_us: percentile(&abs, 0.99),
    })
}

/// Loss rate of `profile`'s uplink (the probes' direction) against the mean loss its impairments configure.
pub fn loss_check(name: &str, profile: &Profile, seed: u64) -> Result<LossCheck, IoError> {
    let configured = profile.uplink.loss.mean_loss();
    let link = EmulatedLink::start(Link::from_profile(profile, seed))?;
    let sent = 5000;
    let received = udp_probes(&link, sent, Duration::from_micros(200))?.len() as u64;
    link.stop()?;
    let lost = sent - received;
    Ok(LossCheck {
        profile: name.to_string(),
        configured,
        sent,
        lost,
        measured: lost as f64 / sent as f64,
        ci999: wilson_interval(lost, sent, 3.29),
    })
}

/// A TCP bulk transfer from the `client` to the `server` namespace of a link (either backend) for about `duration`;
/// returns the bytes the server read and the time it took.
pub(crate) fn tcp_bulk(client: &NetNs, server: &NetNs, duration: Duration) -> Result<(u64, Duration), IoError> {
    let listener = server.run(|| TcpListener::bind((SERVER_ADDR, 5998)))?.map_err(io("binding the TCP sink"))?;
    let sink = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let (mut total, start) = (0u64, Instant::now());
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok((total, start.elapsed())),
                n => total += n as u64,
            }
        }
    });
    let mut stream = client.run(|| TcpStream::connect((SERVER_ADDR, 5998)))?.map_err(io("connecting the TCP source"))?;
    let chunk = vec![0x42u8; 1 << 16];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk).map_err(io("bulk send"))?;
    }
    stream.shutdown(std::net::Shutdown::Write).map_err(io("shutdown"))?;
    drop(stream);
    sink.join().map_err(|_| IoError::Setup("TCP sink panicked".into()))?.map_err(io("TCP sink"))
}

/// A TCP bulk transfer client → server for `duration` over 40 ms RTT with 1 % loss on the data direction.
pub fn mathis_check(duration: Duration, seed: u64) -> Result<MathisCheck, IoError> {
    let profile = Profile::from_str(
        "name = \"mathis\"\n[uplink]\ndelay_ms = 20\nloss = { model = \"bernoulli\", p = 0.01 }\n[downlink]\ndelay_ms = 20\n",
        "selftest:mathis",
    )
    .map_err(|e| IoError::Setup(e.to_string()))?;
    let link = EmulatedLink::start(Link::from_profile(&profile, seed))?;
    let (bytes, elapsed) = tcp_bulk(link.client(), link.server(), duration)?;
    let congestion_control = link.congestion_control().to_string();
    link.stop()?;
    let rtt = Duration::from_millis(40);
    Ok(MathisCheck {
        rtt_ms: 40.0,
        loss: 0.01,
        congestion_control,
        predicted_mbit: mathis_bps(1448.0, rtt, 0.01) / 1e6,
        measured_mbit: bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
    })
}

/// The whole calibration: delay on `lan`-like 20 ms and `wan`-like 5 ms links, loss on lossy-2 and lossy-5, Mathis.
pub fn run(seed: u64, progress: impl Fn(&str)) -> Result<SelfTest, IoError> {
    let parse = |text: &str| Profile::from_str(text, "selftest").map_err(|e| IoError::Setup(e.to_string()));
    let mut delay = Vec::new();
    for ms in [5u64, 20] {
        progress(&format!("delay {ms} ms"));
        let profile = parse(&format!("name = \"delay-{ms}ms\"\n[link]\ndelay_ms = {ms}\n"))?;
        delay.push(delay_check(&format!("delay-{ms}ms"), &profile, Duration::from_millis(ms), seed, 2000)?);
    }
    let mut loss = Vec::new();
    for name in ["lossy-2", "lossy-5"] {
        progress(&format!("loss {name}"));
        let profile = Profile::builtin(name).map_err(|e| IoError::Setup(e.to_string()))?;
        loss.push(loss_check(name, &profile, seed)?);
    }
    progress("TCP bulk at 1 % loss, 40 ms RTT (Mathis)");
    let mathis = mathis_check(Duration::from_secs(10), seed)?;
    Ok(SelfTest { delay, loss, mathis })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_known_values() {
        // 20 successes in 1000 trials at z = 1.96: (0.01299, 0.03068), as tabulated by Newcombe (1998) style tools.
        let (lo, hi) = wilson_interval(20, 1000, 1.96);
        assert!((lo - 0.01299).abs() < 2e-4 && (hi - 0.03068).abs() < 2e-4, "({lo}, {hi})");
        assert_eq!(wilson_interval(0, 10, 1.96).0, 0.0);
    }

    #[test]
    fn mathis_formula() {
        // 1448 B, 40 ms, 1 %: 1448·8/0.04·1.22/0.1 = 3.533 Mbit/s.
        let bps = mathis_bps(1448.0, Duration::from_millis(40), 0.01);
        assert!((bps - 3_533_120.0).abs() < 1.0, "{bps}");
    }
}
