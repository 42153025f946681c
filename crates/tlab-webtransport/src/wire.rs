//! What both ends agree on: the session path and query keys, the QUIC transport parameters, the application error
//! codes, the per-stream open header, and the mapping of wtransport errors onto [`tlab_core::Error`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tlab_core::{Error, StreamOpen};
use wtransport::VarInt;
use wtransport::error::ConnectionError;
use wtransport::quinn;

use crate::Congestion;

/// ALPN of HTTP/3, which carries WebTransport.
pub(crate) const ALPN: &[u8] = b"h3";
/// Path of the WebTransport session (CONNECT with `:protocol = webtransport`).
pub(crate) const PATH: &str = "/tlab/wt";
/// Query key that makes a session a datagram session (`?datagrams=1`).
pub(crate) const DATAGRAMS_KEY: &str = "datagrams";
/// Query key carrying the token (browsers cannot set `authorization` on a WebTransport session).
pub(crate) const TOKEN_KEY: &str = "token";

/// Stream reset/stop code: the stream was refused (more streams than `limits.max_streams`).
pub(crate) const CODE_REFUSED: u32 = 0x52;
/// Stream reset/stop code: the peer broke the framing (bad open header, malformed or oversize frame).
pub(crate) const CODE_PROTOCOL: u32 = 0x50;
/// Stream reset code: the sending half was dropped without `finish` (the stream failed).
pub(crate) const CODE_ABORTED: u32 = 0x51;
/// Session close code of a graceful close (client `close`, last handle dropped, server shutdown).
pub(crate) const CODE_CLOSED: u32 = 0;

/// The largest open header (`u16` length prefix).
const MAX_OPEN_LEN: usize = u16::MAX as usize;

/// QUIC parameters shared by client and server: keep-alive so that a receive-only client still validates a new path
/// after migration, a 10 s idle timeout, the chosen congestion controller, and at most `max_streams` peer streams
/// (+1 on the server: the session's own CONNECT request is a client bidirectional stream).
pub(crate) fn transport_config(congestion: Congestion, bidi_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000))))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(bidi_streams));
    match congestion {
        Congestion::Cubic => config.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        Congestion::NewReno => config.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default())),
        Congestion::Bbr => config.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
    };
    Arc::new(config)
}

/// The open header that starts every bidirectional stream: `u16` big-endian length, then the [`StreamOpen`] query.
pub(crate) fn open_header(open: &StreamOpen) -> Bytes {
    let query = open.to_query();
    let mut out = BytesMut::with_capacity(2 + query.len());
    out.put_u16(query.len() as u16);
    out.put_slice(query.as_bytes());
    out.freeze()
}

/// Reads the open header of a stream accepted by the server.
pub(crate) async fn read_open(recv: &mut wtransport::RecvStream) -> Result<StreamOpen, Error> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.map_err(|e| Error::Protocol(format!("stream open header: {e}")))?;
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len)).min(MAX_OPEN_LEN)];
    recv.read_exact(&mut query).await.map_err(|e| Error::Protocol(format!("stream open query: {e}")))?;
    let query = std::str::from_utf8(&query).map_err(|_| Error::Protocol("stream open query is not UTF-8".into()))?;
    StreamOpen::from_query(query)
}

/// The value of `key` in a `a=1&b=2` query.
pub(crate) fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

/// Whether a session request carries `token`, as `authorization: Bearer <token>` or as `?token=<token>`.
pub(crate) fn token_ok(query: &str, authorization: Option<&str>, token: &str) -> bool {
    authorization.and_then(|v| v.strip_prefix("Bearer ")) == Some(token) || query_value(query, TOKEN_KEY) == Some(token)
}

/// Keeps a session open while the connection handle or any of its streams lives; the last one closes it (wtransport's
/// driver task holds the QUIC connection, so dropping handles alone would leave it open until the idle timeout).
#[derive(Debug)]
pub(crate) struct SessionGuard(pub(crate) wtransport::Connection);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.close(code(CODE_CLOSED), b"closed");
    }
}

/// A code for `reset` / `stop`.
pub(crate) fn code(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

pub(crate) fn connection_error(e: ConnectionError) -> Error {
    match e {
        ConnectionError::TimedOut => Error::Closed("QUIC idle timeout".into()),
        other => Error::Closed(other.to_string()),
    }
}

/// What a stream reset or stop code means, for the error message.
fn reason(code: quinn::VarInt) -> String {
    match u32::try_from(code.into_inner()) {
        Ok(CODE_REFUSED) => "refused: too many streams".into(),
        Ok(CODE_PROTOCOL) => "malformed or oversize frame".into(),
        Ok(CODE_ABORTED) => "peer abandoned the stream".into(),
        _ => format!("code {code}"),
    }
}

pub(crate) fn read_error(e: quinn::ReadError) -> Error {
    match e {
        quinn::ReadError::Reset(c) => Error::Closed(format!("stream reset by peer ({})", reason(c))),
        other => Error::Closed(format!("stream read: {other}")),
    }
}

pub(crate) fn write_error(e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::Stopped(c) => Error::Closed(format!("stream stopped by peer ({})", reason(c))),
        other => Error::Closed(format!("stream write: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_or_query() {
        assert!(token_ok("", Some("Bearer t"), "t"));
        assert!(token_ok("datagrams=1&token=t", None, "t"));
        assert!(!token_ok("token=x", Some("Bearer y"), "t"));
        assert!(!token_ok("", None, ""), "an empty token in no place is still no token");
        assert!(!token_ok("tokenx=t", Some("t"), "t"));
    }

    #[test]
    fn open_header_is_length_prefixed_query() {
        let open = StreamOpen::echo(7);
        let header = open_header(&open);
        let query = open.to_query();
        assert_eq!(&header[..2], &(query.len() as u16).to_be_bytes());
        assert_eq!(&header[2..], query.as_bytes());
    }
}
