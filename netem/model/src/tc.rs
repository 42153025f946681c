//! The pure half of the kernel backend: one direction's [`Impairments`] as `tc` argument vectors for the egress of
//! a veth device. netem is the root qdisc (delay, jitter, loss, duplication, corruption); a rate becomes a `tbf`
//! child of it, which is also a FIFO — so packets keep their order. Jitter without reordering gets a `pfifo` child
//! for the same reason (netem's own queue sorts by send time, which reorders). A rate alone needs no netem at all:
//! a root `tbf` does it (and works on kernels without sch_netem).
//!
//! What does not map exactly, and how it is approximated: netem's jitter is symmetric around its delay, the model's
//! is an extra delay ≥ 0 with mean `m`; the mapping keeps the mean and the standard deviation of the extra delay
//! (uniform: `delay d+m m`; half-normal: `delay d+m 0.756·m distribution normal`; Lomax(3, 2m):
//! `delay d+m 1.732·m distribution pareto`), so a kernel packet may leave up to that much before `d`. Kernel jitter
//! kept in order by the `pfifo` waits behind the packet ahead, so unlike the model's order-keeping delay process
//! ([`crate::jitter`]) its added delay grows with the packet rate. An unbounded
//! queue (`queue_bytes` unset) becomes a `tbf` limit of one second at the rate. Delivery traces have no `tc`
//! equivalent: [`TcError::Trace`].

use std::time::Duration;

use crate::Direction;
use crate::impairments::{Bottleneck, Impairments, JitterDistribution, LossModel};

/// netem's queue in packets: large enough that it never drops on its own (the default of 1000 would, at 1 Gbit/s
/// with 20 ms delay); only the loss model and the `tbf` limit may drop.
pub const NETEM_LIMIT_PACKETS: u32 = 1_000_000;

/// Why impairments cannot be expressed with `tc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcError {
    /// A Mahimahi delivery trace has no qdisc equivalent.
    #[error("the {0:?} direction uses a delivery trace, which `tc` cannot express")]
    Trace(Direction),
    /// Timed schedule entries (changes, blackholes, events) are carried out by the TUN emulator only.
    #[error("the profile has a schedule, which the kernel backend does not carry out")]
    Schedule,
}

/// The `tc` argument vectors (program name excluded) that make `dev` impose `impairments` on what it sends, in the
/// order they must run. A perfect link gives no command.
pub fn tc_commands(dev: &str, direction: Direction, impairments: &Impairments) -> Result<Vec<Vec<String>>, TcError> {
    let rate = match &impairments.bottleneck {
        Bottleneck::Unlimited => None,
        Bottleneck::Rate { bits_per_second } => Some(*bits_per_second),
        Bottleneck::Trace(_) => return Err(TcError::Trace(direction)),
    };
    let netem = netem_args(impairments);
    let words = |text: String| text.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut commands = Vec::new();
    let tbf_parent = if netem.is_empty() { "root handle 1:".to_string() } else { "parent 1:1 handle 10:".to_string() };
    if !netem.is_empty() {
        commands.push(words(format!("qdisc add dev {dev} root handle 1: netem limit {NETEM_LIMIT_PACKETS} {netem}")));
    }
    match rate {
        Some(bits) => {
            let bytes_per_second = bits / 8;
            // One millisecond of traffic, but at least two full frames so a packet always fits.
            let burst = (bytes_per_second / 1000).max(3028);
            let limit = impairments.queue_bytes.unwrap_or(bytes_per_second).max(burst);
            commands.push(words(format!("qdisc add dev {dev} {tbf_parent} tbf rate {} burst {burst} limit {limit}", rate_arg(bits))));
        }
        None if impairments.jitter.is_some_and(|j| !j.reorder) => {
            commands.push(words(format!("qdisc add dev {dev} parent 1:1 handle 10: pfifo limit {NETEM_LIMIT_PACKETS}")));
        }
        None => {}
    }
    Ok(commands)
}

/// The netem options after `limit`, or an empty string when netem has nothing to do.
fn netem_args(i: &Impairments) -> String {
    let mut args = Vec::new();
    match i.jitter {
        Some(j) => {
            let m = j.mean.as_secs_f64();
            let (spread, distribution) = match j.distribution {
                JitterDistribution::Uniform => (m, ""),
                JitterDistribution::Normal => (m * (std::f64::consts::PI / 2.0 - 1.0).sqrt(), " distribution normal"),
                JitterDistribution::Pareto => (m * 3f64.sqrt(), " distribution pareto"),
            };
            let delay = i.delay + j.mean;
            args.push(format!("delay {} {}{distribution}", time_arg(delay), time_arg(Duration::from_secs_f64(spread))));
        }
        None if !i.delay.is_zero() => args.push(format!("delay {}", time_arg(i.delay))),
        None => {}
    }
    match i.loss {
        LossModel::None => {}
        LossModel::Bernoulli { p } => args.push(format!("loss random {}", percent(p))),
        // netem's order is p, r, 1-h (loss in Bad), 1-k (loss in Good).
        LossModel::GilbertElliott { p, r, loss_good, loss_bad } => args.push(format!(
            "loss gemodel {} {} {} {}",
            percent(p),
            percent(r),
            percent(loss_bad),
            percent(loss_good)
        )),
    }
    if i.duplicate > 0.0 {
        args.push(format!("duplicate {}", percent(i.duplicate)));
    }
    if i.corrupt > 0.0 {
        args.push(format!("corrupt {}", percent(i.corrupt)));
    }
    args.join(" ")
}

/// A duration in whole microseconds (`20ms` when it is whole milliseconds) — tc's time resolution.
fn time_arg(d: Duration) -> String {
    let us = (d.as_nanos() as f64 / 1000.0).round() as u64;
    if us % 1000 == 0 { format!("{}ms", us / 1000) } else { format!("{us}us") }
}

/// A rate in tc's decimal units (`mbit` = 10⁶ bit/s).
fn rate_arg(bits: u64) -> String {
    match bits {
        b if b % 1_000_000 == 0 => format!("{}mbit", b / 1_000_000),
        b if b % 1000 == 0 => format!("{}kbit", b / 1000),
        b => format!("{b}bit"),
    }
}

/// A probability as a percentage with at most six decimals and no trailing zeros (`0.005` → `0.5%`).
fn percent(p: f64) -> String {
    let text = format!("{:.6}", p * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;

    fn golden(profile: &str, direction: Direction) -> Vec<String> {
        let p = Profile::builtin(profile).unwrap();
        let impairments = match direction {
            Direction::Uplink => &p.uplink,
            Direction::Downlink => &p.downlink,
        };
        tc_commands("veth0", direction, impairments).unwrap().into_iter().map(|args| args.join(" ")).collect()
    }

    #[test]
    fn clean_needs_no_qdisc() {
        assert!(golden("clean", Direction::Uplink).is_empty());
    }

    #[test]
    fn lossy_and_bursty_map_to_netem_loss() {
        assert_eq!(
            golden("lossy-2", Direction::Uplink),
            ["qdisc add dev veth0 root handle 1: netem limit 1000000 delay 20ms loss random 2%"]
        );
        assert_eq!(
            golden("bursty", Direction::Downlink),
            ["qdisc add dev veth0 root handle 1: netem limit 1000000 delay 20ms loss gemodel 1% 25% 50% 0%"]
        );
    }

    #[test]
    fn rate_becomes_a_tbf_child_of_netem() {
        assert_eq!(
            golden("wan-50ms", Direction::Uplink),
            [
                "qdisc add dev veth0 root handle 1: netem limit 1000000 delay 26ms 756us distribution normal",
                "qdisc add dev veth0 parent 1:1 handle 10: tbf rate 100mbit burst 12500 limit 625000",
            ]
        );
        assert_eq!(
            golden("3g", Direction::Uplink),
            [
                "qdisc add dev veth0 root handle 1: netem limit 1000000 delay 85ms 7555us distribution normal loss random 0.5%",
                "qdisc add dev veth0 parent 1:1 handle 10: tbf rate 500kbit burst 3028 limit 32000",
            ]
        );
        assert_eq!(
            golden("lan", Direction::Downlink),
            [
                "qdisc add dev veth0 root handle 1: netem limit 1000000 delay 250us",
                "qdisc add dev veth0 parent 1:1 handle 10: tbf rate 1000mbit burst 125000 limit 1000000",
            ]
        );
    }

    #[test]
    fn jitter_keeps_order_unless_reordering_is_allowed() {
        assert_eq!(
            golden("jittery-reorder", Direction::Uplink),
            ["qdisc add dev veth0 root handle 1: netem limit 1000000 delay 25ms 3778us distribution normal"]
        );
        let satellite = golden("satellite", Direction::Downlink);
        assert_eq!(
            satellite,
            [
                "qdisc add dev veth0 root handle 1: netem limit 1000000 delay 302ms 2ms loss random 0.1%",
                "qdisc add dev veth0 parent 1:1 handle 10: tbf rate 25mbit burst 3125 limit 1875000",
            ]
        );
        let jitter_only = Impairments {
            jitter: Some(crate::Jitter { mean: Duration::from_millis(4), distribution: JitterDistribution::Pareto, reorder: false }),
            duplicate: 0.01,
            corrupt: 0.001,
            ..Default::default()
        };
        assert_eq!(
            tc_commands("v", Direction::Uplink, &jitter_only).unwrap(),
            [
                "qdisc add dev v root handle 1: netem limit 1000000 delay 4ms 6928us distribution pareto duplicate 1% corrupt 0.1%",
                "qdisc add dev v parent 1:1 handle 10: pfifo limit 1000000",
            ]
            .map(|c| c.split(' ').map(str::to_owned).collect::<Vec<_>>())
        );
    }

    #[test]
    fn a_rate_alone_is_a_root_tbf_and_an_unbounded_queue_holds_one_second() {
        let rate_only = Impairments { bottleneck: Bottleneck::Rate { bits_per_second: 12_345 }, ..Default::default() };
        assert_eq!(
            tc_commands("v", Direction::Downlink, &rate_only).unwrap(),
            [["qdisc", "add", "dev", "v", "root", "handle", "1:", "tbf", "rate", "12345bit", "burst", "3028", "limit", "3028"]]
        );
    }

    #[test]
    fn traces_and_schedules_are_not_expressible() {
        let lte = Profile::builtin("lte").unwrap();
        assert_eq!(tc_commands("v", Direction::Downlink, &lte.downlink), Err(TcError::Trace(Direction::Downlink)));
        assert!(TcError::Trace(Direction::Uplink).to_string().contains("Uplink direction uses a delivery trace"));
    }
}
