//! Ordering that can fail (issue 8, item 7; needs root): the shipped reorder-dup profile really reorders datagrams
//! (`wt-datagram` sees order violations), while reliable ordered modes through the same link deliver every message
//! once and in order. The link's seed comes from TLAB_SEED (printed) when set.

mod common;

use tlab_results::RunStatus;

#[test]
fn reorder_dup_profile_reorders_datagrams_and_reliable_modes_keep_order() {
    let seed = common::seed(7);
    let text = format!(
        "name = \"ordering-test\"\nseed = {seed}\nrepetitions = 1\ntransports = [\"wt-datagram\", \"ws-mux\", \"quic\"]\n\
         profiles = [\"profiles/reorder-dup.toml\"]\nbackend = \"tun\"\ncell_timeout_s = 60\n\n\
         [[experiment]]\nkind = \"ordering\"\nstreams = 2\nmessages = 300\nsize = 128\nrate_hz = 500\n"
    );
    let records = common::run_inline("ordering-test", &text);
    assert_eq!(records.len(), 3);
    for record in &records {
        assert_eq!(record.status, RunStatus::Ok, "{}: {:?}", record.transport, record.error);
        let m = |name: &str| record.metrics.get(name).copied().unwrap_or(f64::NAN);
        if record.transport == "wt-datagram" {
            assert!(m("order_violations") > 0.0, "the profile did not reorder datagrams: {:?}", record.metrics);
            assert!(m("reorder_depth") >= 1.0);
        } else {
            for name in ["order_violations", "duplicates", "missing"] {
                assert_eq!(m(name), 0.0, "{} {name}: {:?}", record.transport, record.metrics);
            }
            assert_eq!(m("delivered"), 600.0);
        }
    }
}
