//! The bytes of `tcp-tls` before the frames.
//!
//! Client → server, right after the TLS handshake: the **open header**, two length-prefixed UTF-8 fields,
//! `u16 BE length + token`, then `u16 BE length + open query` (`stream=3&mode=echo`, or [`PROBE`]).
//! Server → client: one [`Status`] byte. After [`Status::Accepted`] both sides send frames; after any other status
//! the server closes the connection. A direction ends with TLS `close_notify` and a TCP FIN.

use tlab_core::Error;
use tlab_core::server::Watched;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// The open query of a connect-time check (reachability, certificate, token) a client may make: answered and
/// closed. Our client makes none (it would cost a connection); the first stream fails instead.
pub(crate) const PROBE: &str = "probe";

/// TLS over TCP, either side (only the server's TCP stream has deadlines).
pub(crate) type Tls = tokio_rustls::TlsStream<Watched<TcpStream>>;

/// The server's one-byte answer to an open header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    /// Missing or wrong token: nothing reached the application.
    Unauthorized = 0x00,
    /// Token good, stream opened (or probe answered): frames follow.
    Accepted = 0x01,
    /// The open query did not parse (or a field was not UTF-8).
    Malformed = 0x02,
    /// The client's IP address already has `--max-connections-per-ip` connections open.
    TooManyConnections = 0x03,
}

impl Status {
    /// What a client makes of the status byte `byte`: `Ok` for [`Status::Accepted`], else the typed error.
    pub(crate) fn check(byte: u8) -> Result<(), Error> {
        match byte {
            b if b == Status::Accepted as u8 => Ok(()),
            b if b == Status::Unauthorized as u8 => Err(Error::Unauthorized),
            b if b == Status::Malformed as u8 => Err(Error::Protocol("the server refused the open header as malformed".into())),
            b if b == Status::TooManyConnections as u8 => {
                Err(Error::Closed("the server refused the connection: too many connections from this address".into()))
            }
            other => Err(Error::Protocol(format!("unknown status byte {other:#04x}"))),
        }
    }
}

/// The open header for `token` and `open` (the open query).
pub(crate) fn open_header(token: &str, open: &str) -> Result<Vec<u8>, Error> {
    let mut header = Vec::with_capacity(4 + token.len() + open.len());
    for (what, field) in [("token", token), ("open query", open)] {
        let len = u16::try_from(field.len()).map_err(|_| Error::Config(format!("the {what} is longer than 65535 bytes")))?;
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(field.as_bytes());
    }
    Ok(header)
}

/// Reads one field of the open header. `Ok(None)`: the field is not UTF-8 (the caller answers
/// [`Status::Malformed`]); `Err`: the connection failed or ended early.
pub(crate) async fn read_field(reader: &mut (impl AsyncRead + Unpin)) -> Result<Option<String>, Error> {
    let len = reader.read_u16().await?;
    let mut bytes = vec![0u8; len as usize];
    reader.read_exact(&mut bytes).await?;
    Ok(String::from_utf8(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_header_layout() {
        let header = open_header("s3", "stream=1").unwrap();
        assert_eq!(header, b"\x00\x02s3\x00\x08stream=1");
        assert!(matches!(open_header(&"x".repeat(70_000), ""), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn fields_read_back_and_bad_utf8_is_reported() {
        let header = open_header("tok", "stream=2&mode=sink").unwrap();
        let mut reader = &header[..];
        assert_eq!(read_field(&mut reader).await.unwrap().as_deref(), Some("tok"));
        assert_eq!(read_field(&mut reader).await.unwrap().as_deref(), Some("stream=2&mode=sink"));
        assert!(matches!(read_field(&mut reader).await, Err(Error::Io(_))), "no third field");
        let mut bad: &[u8] = b"\x00\x01\xff";
        assert_eq!(read_field(&mut bad).await.unwrap(), None);
    }

    #[test]
    fn status_bytes_map_to_typed_outcomes() {
        assert!(Status::check(0x01).is_ok());
        assert!(matches!(Status::check(0x00), Err(Error::Unauthorized)));
        assert!(matches!(Status::check(0x02), Err(Error::Protocol(_))));
        assert!(matches!(Status::check(0x03), Err(Error::Closed(_))));
        assert!(matches!(Status::check(0x7f), Err(Error::Protocol(_))));
    }
}
