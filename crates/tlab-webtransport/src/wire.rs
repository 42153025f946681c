//! What both ends agree on: the session path and query keys, the application error codes, reading the per-stream
//! open header ([`tlab_quic_common::open_header`]), and the mapping of wtransport errors onto [`tlab_core::Error`].

use tlab_core::{Error, StreamOpen};
use tlab_quic_common::open_header;
use wtransport::VarInt;
use wtransport::error::ConnectionError;
use wtransport::quinn;

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

/// Reads the open header of a stream accepted by the server.
pub(crate) async fn read_open(recv: &mut wtransport::RecvStream) -> Result<StreamOpen, Error> {
    let query = open_header::read(recv.quic_stream_mut()).await?;
    StreamOpen::from_query(&query)
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

/// The error of a stream the peer reset or stopped with `code`: [`CODE_PROTOCOL`] is a refusal of what we sent, which
/// no reconnect cures ([`Error::Protocol`]); any other code is [`Error::Closed`].
fn stream_ended_error(code: quinn::VarInt, what: &str) -> Error {
    let message = format!("stream {what} by peer ({})", reason(code));
    if code.into_inner() == u64::from(CODE_PROTOCOL) { Error::Protocol(message) } else { Error::Closed(message) }
}

pub(crate) fn read_error(e: quinn::ReadError) -> Error {
    match e {
        quinn::ReadError::Reset(c) => stream_ended_error(c, "reset"),
        other => Error::Closed(format!("stream read: {other}")),
    }
}

pub(crate) fn write_error(e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::Stopped(c) => stream_ended_error(c, "stopped"),
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
    fn a_protocol_refusal_is_not_retryable_other_resets_are() {
        let refused = read_error(quinn::ReadError::Reset(quinn::VarInt::from_u32(CODE_PROTOCOL)));
        assert!(matches!(&refused, Error::Protocol(_)) && !refused.is_retryable(), "{refused:?}");
        let stopped = write_error(quinn::WriteError::Stopped(quinn::VarInt::from_u32(CODE_PROTOCOL)));
        assert!(matches!(&stopped, Error::Protocol(_)) && !stopped.is_retryable(), "{stopped:?}");
        for other in [CODE_ABORTED, CODE_REFUSED, CODE_CLOSED] {
            let error = read_error(quinn::ReadError::Reset(quinn::VarInt::from_u32(other)));
            assert!(matches!(&error, Error::Closed(_)) && error.is_retryable(), "{other:#x}: {error:?}");
        }
    }
}
