//! The calibration's loss check through the TUN backend (needs root): it compares against the loss the profile
//! configures, whatever the profile is called.

use tlab_netem::Profile;
use tlab_netem::selftest::loss_check;

#[test]
fn loss_check_reads_the_configured_loss_from_the_profile() {
    assert!(nix::unistd::Uid::effective().is_root(), "the TUN backend test needs root (CI runs as root)");
    // Uplink only, as the probes go: a downlink figure must not leak into the check.
    let text = "name = \"loss-3\"\n[uplink]\nloss = { model = \"bernoulli\", p = 0.03 }\n[downlink]\nloss = { model = \"bernoulli\", p = 0.2 }\n";
    let profile = Profile::from_str(text, "inline loss profile").unwrap();
    let check = loss_check("loss-3", &profile, 1).unwrap();
    assert_eq!(check.configured, 0.03, "{check:?}");
    let (low, high) = check.ci999;
    assert!(low <= 0.03 && 0.03 <= high, "measured {:.4} (99.9 % CI {low:.4}–{high:.4}) at 3 % loss", check.measured);
}
