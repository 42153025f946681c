//! The shared conformance suite, run against the `tcp-tls` mode.

tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_tcp_tls::TcpTlsTransport::new()) });
