//! HTTP/3 transport of transport-lab (h3 + h3-quinn + quinn): each logical stream is one HTTP/3 request on a
//! shared QUIC connection.
//!
//! A client holds one QUIC connection (TLS 1.3, ALPN `h3`, certificate pinning from tlab-core).
//! [`tlab_core::Connection::open_stream`] sends `POST /tlab/h3?<open query>` with `authorization: Bearer <token>`;
//! the request body carries our binary frames ([`tlab_core::frame`]) client→server and the response body (200,
//! `application/octet-stream`) carries frames server→client, both streamed at once. HTTP/3 DATA frames need not
//! align with ours. Finishing a direction ends that body; a stream the peer rejects (oversize or malformed frame)
//! is reset with `H3_MESSAGE_ERROR`. The server refuses a wrong token with 401, a bad query with 400, an unknown
//! path with 404 and a stream beyond `max_streams` with 429, before anything reaches the service; the token rides
//! in each request, so a wrong one fails the first stream (no round trip checks it beforehand; the server's
//! `GET /tlab/h3/auth` is there for clients that want an early check). The connection migrates
//! natively ([`tlab_core::Connection::rebind`]: quinn moves to a new UDP socket, the server validates the new path).

mod client;
mod server;
mod wire;

use async_trait::async_trait;
use tlab_core::{Capabilities, ClientConfig, Connection, Error, Server, ServerConfig, Transport};

/// The `h3` transport: N logical streams = N HTTP/3 requests on one QUIC connection. Both ends run the congestion
/// controller their config names ([`ServerConfig::congestion`], [`ClientConfig::congestion`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct H3Transport;

impl H3Transport {
    /// The transport.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Transport for H3Transport {
    fn name(&self) -> &'static str {
        "h3"
    }

    fn description(&self) -> &'static str {
        "HTTP/3 (h3 + quinn): each stream is one POST whose request and response bodies stream frames both ways, on one QUIC connection"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            bidirectional: true,
            multiplexed: true,
            reliable: true,
            ordered: true,
            datagrams: false,
            native_migration: true,
            native_reconnect: false,
        }
    }

    async fn serve(&self, config: ServerConfig) -> Result<Box<dyn Server>, Error> {
        Ok(Box::new(server::serve(config).await?))
    }

    async fn connect(&self, config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
        Ok(Box::new(client::connect(config).await?))
    }
}

#[cfg(test)]
mod tests {
    //! What needs the concrete types: migration (the server's connection count and the client's QUIC connection) and
    //! the endpoint configurations' congestion controllers.

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tlab_service::EchoService;
    use tlab_core::tls::{CertPin, Identity};
    use tlab_core::{Limits, Message, MessageStream, Server as _, StreamOpen};
    use tlab_quic_common::testing::assert_each_end_runs_its_own_controller;

    use super::*;

    #[tokio::test]
    async fn both_ends_run_the_congestion_controller_of_their_config() {
        let configs = |s: &_, c: &_| (server::endpoint_config(s).unwrap(), client::endpoint_config(c).unwrap());
        assert_each_end_runs_its_own_controller(Arc::new(EchoService::default()), "https://127.0.0.1:1/tlab/h3", configs)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rebind_keeps_the_same_connection() {
        let identity = Arc::new(Identity::self_signed(&["localhost"]).unwrap());
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            identity: identity.clone(),
            token: "t".into(),
            limits: Limits::default(),
            service: Arc::new(EchoService::default()),
            congestion: tlab_core::config::CongestionControl::default(),
            deadlines: tlab_core::Deadlines::default(),
            max_connections_per_ip: None,
            allow_origin: Default::default(),
        };
        let server = server::serve(config).await.unwrap();
        let client_config = ClientConfig::new(server.url(), CertPin::Sha256(identity.sha256()), "t");
        let conn = client::connect(client_config).await.unwrap();
        let stable_id = conn.conn.stable_id();
        let mut new_local = None;
        let MessageStream { mut sink, mut source } = conn.open_stream(StreamOpen::echo(0)).await.unwrap();
        let count = 2000u64;
        let test = async {
            let sender = async {
                for seq in 0..count {
                    if seq == count / 2 {
                        // A port free a moment ago; the old socket is closed by the rebind.
                        let local = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
                        conn.rebind(local).await.unwrap();
                        new_local = Some(local);
                    }
                    let payload = Bytes::from(seq.to_be_bytes().to_vec());
                    sink.send(Message::data(0, seq, payload)).await.unwrap();
                    if seq % 100 == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                sink.finish().await.unwrap();
            };
            let receiver = async {
                for expected in 0..count {
                    let msg = source.recv().await.unwrap().expect("echo");
                    assert_eq!((msg.seq, &msg.payload[..]), (expected, &expected.to_be_bytes()[..]));
                }
                assert!(source.recv().await.unwrap().is_none());
            };
            tokio::join!(sender, receiver);
        };
        tokio::time::timeout(Duration::from_secs(30), test).await.expect("echo across the rebind timed out");
        assert_eq!(conn.endpoint.local_addr().ok(), new_local, "the client did not move");
        assert_eq!(conn.conn.stable_id(), stable_id);
        assert!(conn.conn.close_reason().is_none(), "the connection closed: {:?}", conn.conn.close_reason());
        assert_eq!(server.accepted(), 1, "the server accepted a second connection");
        conn.close().await;
    }
}
