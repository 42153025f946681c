//! The link model's properties on virtual time: loss statistics, delay floor, rate bound, queue bound, ordering,
//! determinism, blackholes, traces and schedules. Seeds come from `TLAB_SEED` (see `common`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tlab_netem_model::{
    Bottleneck, DeliveryTrace, Direction, EventKind, Impairments, Jitter, JitterDistribution, Link, LinkEvent,
    ImpairmentsPatch, LossModel, Packet, Profile, Release, Target, TcpOnMove,
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
    drive_timed(link, arrivals, tick).into_iter().map(|(now, r)| (now, r.packet)).collect()
}

/// [`drive`], returning the model's whole [`Release`] of each packet.
fn drive_timed(link: &mut Link, arrivals: &[(Duration, Packet)], tick: Option<Duration>) -> Vec<(Duration, Release)> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let wake = link.next_wakeup().map(|w| match tick {
            Some(t) => t * (w.as_nanos().div_ceil(t.as_nanos()) as u32),
            None => w,
        });
        let Some(now) = arrivals.get(next).map(|a| a.0).into_iter().chain(wake).min() else { break };
        while link.poll_event(now).is_some() {}
        while let Some(r) = link.poll_release_timed(UP, now) {
            out.push((now, r));
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
    let due = LinkEvent { at: Duration::from_secs(5), kind: EventKind::AddressChange { tcp: TcpOnMove::Abort } };
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

/// Every stage on or off and in each of its forms: loss none / Bernoulli / Gilbert-Elliott, duplication and
/// corruption off or on, no bottleneck / a rate / a trace, bounded or unbounded queue, jitter of each distribution
/// with or without reordering, any fixed delay.
fn any_stages() -> impl Strategy<Value = Impairments> {
    let loss = prop_oneof![
        Just(LossModel::None),
        (0.0..0.3f64).prop_map(|p| LossModel::Bernoulli { p }),
        (0.0..0.5f64, 0.0..=1.0f64, 0.0..0.1f64, 0.0..=1.0f64)
            .prop_map(|(p, r, loss_good, loss_bad)| LossModel::GilbertElliott { p, r, loss_good, loss_bad }),
    ];
    let bottleneck = prop_oneof![
        Just(Bottleneck::Unlimited),
        (1_000_000..100_000_000u64).prop_map(|bits_per_second| Bottleneck::Rate { bits_per_second }),
        (1..50u32).prop_map(|mbit| Bottleneck::Trace(Arc::new(DeliveryTrace::constant_rate(f64::from(mbit), 100)))),
    ];
    let sometimes = || prop_oneof![Just(0.0), 0.0..0.2f64];
    (0..50_000u64, jitter(), loss, sometimes(), sometimes(), bottleneck, prop::option::of(1500..50_000u64)).prop_map(
        |(delay_us, jitter, loss, duplicate, corrupt, bottleneck, queue_bytes)| Impairments {
            delay: Duration::from_micros(delay_us),
            jitter,
            loss,
            duplicate,
            corrupt,
            bottleneck,
            queue_bytes,
        },
    )
}

/// A patch that replaces every field with `i`'s.
fn replace_all(i: &Impairments) -> ImpairmentsPatch {
    ImpairmentsPatch {
        delay: Some(i.delay),
        jitter: Some(i.jitter),
        loss: Some(i.loss),
        duplicate: Some(i.duplicate),
        corrupt: Some(i.corrupt),
        bottleneck: Some(i.bottleneck.clone()),
        queue_bytes: Some(i.queue_bytes),
    }
}

/// A packet of `len` bytes (≥ 12) carrying `id` three times, so that one corrupted byte cannot change it.
fn tagged(id: u32, len: usize) -> Packet {
    let mut p = vec![0; len.max(12)];
    for copy in p[..12].chunks_exact_mut(4) {
        copy.copy_from_slice(&id.to_be_bytes());
    }
    p
}

/// The id of a [`tagged`] packet: the copy at least two of its three copies agree on.
fn tagged_id(p: &[u8]) -> u32 {
    let [a, b, c] = [0, 4, 8].map(|at| u32::from_be_bytes(p[at..at + 4].try_into().unwrap()));
    if a == b || a == c { a } else { b }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_packet_leaves_before_its_arrival_plus_its_fixed_delay_whatever_the_stages(
        first in any_stages(),
        change in prop::option::of((0..600_000u64, any_stages())),
        hole in prop::option::of((0..600u64, 1..200u64)),
        arrivals in traffic(),
        seed: u64,
    ) {
        // Tagged so that a corrupted byte cannot hide which packet it was.
        let arrivals: Vec<(Duration, Packet)> =
            arrivals.iter().enumerate().map(|(i, (t, p))| (*t, tagged(i as u32, p.len()))).collect();
        let make = || {
            let mut link = uplink(first.clone(), seed);
            if let Some((at_us, next)) = &change {
                link.schedule_change(Duration::from_micros(*at_us), Target::Uplink, replace_all(next));
            }
            if let Some((start, len)) = hole {
                link.add_blackhole(Target::Uplink, ms(start)..ms(start + len));
            }
            link
        };
        // The fixed delay in force from a packet's arrival on: the first one, the second, or the smaller of both.
        let floor = |arrived: Duration| match &change {
            Some((at_us, next)) if arrived >= Duration::from_micros(*at_us) => next.delay,
            Some((_, next)) => first.delay.min(next.delay),
            None => first.delay,
        };
        let exact = drive_timed(&mut make(), &arrivals, None);
        for (now, r) in &exact {
            let sent = arrivals[tagged_id(&r.packet) as usize].0;
            prop_assert_eq!(r.arrived, sent);
            prop_assert!(r.departs <= *now, "released at {:?} before its due time {:?}", now, r.departs);
            prop_assert!(r.departs >= sent + floor(sent), "left after {:?} < {:?}", r.departs - sent, floor(sent));
            prop_assert!(r.departs >= r.arrived + r.min_delay);
        }
        // A coarse 1 ms timer releases the same packets in the same order, each no earlier than its due time.
        let coarse = drive(&mut make(), &arrivals, Some(ms(1)));
        prop_assert_eq!(coarse.len(), exact.len());
        for ((tc, pc), (te, re)) in coarse.iter().zip(&exact) {
            prop_assert_eq!(pc, &re.packet);
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

/// The p99 of a jitter's extra delay, from each distribution's closed form (see [`JitterDistribution`]).
fn configured_p99(jitter: &Jitter) -> f64 {
    let mean = jitter.mean.as_secs_f64();
    match jitter.distribution {
        JitterDistribution::Uniform => 0.99 * 2.0 * mean,
        // |N(0, σ)| exceeds 2.5758·σ with probability 1 %.
        JitterDistribution::Normal => 2.575_829 * mean * (std::f64::consts::PI / 2.0).sqrt(),
        // Lomax, shape 3, scale 2·mean: P(X > x) = (1 + x / scale)^-3.
        JitterDistribution::Pareto => 2.0 * mean * (100f64.cbrt() - 1.0),
    }
}

/// Mean and p99 (s) of the extra delay of `n` Poisson arrivals at `rate` per second through an order-keeping
/// jittered uplink; asserts that no packet overtakes another.
fn order_kept_extra_delay(jitter: Jitter, rate: f64, n: u32, seed: u64) -> (f64, f64) {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let delay = ms(10);
    let mut link = uplink(Impairments { delay, jitter: Some(jitter), ..Default::default() }, seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let gaps = rand_distr::Exp::new(rate).unwrap();
    // 0.1 µs buckets up to 100 ms: a p99 without keeping millions of samples.
    const BUCKETS: usize = 1_000_000;
    let mut buckets = vec![0u32; BUCKETS];
    let (mut sum, mut released, mut t) = (0.0, 0u32, Duration::ZERO);
    let mut collect = |link: &mut Link, now: Duration, released: &mut u32| {
        while let Some(r) = link.poll_release_timed(UP, now) {
            assert_eq!(id(&r.packet), *released, "reordered");
            *released += 1;
            let extra = r.departs - r.arrived - delay;
            sum += extra.as_secs_f64();
            buckets[((extra.as_nanos() / 100) as usize).min(BUCKETS - 1)] += 1;
        }
    };
    for i in 0..n {
        t += Duration::from_secs_f64(gaps.sample(&mut rng));
        collect(&mut link, t, &mut released);
        link.push(UP, packet(i, 100), t);
    }
    collect(&mut link, Duration::MAX, &mut released);
    assert_eq!(released, n);
    let mut below = 0u64;
    let p99_bucket = buckets.iter().position(|&c| {
        below += u64::from(c);
        below * 100 >= u64::from(n) * 99
    });
    (sum / f64::from(n), p99_bucket.unwrap() as f64 * 1e-7)
}

#[test]
fn order_keeping_jitter_has_the_configured_mean_and_p99_at_10_and_10000_packets_per_second() {
    let seed = common::seed();
    // A 0.1 ms mean gives slots of 2 ms (6 ms for Pareto): at 10/s packets are many slots apart, at 10,000/s 20
    // (60) share a slot, and independent draws kept in order would add 100 % to the mean. Each run covers
    // ≥ 100,000 slots or packets, so that the p99 is estimated to within ≈ 1.3 % (for Pareto's tail).
    let runs = [(10.0, 200_000), (10_000.0, 6_000_000)];
    std::thread::scope(|scope| {
        for distribution in [JitterDistribution::Uniform, JitterDistribution::Normal, JitterDistribution::Pareto] {
            scope.spawn(move || {
                let jitter = Jitter { mean: Duration::from_micros(100), distribution, reorder: false };
                let (mean, p99) = (jitter.mean.as_secs_f64(), configured_p99(&jitter));
                for (rate, n) in runs {
                    let (measured_mean, measured_p99) = order_kept_extra_delay(jitter, rate, n, seed);
                    eprintln!("{distribution:?} at {rate}/s: mean {measured_mean:.6} s (configured {mean}), p99 {measured_p99:.6} s (configured {p99:.6})");
                    assert!((measured_mean / mean - 1.0).abs() <= 0.05, "{distribution:?} at {rate}/s: mean {measured_mean}");
                    assert!((measured_p99 / p99 - 1.0).abs() <= 0.05, "{distribution:?} at {rate}/s: p99 {measured_p99} vs {p99}");
                }
            });
        }
    });
}
