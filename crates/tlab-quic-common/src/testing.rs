//! For the QUIC transports' tests (feature `testing`): a live quinn connection between two endpoints on
//! 127.0.0.1 built from whatever endpoint configurations a transport makes, and the check that both ends of it run
//! the congestion controller their own configuration names.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, Endpoint};
use tlab_core::config::CongestionControl;
use tlab_core::tls::{self, CertPin, Identity};
use tlab_core::{ClientConfig, Limits, ServerConfig, StreamService};

use crate::{PeerStreams, client_config, congestion, server_config};

/// Two ends of one established QUIC connection, and the endpoints that carry it.
pub struct Pair {
    /// The accepting end.
    pub server: Connection,
    /// The connecting end.
    pub client: Connection,
    /// Both endpoints (server, client), kept for as long as the pair lives.
    pub endpoints: [Endpoint; 2],
}

impl Pair {
    /// Binds a server endpoint with `server` and a client endpoint with `client` on 127.0.0.1 and completes one
    /// handshake between them. Panics if it fails: this is test scaffolding.
    pub async fn connect(server: quinn::ServerConfig, client: quinn::ClientConfig) -> Self {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let server_endpoint = Endpoint::server(server, loopback).expect("bind the server endpoint");
        let client_endpoint = Endpoint::client(loopback).expect("bind the client endpoint");
        let server_addr = server_endpoint.local_addr().expect("server address");
        let connecting = client_endpoint
            .connect_with(client, server_addr, &tls::server_name().to_str())
            .expect("start the handshake");
        let incoming = server_endpoint.accept().await.expect("an incoming connection");
        let server = incoming.await.expect("server side of the handshake");
        let client = connecting.await.expect("client side of the handshake");
        Self { server, client, endpoints: [server_endpoint, client_endpoint] }
    }

    /// A pair on this crate's [`server_config`] and [`client_config`] (CUBIC, 8 bidirectional streams each way, ALPN
    /// `tlab-test`) with a fresh self-signed identity.
    pub async fn connect_default() -> Self {
        let identity = Identity::self_signed(&["localhost"]).expect("identity");
        let pin = CertPin::Sha256(identity.sha256());
        let (cc, peer) = (CongestionControl::default(), PeerStreams::bidi_only(8));
        let server = server_config(&identity, b"tlab-test", cc, peer).expect("server config");
        Self::connect(server, client_config(&pin, b"tlab-test", cc, peer).expect("client config")).await
    }
}

/// For every algorithm on the server with another one on the client (so that one end's setting reaching the other
/// end would show): makes a transport's [`ServerConfig`] (serving `service`) and [`ClientConfig`] (for `url`) with
/// those algorithms, turns them into endpoint configurations with `make`, connects them, moves 64 KiB
/// client→server, and asserts that each end's live connection runs the controller its configuration names.
pub async fn assert_each_end_runs_its_own_controller(
    service: Arc<dyn StreamService>,
    url: &str,
    mut make: impl FnMut(&ServerConfig, &ClientConfig) -> (quinn::ServerConfig, quinn::ClientConfig),
) {
    const BYTES: usize = 64 << 10;
    for (i, server) in CongestionControl::ALL.into_iter().enumerate() {
        let client = CongestionControl::ALL[(i + 1) % CongestionControl::ALL.len()];
        let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).expect("identity"));
        let mut client_config = ClientConfig::new(url, CertPin::Sha256(identity.sha256()), "t");
        client_config.congestion = client;
        let server_config = ServerConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            identity,
            token: "t".into(),
            limits: Limits::default(),
            service: service.clone(),
            congestion: server,
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let (server_quinn, client_quinn) = make(&server_config, &client_config);
        let pair = Pair::connect(server_quinn, client_quinn).await;
        // Traffic first, so that the controllers have acted on a live path.
        let (mut send, _recv) = pair.client.open_bi().await.expect("open a stream");
        send.write_all(&[7u8; BYTES]).await.expect("send");
        send.finish().expect("finish");
        let (_send, mut recv) = pair.server.accept_bi().await.expect("accept the stream");
        assert_eq!(recv.read_to_end(BYTES).await.expect("receive").len(), BYTES);
        assert_eq!(congestion::in_use(&pair.server), Some(server), "server end (client configured {client})");
        assert_eq!(congestion::in_use(&pair.client), Some(client), "client end (server configured {server})");
    }
}
