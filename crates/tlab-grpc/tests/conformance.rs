//! The shared conformance suite, run against the gRPC transport.

tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_grpc::GrpcTransport::new()) });

/// gRPC-Web is one-way (server streaming): of the shared checks, the one that asserts exactly that applies; its
/// source streams, wrong tokens and CORS are checked in `tests/grpc_web.rs`.
mod grpc_web {
    tlab_testkit::conformance_tests!(@each || -> Box<dyn tlab_core::Transport> { Box::new(tlab_grpc::GrpcWebTransport::new()) }; both_directions);
}
