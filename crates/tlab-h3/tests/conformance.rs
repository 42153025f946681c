//! The shared conformance suite, run against the HTTP/3 transport.

tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_h3::H3Transport::new()) });
