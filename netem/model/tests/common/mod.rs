//! Seeds for randomized tests: `TLAB_SEED` if set, else a fixed default; printed (the harness shows it on failure).

/// The test seed, printed so that a failing run can be replayed with `TLAB_SEED=<seed>`.
pub fn seed() -> u64 {
    let seed = std::env::var("TLAB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7_1ab);
    eprintln!("TLAB_SEED={seed}");
    seed
}
