//! The congestion controller of a QUIC connection: the suite's choice as a quinn controller factory, and the
//! controller a live connection actually runs.

use std::sync::Arc;

use quinn::congestion::{Bbr, BbrConfig, ControllerFactory, Cubic, CubicConfig, NewReno, NewRenoConfig};
use tlab_core::config::CongestionControl;

/// quinn's controller for `algorithm`, with quinn's default parameters (initial window, minimum window, …).
pub fn controller_factory(algorithm: CongestionControl) -> Arc<dyn ControllerFactory + Send + Sync> {
    match algorithm {
        CongestionControl::Cubic => Arc::new(CubicConfig::default()),
        CongestionControl::NewReno => Arc::new(NewRenoConfig::default()),
        CongestionControl::Bbr => Arc::new(BbrConfig::default()),
    }
}

/// The algorithm `connection` runs right now, read from its controller's type; `None` for a controller that is not
/// one of quinn's three. This is what a run can record as the QUIC congestion control of one end.
pub fn in_use(connection: &quinn::Connection) -> Option<CongestionControl> {
    let controller = connection.congestion_state().into_any();
    if controller.is::<Cubic>() {
        Some(CongestionControl::Cubic)
    } else if controller.is::<NewReno>() {
        Some(CongestionControl::NewReno)
    } else if controller.is::<Bbr>() {
        Some(CongestionControl::Bbr)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use tlab_core::{MessageStream, StreamOpen, StreamService};

    use crate::testing::assert_each_end_runs_its_own_controller;
    use crate::{PeerStreams, client_config, server_config};

    /// No stream reaches a service in this test.
    struct NoService;

    #[async_trait]
    impl StreamService for NoService {
        async fn serve(&self, _open: StreamOpen, _stream: MessageStream) {}
    }

    #[tokio::test]
    async fn each_end_runs_the_controller_its_own_settings_name() {
        let peer = PeerStreams::bidi_only(8);
        assert_each_end_runs_its_own_controller(Arc::new(NoService), "quic://127.0.0.1:1", |server, client| {
            let server_quinn = server_config(&server.identity, b"tlab-test", server.congestion, peer).unwrap();
            (server_quinn, client_config(&client.pin, b"tlab-test", client.congestion, peer).unwrap())
        })
        .await;
    }
}
