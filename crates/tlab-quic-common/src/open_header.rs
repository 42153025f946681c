//! The header that opens a QUIC stream of the `quic` and `wt-stream` modes: a `u16` big-endian length, then that
//! many bytes of UTF-8 text (the [`tlab_core::StreamOpen`] query, or `quic`'s auth line). QUIC announces a stream
//! with its first bytes, so the header also makes the server accept the stream at once.
//!
//! The one length check is [`encode`]'s: text longer than [`MAX_LEN`] is refused there, never truncated, and
//! everything the two-byte prefix can say is a valid length to [`read`].

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{ReadError, ReadExactError, RecvStream};
use tlab_core::Error;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 2;
/// The longest header text, in bytes: what the `u16` prefix can express.
pub const MAX_LEN: usize = u16::MAX as usize;

/// Why an open header could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OpenHeaderError {
    /// The text is longer than the length prefix can express.
    #[error("open header of {len} bytes exceeds the limit of {MAX_LEN}")]
    TooLong {
        /// The text's length in bytes.
        len: usize,
    },
    /// The stream ended (FIN) before the whole header arrived.
    #[error("stream finished inside its open header")]
    FinishedEarly,
    /// The header's bytes are not UTF-8.
    #[error("open header is not UTF-8")]
    NotUtf8,
    /// Reading the stream failed: reset by the peer, or the connection was lost.
    #[error("reading the open header: {0}")]
    Read(#[source] ReadError),
}

impl From<OpenHeaderError> for Error {
    fn from(error: OpenHeaderError) -> Self {
        match error {
            OpenHeaderError::TooLong { .. } => Error::Config(error.to_string()),
            OpenHeaderError::FinishedEarly | OpenHeaderError::NotUtf8 => Error::Protocol(error.to_string()),
            OpenHeaderError::Read(_) => Error::Closed(error.to_string()),
        }
    }
}

/// The header carrying `text`, ready to be written as one chunk; [`OpenHeaderError::TooLong`] above [`MAX_LEN`].
pub fn encode(text: &str) -> Result<Bytes, OpenHeaderError> {
    let len = u16::try_from(text.len()).map_err(|_| OpenHeaderError::TooLong { len: text.len() })?;
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + text.len());
    buf.put_u16(len);
    buf.put_slice(text.as_bytes());
    Ok(buf.freeze())
}

/// Reads one header [`encode`] made from the start of `recv` and returns its text; the stream's later bytes stay
/// unread.
pub async fn read(recv: &mut RecvStream) -> Result<String, OpenHeaderError> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact(recv, &mut prefix).await?;
    let mut text = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    read_exact(recv, &mut text).await?;
    String::from_utf8(text).map_err(|_| OpenHeaderError::NotUtf8)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), OpenHeaderError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        ReadExactError::FinishedEarly(_) => OpenHeaderError::FinishedEarly,
        ReadExactError::ReadError(e) => OpenHeaderError::Read(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pair;

    #[test]
    fn encode_prefixes_the_length_up_to_the_limit() {
        for len in [0, 1, 255, 256, MAX_LEN - 1, MAX_LEN] {
            let text = "q".repeat(len);
            let header = encode(&text).unwrap();
            assert_eq!(header.len(), PREFIX_LEN + len);
            assert_eq!(usize::from(u16::from_be_bytes([header[0], header[1]])), len);
            assert_eq!(&header[PREFIX_LEN..], text.as_bytes());
        }
    }

    #[test]
    fn encode_refuses_text_beyond_the_limit() {
        for len in [MAX_LEN + 1, 1 << 20] {
            let outcome = encode(&"q".repeat(len));
            assert!(matches!(outcome, Err(OpenHeaderError::TooLong { len: l }) if l == len), "{len}: {outcome:?}");
        }
        assert!(matches!(Error::from(OpenHeaderError::TooLong { len: MAX_LEN + 1 }), Error::Config(_)));
    }

    /// Writes `bytes` on a new stream of `pair`, finishes it, and reads a header at the other end.
    async fn read_back(pair: &Pair, bytes: &[u8]) -> Result<String, OpenHeaderError> {
        let (mut send, _recv) = pair.client.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        send.finish().unwrap();
        let (_send, mut recv) = pair.server.accept_bi().await.unwrap();
        read(&mut recv).await
    }

    #[tokio::test]
    async fn headers_round_trip_over_a_quic_stream_at_the_boundary_lengths() {
        let pair = Pair::connect_default().await;
        for len in [0, 1, MAX_LEN] {
            let text = "é".repeat(len / 2) + &"q".repeat(len % 2);
            let mut bytes = encode(&text).unwrap().to_vec();
            // What follows the header stays on the stream.
            bytes.extend_from_slice(b"frames");
            let (mut send, _recv) = pair.client.open_bi().await.unwrap();
            send.write_all(&bytes).await.unwrap();
            send.finish().unwrap();
            let (_send, mut recv) = pair.server.accept_bi().await.unwrap();
            assert_eq!(read(&mut recv).await.unwrap(), text, "length {len}");
            assert_eq!(recv.read_to_end(16).await.unwrap(), b"frames");
        }
    }

    #[tokio::test]
    async fn truncated_or_invalid_headers_are_typed_errors() {
        let pair = Pair::connect_default().await;
        let outcome = read_back(&pair, &[0]).await;
        assert!(matches!(outcome, Err(OpenHeaderError::FinishedEarly)), "half a prefix: {outcome:?}");
        let outcome = read_back(&pair, &[0, 5, b'a', b'b']).await;
        assert!(matches!(outcome, Err(OpenHeaderError::FinishedEarly)), "short text: {outcome:?}");
        let outcome = read_back(&pair, &[0, 2, 0xff, 0xfe]).await;
        assert!(matches!(outcome, Err(OpenHeaderError::NotUtf8)), "{outcome:?}");
        assert!(matches!(Error::from(outcome.unwrap_err()), Error::Protocol(_)));

        let (mut send, _recv) = pair.client.open_bi().await.unwrap();
        send.write_all(&[0, 9]).await.unwrap();
        let (_send, mut recv) = pair.server.accept_bi().await.unwrap();
        send.reset(quinn::VarInt::from_u32(7)).unwrap();
        let outcome = read(&mut recv).await;
        assert!(matches!(&outcome, Err(OpenHeaderError::Read(ReadError::Reset(code))) if code.into_inner() == 7), "{outcome:?}");
    }
}
