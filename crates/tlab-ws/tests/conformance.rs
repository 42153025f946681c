//! The shared conformance suite, run against both WebSocket modes.

mod per_stream {
    tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_ws::WsTransport::per_stream()) });
}

mod multiplexed {
    tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_ws::WsTransport::multiplexed()) });
}
