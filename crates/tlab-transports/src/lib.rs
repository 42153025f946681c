//! `tlab-transports` is the registry of transport-lab's transport modes: the one place that lists them. The CLI,
//! the runner's transport factory, suites' capability groups and the benchmarks all find a mode here, by name
//! ([`by_name`]) or by what it can do ([`select`]). Adding a mode is one crate and one line in [`all`]; no transport
//! crate depends on this one or on another transport crate.

use tlab_core::{Capabilities, Requirement, Transport};

/// Errors of the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No registered mode has this name; `known` lists the names that exist, in registry order.
    #[error("unknown transport `{name}`; known: {}", .known.join(", "))]
    UnknownTransport {
        /// The name that was asked for.
        name: String,
        /// Every registered name.
        known: Vec<&'static str>,
    },
}

/// Every transport mode, in registry order (the order of `tlab list`, of suites' `"all"` and capability groups).
pub fn all() -> Vec<Box<dyn Transport>> {
    vec![
        Box::new(tlab_ws::WsTransport::per_stream()),
        Box::new(tlab_ws::WsTransport::multiplexed()),
        Box::new(tlab_sse::SseTransport::http1()),
        Box::new(tlab_sse::SseTransport::http2()),
        Box::new(tlab_grpc::GrpcTransport::new()),
        Box::new(tlab_quic::QuicTransport::new()),
        Box::new(tlab_h3::H3Transport::new()),
        Box::new(tlab_webtransport::WebTransport::streams()),
        Box::new(tlab_webtransport::WebTransport::datagrams()),
        Box::new(tlab_tcp_tls::TcpTlsTransport::new()),
        Box::new(tlab_grpc::GrpcWebTransport::new()),
    ]
}

/// Every mode's name, in registry order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|t| t.name()).collect()
}

/// Every mode's name and capabilities, in registry order: what a suite needs to resolve its transport list.
pub fn catalogue() -> Vec<(&'static str, Capabilities)> {
    all().iter().map(|t| (t.name(), t.capabilities())).collect()
}

/// The mode called `name`.
pub fn by_name(name: &str) -> Result<Box<dyn Transport>, RegistryError> {
    let mut all = all();
    match all.iter().position(|t| t.name() == name) {
        Some(i) => Ok(all.swap_remove(i)),
        None => Err(RegistryError::UnknownTransport { name: name.to_string(), known: all.iter().map(|t| t.name()).collect() }),
    }
}

/// The modes whose capabilities satisfy `requirement`, in registry order.
pub fn select(requirement: Requirement) -> Vec<Box<dyn Transport>> {
    all().into_iter().filter(|t| t.capabilities().satisfies(requirement)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_never_a_group_name() {
        let names = names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
        for name in &names {
            assert!(name.parse::<Requirement>().is_err() && *name != "all", "`{name}` would shadow a suite group");
        }
    }

    #[test]
    fn by_name_finds_each_mode_and_lists_the_known_ones_otherwise() {
        for name in names() {
            assert_eq!(by_name(name).unwrap().name(), name);
        }
        let Err(err) = by_name("carrier-pigeon") else { panic!("`carrier-pigeon` found") };
        assert_eq!(err, RegistryError::UnknownTransport { name: "carrier-pigeon".into(), known: names() });
        let text = err.to_string();
        assert!(text.contains("`carrier-pigeon`") && text.contains("ws, ws-mux, sse-h1"), "{text}");
    }

    #[test]
    fn select_keeps_registry_order_and_filters_on_capabilities() {
        for r in Requirement::ALL {
            let selected: Vec<_> = select(r).iter().map(|t| t.name()).collect();
            let expected: Vec<_> = names().into_iter().filter(|n| by_name(n).unwrap().capabilities().satisfies(r)).collect();
            assert_eq!(selected, expected, "{r}");
        }
        let reliable: Vec<_> = select(Requirement::Reliable).iter().map(|t| t.name()).collect();
        assert!(reliable.starts_with(&["ws", "ws-mux", "sse-h1", "sse-h2", "grpc", "quic", "h3", "wt-stream"]), "{reliable:?}");
        assert!(!reliable.contains(&"wt-datagram"), "{reliable:?}");
        assert!(select(Requirement::Datagram).iter().any(|t| t.name() == "wt-datagram"));
    }
}
