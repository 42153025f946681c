//! The shared conformance suite: all reliable checks for `wt-stream`, the datagram checks for `wt-datagram`.

mod streams {
    tlab_testkit::conformance_tests!(|| -> Box<dyn tlab_core::Transport> { Box::new(tlab_webtransport::WebTransport::streams()) });
}

mod datagrams {
    tlab_testkit::datagram_conformance_tests!(|| -> Box<dyn tlab_core::Transport> {
        Box::new(tlab_webtransport::WebTransport::datagrams())
    });
}
