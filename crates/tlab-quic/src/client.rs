//! The client: one QUIC connection on its own UDP endpoint (so that rebinding moves exactly this connection), with
//! one bidirectional QUIC stream per logical stream; the token rides in every stream's first bytes, so a wrong one
//! fails the first stream with [`Error::Unauthorized`] (no round trip of its own).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;
use quinn::{Endpoint, VarInt};
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{ClientConfig, Error, Limits, Milestones, MessageStream, StreamOpen, tls};
use tlab_quic_common::{PeerStreams, StreamSlots};

use crate::wire::{
    ALPN, CLOSE_NORMAL, OnDrop, StreamState, connection_error, message_stream, write_header,
};

/// Connects (the QUIC handshake); the token goes out with each stream.
pub(crate) async fn connect(config: ClientConfig) -> Result<Box<dyn tlab_core::Connection>, Error> {
    let (addr, _path) = config.authority_and_path()?;
    let client_config = endpoint_config(&config)?;
    let any: SocketAddr =
        if addr.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let endpoint = Endpoint::client(any)?;
    let connect_error = |reason: String| Error::Connect { address: addr.to_string(), reason };
    let establish = async {
        let connecting = endpoint
            .connect_with(client_config, addr, &tls::server_name().to_str())
            .map_err(|e| connect_error(e.to_string()))?;
        let conn = connecting.await.map_err(|e| match connection_error(&e) {
            Error::Closed(reason) => connect_error(reason),
            other => other,
        })?;
        Ok::<_, Error>(conn)
    };
    let conn = tokio::time::timeout(config.connect_timeout, establish)
        .await
        .map_err(|_| connect_error(format!("no connection within {:?}", config.connect_timeout)))??;
    let milestones = MilestoneLog::default();
    milestones.mark(Step::QuicHandshake);
    Ok(Box::new(QuicConnection {
        endpoint,
        conn,
        token: config.token,
        limits: config.limits,
        slots: StreamSlots::default(),
        milestones,
    }))
}

/// The quinn client configuration: our pin and ALPN, `config`'s congestion controller.
pub(crate) fn endpoint_config(config: &ClientConfig) -> Result<quinn::ClientConfig, Error> {
    // The server never opens streams towards the client.
    tlab_quic_common::client_config(&config.pin, ALPN, config.congestion, PeerStreams::bidi_only(0))
}

struct QuicConnection {
    endpoint: Endpoint,
    conn: quinn::Connection,
    token: String,
    limits: Limits,
    slots: StreamSlots,
    milestones: MilestoneLog,
}

#[async_trait]
impl tlab_core::Connection for QuicConnection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let state = StreamState::acquire(&self.slots, &self.limits, open.stream)?;
        let (mut send, recv) = self.conn.open_bi().await.map_err(|e| connection_error(&e))?;
        // QUIC announces a stream with its first bytes: the headers make the server accept it right away.
        write_header(&mut send, &self.token).await?;
        write_header(&mut send, &open.to_query()).await?;
        Ok(message_stream(send, recv, self.limits, state, OnDrop::Finish))
    }

    async fn close(&self) {
        self.conn.close(VarInt::from_u32(CLOSE_NORMAL), b"closed");
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }

    async fn rebind(&self, local: SocketAddr) -> Result<(), Error> {
        let socket = std::net::UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        self.endpoint.rebind(socket)?;
        tracing::debug!(%local, id = self.conn.stable_id(), "QUIC connection rebound to a new local address");
        Ok(())
    }
}
