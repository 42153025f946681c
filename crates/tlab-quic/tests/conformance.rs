//! The shared conformance suite, run against the raw QUIC transport.

tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_quic::QuicTransport::new()) });
