//! The HOL experiment end to end (needs root): through the TUN emulator with targeted drops, every dropped epoch
//! is found, each packet carries one message, streams multiplexed on one TCP connection (`ws-mux`) wait behind the
//! lost marker (ρ well above 0), and one connection per stream (`ws`, the negative control) does not. The link's
//! seed comes from TLAB_SEED (printed) when set.

mod common;

use tlab_experiments::hol::names;
use tlab_results::RunStatus;

#[test]
fn targeted_drops_show_hol_on_one_tcp_connection_and_none_across_connections() {
    let seed = common::seed(8);
    let text = format!(
        "name = \"hol-test\"\nseed = {seed}\nrepetitions = 1\ntransports = [\"ws\", \"ws-mux\"]\n\
         profiles = [\"profiles/rtt50-loss0.toml\"]\nbackend = \"tun\"\ncell_timeout_s = 60\n\n\
         [[experiment]]\nkind = \"hol\"\nstreams = 3\nepochs = 4\nnull_epochs = 2\n"
    );
    let records = common::run_inline("hol-test", &text);
    for record in &records {
        assert_eq!(record.status, RunStatus::Ok, "{}: {:?}", record.transport, record.error);
        let m = |name: &str| record.metrics.get(name).copied().unwrap_or(f64::NAN);
        println!("{}: {:?}", record.transport, record.metrics);
        assert_eq!((m(names::EPOCHS), m(names::EPOCHS_MISSED), m(names::NULL_EPOCHS)), (4.0, 0.0, 2.0), "{}", record.transport);
        assert!((0.9..1.2).contains(&m(names::PACKETS_PER_MESSAGE)), "{}: not one message per packet", record.transport);
        assert!(m(names::RHO_NULL).abs() < 0.1, "{}: null epochs show HOL", record.transport);
        let rho = m(names::RHO);
        match record.transport.as_str() {
            "ws-mux" => assert!(rho > 0.4, "ws-mux ρ = {rho}"),
            _ => assert!(rho.abs() < 0.15, "ws ρ = {rho}"),
        }
    }
}
