//! The link model's properties on virtual time: loss statistics, delay floor, rate bound, queue bound, ordering,
//! determinism, blackholes, traces and schedules. Seeds come from `TLAB_SEED` (see `common`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tlab_netem_model::{
    Bottleneck, DeliveryTrace, Direction, EventKind, Impairments, Jitter, JitterDistribution, Link, LinkEvent,
    LossModel, Packet, Profile, Target,
};

const UP: Direction = Direction::Uplink;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A packet of `len` bytes (≥ 4) carrying `id` in its first four bytes.
fn packet(id: u32, len: usize) -> Packet {
    let mut p = vec![0; len.max(4)];
    p[..4].copy_from_slice(&id.to_be_bytes());
    p
}

fn id(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[..4].try_into().unwrap())
}

/// A link impairing only the uplink.
fn uplink(config: Impairments, seed: u64) -> Link {
    Link::new(config, Impairments::default(), seed)
}

/// Drives the uplink on virtual time like an I/O loop would: wakes at each arrival and at `next_wakeup` (rounded
/// up to a multiple of `tick` when given, as a coarse timer would), releasing all due packets before pushing
/// arrivals. Returns each released packet with the time it was released.
fn drive(link: &mut Link, arrivals: &[(Duration, Packet)], tick: Option<Duration>) -> Vec<(Duration, Packet)> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let wake = link.next_wakeup().map(|w| match tick {
            Some(t) => t * (w.as_nanos().div_ceil(t.as_nanos()) as u32),
            None => w,
        });
        let Some(now) = arrivals.get(next).map(|a| a.0).into_iter().chain(wake).min() else { break };
        while link.poll_event(now).is_some() {}
        while let Some(p) = link.poll_release(UP, now) {
            out.push((now, p));
        }
        while let Some((at, p)) = arrivals.get(next).filter(|a| a.0 <= now) {
            link.push(UP, p.clone(), *at);
            next += 1;
        }
    }
    out
}

/// `n` packets of `len` bytes, one every `gap`, starting at 0.
fn evenly(n: u32, gap: Duration, len: usize) -> Vec<(Duration, Packet)> {
    (0..n).map(|i| (gap * i, packet(i, len))).collect()
}

fn config() -> ProptestConfig {
    let rng_seed = RngSeed::Fixed(common::seed());
    ProptestConfig { cases: 48, rng_seed, failure_persistence: None, ..Default::default() }
}

#[test]
fn bernoulli_loss_is_inside_the_binomial_999_interval() {
    let seed = common::seed();
    let (n, p) = (1_000_000u64, 0.02);
    let mut link = uplink(Impairments { loss: LossModel::Bernoulli { p }, ..Default::default() }, seed);
    for i in 0..n {
        link.push(UP, vec![0], Duration::from_nanos(i));
        while link.poll_release(UP, Duration::from_nanos(i)).is_some() {}
    }
    let c = link.pipeline(UP).counters();
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    let lost = c.dropped_loss.packets as f64;
    assert!((lost - mean).abs() <= 3.2905 * sd, "lost {lost}, expected {mean} ± {}", 3.2905 * sd);
    assert_eq!(c.input.packets, c.output.packets + c.dropped_loss.packets);
}

#[test]
fn gilbert_elliott_matches_its_stationary_loss_and_is_bursty() {
    let seed = common::seed();
    let model = LossModel::GilbertElliott { p: 0.01, r: 0.25, loss_good: 0.0, loss_bad: 0.5 };
    let mut link = uplink(Impairments { loss: model, ..Default::default() }, seed);
    let n = 1_000_000u32;
    let (mut lost, mut lost_after_loss, mut prev_lost) = (0u32, 0u32, false);
    for i in 0..n {
        let t = Duration::from_nanos(u64::from(i));
        link.push(UP, packet(i, 4), t);
        let was_lost = link.poll_release(UP, t).is_none();
        lost += u32::from(was_lost);
        lost_after_loss += u32::from(was_lost && prev_lost);
        prev_lost = was_lost;
    }
    let measured = f64::from(lost) / f64::from(n);
    let expected = model.mean_loss(); // 0.005 / 0.26
    // Losses are correlated, so the estimate's s.d. is ≈1.4 % of the mean here; allow 6 %.
    assert!((measured - expected).abs() <= 0.06 * expected, "measured {measured}, stationary {expected}");
    // Bursty: a loss makes the next loss far likelier than the mean (≈ 0.75·0.5 vs 0.019).
    let conditional = f64::from(lost_after_loss) / f64::from(lost);
    assert!(conditional > 10.0 * expected, "P(loss | loss) = {conditional}");
}

#[test]
fn jitter_distributions_have_the_configured_mean_and_respect_the_floor() {
    let seed = common::seed();
    for distribution in [JitterDistribution::Uniform, JitterDistribution::Normal, JitterDistribution::Pareto] {
        let jitter = Jitter { mean: ms(4), distribution, reorder: true };
        let mut link = uplink(Impairments { delay: ms(10), jitter: Some(jitter), ..Default::default() }, seed);
        let n = 100_000u32;
        for i in 0..n {
            link.push(UP, packet(i, 4), Duration::ZERO);
        }
        let out = drive(&mut link, &[], None);
        assert_eq!(out.len(), n as usize);
        assert!(out.iter().all(|(t, _)| *t >= ms(10)), "{distribution:?} released below the floor");
        let mean_extra = out.iter().map(|(t, _)| t.as_secs_f64() - 0.010).sum::<f64>() / f64::from(n);
        assert!((mean_extra - 0.004).abs() < 0.0002, "{distribution:?}: mean extra {mean_extra}");
    }
}

#[test]
fn delivery_follows_the_trace_including_its_wrap() {
    let Bottleneck::Trace(trace) = Profile::builtin("lte").unwrap().downlink.bottleneck else {
        panic!("the lte downlink has a trace")
    };
    let n = trace.timestamps_ms().len() as u32 + 5000; // well into the second cycle
    let mut link = uplink(Impairments { bottleneck: Bottleneck::Trace(trace.clone()), ..Default::default() }, 1);
    let out = drive(&mut link, &evenly(n, Duration::ZERO, 1500), None);
    assert_eq!(out.len(), n as usize);
    for (i, (t, p)) in out.iter().enumerate() {
        assert_eq!((*t, id(p)), (trace.opportunity(i as u64), i as u32), "packet {i}");
    }
    // Three 500-byte packets share an opportunity.
    let mut link = uplink(Impairments { bottleneck: Bottleneck::Trace(trace.clone()), ..Default::default() }, 1);
    let out = drive(&mut link, &evenly(30, Duration::ZERO, 500), None);
    for (i, (t, _)) in out.iter().enumerate() {
        assert_eq!(*t, trace.opportunity(i as u64 / 3));
    }
}

#[test]
fn constant_trace_delivers_its_rate() {
    let trace = Arc::new(DeliveryTrace::constant_rate(12.0, 1000));
    let mut link = uplink(Impairments { bottleneck: Bottleneck::Trace(trace), ..Default::default() }, 1);
    // Offer 24 Mbit/s for 2 s: half of it fits.
    let out = drive(&mut link, &evenly(4000, Duration::from_micros(500), 1500), None);
    let in_two_seconds = out.iter().filter(|(t, _)| *t <= Duration::from_secs(2)).count();
    assert_eq!(in_two_seconds, 2000);
}

#[test]
fn blackhole_drops_exactly_inside_its_window() {
    let profile = Profile::builtin("blackhole-2s").unwrap();
    let mut link = Link::from_profile(&profile, common::seed());
    let arrivals = evenly(10_000, ms(1), 100); // 0 ‥ 9.999 s
    let out = drive(&mut link, &arrivals, None);
    let delivered: Vec<u32> = out.iter().map(|(_, p)| id(p)).collect();
    let expected: Vec<u32> = (0..10_000).filter(|i| !(5000..7000).contains(i)).collect();
    assert_eq!(delivered, expected);
    assert_eq!(link.pipeline(UP).counters().dropped_blackhole.packets, 2000);
    assert!(out.iter().all(|(t, p)| *t == ms(u64::from(id(p)) + 20)));
}

#[test]
fn schedule_changes_take_effect_at_their_time_however_late_the_loop_polls() {
    let text = r#"
        name = "phases"
        [link]
        delay_ms = 20
        [[schedule]]
        at_s = 2
        set = { delay_ms = 50 }
        [[schedule]]
        at_s = 5
        direction = "uplink"
        set = { loss = { model = "bernoulli", p = 1.0 } }
        [[schedule]]
        at_s = 3
        event = "nat-rebind"
    "#;
    let profile = Profile::from_str(text, "phases.toml").unwrap();
    let mut link = Link::from_profile(&profile, common::seed());
    // Push everything before polling once: the changes must still apply at exactly 2 s and 5 s.
    for (at, p) in evenly(700, ms(10), 100) {
        link.push(UP, p.clone(), at);
        link.push(Direction::Downlink, p, at);
    }
    let end = Duration::from_secs(10);
    let up: Vec<u32> = std::iter::from_fn(|| link.poll_release(UP, end)).map(|p| id(&p)).collect();
    assert_eq!(up, (0..500).collect::<Vec<_>>(), "uplink loses everything from 5 s on");
    assert_eq!(std::iter::from_fn(|| link.poll_release(Direction::Downlink, end)).count(), 700);

    // Release times with an exactly timed loop: 20 ms before 2 s, 50 ms after.
    let mut link = Link::from_profile(&profile, common::seed());
    assert_eq!(link.next_wakeup(), Some(Duration::from_secs(3)), "the event is a wakeup");
    let out = drive(&mut link, &evenly(400, ms(10), 100), None);
    for (t, p) in &out {
        let sent = ms(10 * u64::from(id(p)));
        let delay = if sent < Duration::from_secs(2) { ms(20) } else { ms(50) };
        assert_eq!(*t - sent, delay, "packet sent at {sent:?}");
    }
}

#[test]
fn events_are_reported_once_when_due() {
    let mut link = Link::from_profile(&Profile::builtin("address-change").unwrap(), 0);
    assert_eq!(link.next_wakeup(), Some(Duration::from_secs(5)));
    assert_eq!(link.poll_event(ms(4999)), None);
    let due = LinkEvent { at: Duration::from_secs(5), kind: EventKind::AddressChange };
    assert_eq!(link.poll_event(ms(5300)), Some(due));
    assert_eq!(link.poll_event(ms(6000)), None);
    assert_eq!(link.next_wakeup(), None);
}

#[test]
fn next_wakeup_is_a_lower_bound_that_reaches_the_release_time() {
    let bottleneck = Bottleneck::Rate { bits_per_second: 12_000_000 };
    let imp = Impairments { delay: ms(20), bottleneck, ..Default::default() };
    let mut link = uplink(imp, 0);
    link.push(UP, packet(0, 1500), ms(3));
    // First the end of the 1 ms serialisation (the delay is only drawn then, under the settings of that time)…
    assert_eq!(link.next_wakeup(), Some(ms(4)));
    assert_eq!(link.poll_release(UP, ms(4)), None);
    // …then the release itself.
    assert_eq!(link.next_wakeup(), Some(ms(24)));
    assert_eq!(link.poll_release(UP, ms(23)), None);
    assert_eq!(link.poll_release(UP, ms(24)).map(|p| id(&p)), Some(0));
    assert_eq!(link.next_wakeup(), None);
}

#[test]
fn runtime_set_impairments_changes_only_later_packets() {
    let mut link = uplink(Impairments { delay: ms(100), ..Default::default() }, 0);
    link.push(UP, packet(1, 10), ms(0));
    link.set_impairments(ms(10), Target::Uplink, Impairments { delay: ms(1), ..Default::default() });
    link.push(UP, packet(2, 10), ms(10));
    // No reordering: the second packet waits for the first.
    assert_eq!(link.poll_release(UP, ms(99)), None);
    let out: Vec<u32> = std::iter::from_fn(|| link.poll_release(UP, ms(100))).map(|p| id(&p)).collect();
    assert_eq!(out, [1, 2]);
}

/// Arbitrary traffic: gaps up to 3 ms (often 0, i.e. bursts) and sizes 40–1500 bytes.
fn traffic() -> impl Strategy<Value = Vec<(Duration, Packet)>> {
    prop::collection::vec((prop_oneof![Just(0u64), 0..3_000u64], 40..=1500usize), 1..300).prop_map(|v| {
        let mut t = Duration::ZERO;
        v.into_iter()
            .enumerate()
            .map(|(i, (gap_us, len))| {
                t += Duration::from_micros(gap_us);
                (t, packet(i as u32, len))
            })
            .collect()
    })
}

fn jitter() -> impl Strategy<Value = Option<Jitter>> {
    let dist = prop_oneof![
        Just(JitterDistribution::Uniform),
        Just(JitterDistribution::Normal),
        Just(JitterDistribution::Pareto)
    ];
    prop::option::of((1..20_000u64, dist, any::<bool>()).prop_map(|(us, distribution, reorder)| Jitter {
        mean: Duration::from_micros(us),
        distribution,
        reorder,
    }))
}

fn impairments() -> impl Strategy<Value = Impairments> {
    (0..50_000u64, jitter(), 0.0..0.3f64, 0.0..0.2f64, 0.0..0.2f64, prop::option::of(1_000_000..100_000_000u64))
        .prop_map(|(delay_us, jitter, loss, duplicate, corrupt, rate)| Impairments {
            delay: Duration::from_micros(delay_us),
            jitter,
            loss: LossModel::Bernoulli { p: loss },
            duplicate,
            corrupt,
            bottleneck: rate.map_or(Bottleneck::Unlimited, |bits_per_second| Bottleneck::Rate { bits_per_second }),
            queue_bytes: Some(30_000),
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn never_below_the_delay_floor_and_never_early(mut imp in impairments(), arrivals in traffic(), seed: u64) {
        imp.corrupt = 0.0; // packets are identified by their first bytes
        let exact = drive(&mut uplink(imp.clone(), seed), &arrivals, None);
        for (t, p) in &exact {
            let sent = arrivals[id(p) as usize].0;
            prop_assert!(*t >= sent + imp.delay, "packet {} took {:?} < {:?}", id(p), *t - sent, imp.delay);
        }
        // A coarse 1 ms timer releases the same packets in the same order, each no earlier than its due time.
        let coarse = drive(&mut uplink(imp, seed), &arrivals, Some(ms(1)));
        prop_assert_eq!(coarse.len(), exact.len());
        for ((tc, pc), (te, pe)) in coarse.iter().zip(&exact) {
            prop_assert_eq!(pc, pe);
            prop_assert!(tc >= te && *tc - *te < ms(1));
        }
    }

    #[test]
    fn rate_is_never_exceeded_and_the_queue_never_overflows(
        arrivals in traffic(), mbit in 1..100u64, queue in 1500..20_000u64, seed: u64
    ) {
        let bits_per_second = mbit * 1_000_000;
        let imp = Impairments {
            bottleneck: Bottleneck::Rate { bits_per_second },
            queue_bytes: Some(queue),
            ..Default::default()
        };
        // Poll only at arrivals (a lazy loop) and check the queue bound after every push…
        let mut link = uplink(imp, seed);
        let mut polled = 0;
        for (at, p) in &arrivals {
            polled += std::iter::from_fn(|| link.poll_release(UP, *at)).count();
            link.push(UP, p.clone(), *at);
            prop_assert!(link.pipeline(UP).queued_bytes() <= queue);
        }
        polled += std::iter::from_fn(|| link.poll_release(UP, Duration::MAX)).count();
        // …then check every window of an exactly timed run, which drops the same packets.
        let released = exact_release_times(&arrivals, bits_per_second, queue);
        prop_assert_eq!(released.len(), polled);
        for i in 0..released.len() {
            let mut bytes = 0u128;
            for (tj, len) in &released[i..] {
                bytes += *len as u128;
                let window = (*tj - released[i].0).as_nanos();
                prop_assert!(bytes * 8 * 1_000_000_000 <= bits_per_second as u128 * window + 1500 * 8 * 1_000_000_000,
                    "{} bytes in {} ns", bytes, window);
            }
        }
    }

    #[test]
    fn no_reordering_unless_allowed(mut imp in impairments(), arrivals in traffic(), seed: u64) {
        imp.corrupt = 0.0; // packets are identified by their first bytes
        if let Some(jitter) = &mut imp.jitter {
            jitter.reorder = false;
        }
        let out = drive(&mut uplink(imp, seed), &arrivals, None);
        let ids: Vec<u32> = out.iter().map(|(_, p)| id(p)).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] <= w[1]), "reordered: {:?}", ids);
    }

    #[test]
    fn same_seed_same_output_and_counters_balance(imp in impairments(), arrivals in traffic(), seed: u64) {
        let mut a = uplink(imp.clone(), seed);
        let mut b = uplink(imp, seed);
        let out_a = drive(&mut a, &arrivals, None);
        prop_assert_eq!(&out_a, &drive(&mut b, &arrivals, None));
        let c = a.pipeline(UP).counters();
        prop_assert_eq!(c, b.pipeline(UP).counters());
        prop_assert_eq!(c.output.packets, out_a.len() as u64);
        prop_assert_eq!(
            c.input.packets + c.duplicated.packets,
            c.output.packets + c.dropped_loss.packets + c.dropped_queue.packets + c.dropped_blackhole.packets
        );
        prop_assert_eq!(
            c.input.bytes + c.duplicated.bytes,
            c.output.bytes + c.dropped_loss.bytes + c.dropped_queue.bytes + c.dropped_blackhole.bytes
        );
    }
}

#[test]
fn jitter_that_may_reorder_does_reorder() {
    // Jitter with a 5 ms mean over packets 1 ms apart: without reordering each would wait for its predecessor.
    let jitter = Jitter { mean: ms(5), distribution: JitterDistribution::Uniform, reorder: true };
    let imp = Impairments { jitter: Some(jitter), ..Default::default() };
    let out = drive(&mut uplink(imp, common::seed()), &evenly(200, ms(1), 100), None);
    let ids: Vec<u32> = out.iter().map(|(_, p)| id(p)).collect();
    assert_eq!(ids.len(), 200);
    assert!(ids.windows(2).any(|w| w[0] > w[1]), "reordering allowed but never happened: {ids:?}");
}

/// Release times of a rate-limited drop-tail queue, driven exactly (for the window check above).
fn exact_release_times(arrivals: &[(Duration, Packet)], bits_per_second: u64, queue: u64) -> Vec<(Duration, usize)> {
    let bottleneck = Bottleneck::Rate { bits_per_second };
    let imp = Impairments { bottleneck, queue_bytes: Some(queue), ..Default::default() };
    drive(&mut uplink(imp, 0), arrivals, None).into_iter().map(|(t, p)| (t, p.len())).collect()
}
