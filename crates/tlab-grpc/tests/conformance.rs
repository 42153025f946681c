//! The shared conformance suite, run against the gRPC transport.

tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_grpc::GrpcTransport::new()) });
