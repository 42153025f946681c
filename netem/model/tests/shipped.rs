//! The shipped profiles and traces: every profile loads (from disk and embedded, identically), and every trace is
//! exactly what its documented generator produces. `TLAB_BLESS=1 cargo test -p tlab-netem-model --test shipped`
//! regenerates the trace files.

use std::path::{Path, PathBuf};

use tlab_netem_model::{Bottleneck, DeliveryTrace, Profile};

/// A folder of the `tlab-netem` crate, which holds the shipped profiles and traces this crate embeds.
fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(sub)
}

/// The shipped traces and the generator calls that produce them.
fn generated_traces() -> Vec<(&'static str, DeliveryTrace)> {
    vec![
        ("const-12mbit.trace", DeliveryTrace::constant_rate(12.0, 1000)),
        // LTE-like: a 100 ms-step random walk, 0.5 % of steps are outages (handovers).
        ("lte-down.trace", DeliveryTrace::cellular(1, 10_000, 5.0, 40.0, 100, 0.005)),
        ("lte-up.trace", DeliveryTrace::cellular(2, 10_000, 1.0, 10.0, 100, 0.005)),
    ]
}

#[test]
fn shipped_traces_match_their_generator() {
    let bless = std::env::var_os("TLAB_BLESS").is_some();
    for (name, trace) in generated_traces() {
        let path = dir("traces").join(name);
        if bless {
            std::fs::write(&path, trace.to_text()).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap();
        assert!(shipped == trace.to_text(), "{name} differs from its generator; rerun with TLAB_BLESS=1");
        assert_eq!(DeliveryTrace::parse(&shipped).unwrap(), trace);
    }
}

#[test]
fn every_shipped_profile_loads_from_disk_and_embedded() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir("profiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut builtin: Vec<String> = Profile::builtin_names().map(str::to_owned).collect();
    builtin.sort();
    assert_eq!(on_disk, builtin, "profiles/ and Profile::builtin_names() disagree");

    for name in Profile::builtin_names() {
        let embedded = Profile::builtin(name).unwrap_or_else(|e| panic!("{e}"));
        let file = Profile::load(dir("profiles").join(format!("{name}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(embedded.name, name);
        assert!(!embedded.description.is_empty(), "{name} has no description");
        assert_eq!(embedded.uplink, file.uplink);
        assert_eq!(embedded.downlink, file.downlink);
        assert_eq!(embedded.schedule, file.schedule);
    }
}

#[test]
fn shipped_profiles_say_what_their_names_promise() {
    use std::time::Duration;
    let lossy = Profile::builtin("lossy-5").unwrap();
    assert_eq!(lossy.uplink.loss.mean_loss(), 0.05);
    assert_eq!(lossy.downlink.delay, Duration::from_millis(20));
    let sat = Profile::builtin("satellite").unwrap();
    assert_eq!(sat.uplink.delay + sat.downlink.delay, Duration::from_millis(600));
    let lte = Profile::builtin("lte").unwrap();
    assert!(matches!(lte.downlink.bottleneck, Bottleneck::Trace(_)));
    let bursty = Profile::builtin("bursty").unwrap();
    assert!((bursty.uplink.loss.mean_loss() - 0.005 / 0.26).abs() < 1e-12);
    for name in ["blackhole-2s", "address-change", "nat-rebind"] {
        assert_eq!(Profile::builtin(name).unwrap().schedule.len(), 1, "{name}");
    }
}
