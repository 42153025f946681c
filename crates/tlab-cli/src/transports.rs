//! Every transport mode `tlab` knows, by its stable name.

use tlab_core::Transport;

/// All transport modes, in the order `tlab list` prints them.
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
    ]
}

/// The transport mode called `name`, or an error listing the valid names.
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Transport>> {
    let mut all = all();
    match all.iter().position(|t| t.name() == name) {
        Some(i) => Ok(all.swap_remove(i)),
        None => {
            let names: Vec<_> = all.iter().map(|t| t.name()).collect();
            anyhow::bail!("unknown transport `{name}`; known: {}", names.join(", "))
        }
    }
}
