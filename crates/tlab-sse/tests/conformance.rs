//! The shared conformance suite, run against both SSE modes.

mod http1 {
    tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_sse::SseTransport::http1()) });
}

mod http2 {
    tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_sse::SseTransport::http2()) });
}
