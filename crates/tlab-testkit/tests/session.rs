//! The session protocol on virtual time: two `tlab_session::Session` machines through the simulated link of
//! `tlab_testkit::sim`. No sockets, no root; each scenario runs in milliseconds of real time. Randomized scenarios
//! read `TLAB_SEED` and print it.

use std::time::Duration;

use tlab_netem_model::{Impairments, LossModel};
use tlab_session::machine::SEND_WINDOW;
use tlab_session::reliable::ACK_EVERY;
use tlab_session::Timing;
use tlab_testkit::sim::{Pair, Report, Scenario};

fn assert_exact(report: &Report, messages: u64, context: &str) {
    assert!(report.failure.is_none(), "{context}: failed: {:?}", report.failure);
    assert!(report.closed, "{context}: never closed (virtual time {:?}, losses {:?})", report.elapsed, report.client_losses);
    let expected: Vec<u64> = (0..messages).collect();
    assert_eq!(report.server_delivered, expected, "{context}: server side not exactly once in order");
    assert_eq!(report.client_delivered, expected, "{context}: client side not exactly once in order");
}

#[test]
fn clean_link_delivers_exactly_once_on_one_connection() {
    let report = Pair::new(Scenario::clean(500, tlab_testkit::seed())).run();
    assert_exact(&report, 500, "clean");
    assert_eq!(report.connections, 1);
    assert!(report.client_losses.is_empty(), "{:?}", report.client_losses);
}

#[test]
fn resume_after_a_cut_at_every_point_of_two_ack_windows() {
    // Cut positions 1..=2·ACK_EVERY+2 cover: before the first ack, exactly at an ack boundary, just after it, and
    // the same one window later.
    let messages = 3 * ACK_EVERY;
    for cut in 1..=(2 * ACK_EVERY + 2) {
        let scenario = Scenario { cut_after: vec![cut], ..Scenario::clean(messages, 1) };
        let report = Pair::new(scenario).run();
        assert_exact(&report, messages, &format!("cut after {cut}"));
        assert_eq!(report.connections, 2, "cut after {cut}: one reconnect expected");
    }
}

#[test]
fn resume_survives_repeated_cuts_including_back_to_back() {
    let messages = 400;
    let scenario = Scenario { cut_after: vec![5, 6, 64, 65, 200, 399, 400], ..Scenario::clean(messages, 2) };
    let report = Pair::new(scenario).run();
    assert_exact(&report, messages, "repeated cuts");
    assert!(report.connections >= 6, "connections {}", report.connections);
}

#[test]
fn dead_peer_is_detected_after_dead_after_and_the_stream_resumes() {
    let timing = Timing { heartbeat_interval: Duration::from_millis(250), dead_after: Duration::from_secs(2) };
    let messages = 3000; // 3 s of traffic at 1 ms
    let blackhole = Duration::from_millis(1000)..Duration::from_millis(4000);
    let scenario = Scenario { timing, blackholes: vec![blackhole.clone()], ..Scenario::clean(messages, 3) };
    let report = Pair::new(scenario).run();
    assert_exact(&report, messages, "blackhole");
    let (first_loss, why) = report.client_losses.first().expect("the blackhole must be noticed").clone();
    assert!(why.contains("presumed dead"), "first loss: {why}");
    // The last message heard left before the blackhole began (10 ms one way); silence is declared after dead_after.
    assert!(
        first_loss >= blackhole.start + timing.dead_after - Duration::from_millis(20)
            && first_loss <= blackhole.start + timing.dead_after + Duration::from_millis(20),
        "dead peer declared at {first_loss:?}"
    );
    // Reconnect attempts inside the blackhole fail (their Open is dropped) and are retried until it ends.
    assert!(report.connections >= 2);
}

#[test]
fn silence_shorter_than_dead_after_costs_no_reconnect() {
    let messages = 2000;
    let scenario = Scenario {
        blackholes: vec![Duration::from_millis(500)..Duration::from_millis(1500)],
        ..Scenario::clean(messages, 4)
    };
    let report = Pair::new(scenario).run();
    // The dropped packets stall the simulated connection for good, so a reconnect happens anyway, but only once
    // the dead-peer timer expires: never before dead_after of silence.
    assert_exact(&report, messages, "short blackhole");
    for (at, _) in &report.client_losses {
        assert!(*at >= Duration::from_millis(500) + Timing::default().dead_after - Duration::from_millis(20), "lost at {at:?}");
    }
}

#[test]
fn duplicated_and_delayed_control_messages_change_nothing() {
    let seed = tlab_testkit::seed();
    let messages = 1000;
    let scenario = Scenario { duplicate_control: 0.5, cut_after: vec![333, 666], ..Scenario::clean(messages, seed) };
    let report = Pair::new(scenario).run();
    assert_exact(&report, messages, &format!("duplicated control, TLAB_SEED={seed}"));
}

#[test]
fn send_window_bounds_what_is_held_unacknowledged() {
    // A long blackhole while the client keeps sending as fast as it may: the window caps the retained messages.
    let messages = (SEND_WINDOW as u64) * 2;
    let scenario = Scenario {
        interval: Duration::from_micros(100),
        blackholes: vec![Duration::from_millis(50)..Duration::from_secs(5)],
        ..Scenario::clean(messages, 5)
    };
    let report = Pair::new(scenario).run();
    assert_exact(&report, messages, "window");
    assert_eq!(report.max_client_unacked, SEND_WINDOW, "the window must fill and never overflow");
}

#[test]
fn random_loss_and_jitter_still_deliver_exactly_once() {
    let seed = tlab_testkit::seed();
    let path = Impairments {
        delay: Duration::from_millis(20),
        loss: LossModel::Bernoulli { p: 0.002 },
        ..Impairments::default()
    };
    for run in 0..5 {
        let messages = 1500;
        let scenario = Scenario {
            uplink: path.clone(),
            downlink: path.clone(),
            timing: Timing { heartbeat_interval: Duration::from_millis(100), dead_after: Duration::from_millis(500) },
            ..Scenario::clean(messages, seed.wrapping_add(run))
        };
        let report = Pair::new(scenario).run();
        let context = format!("TLAB_SEED={seed} run {run}");
        assert_exact(&report, messages, &context);
        assert!(report.connections > 1, "{context}: 0.2 % loss over ~3,000 packets should break a connection");
    }
}
