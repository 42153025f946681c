//! The wire protocol shared by both modes: paths, text control words, how a received WebSocket message is
//! classified, and the shared writing half of a connection.
//!
//! - Binary message: exactly one [`tlab_core::frame`]. Anything else binary → close 1002; a payload above the limit
//!   → close 1009 (tungstenite cuts a too-long message from its header already).
//! - Text message: `open <StreamOpen query>` (client → server, multiplexed only), `fin <stream>` (either side: that
//!   direction of the stream is finished), `refused <stream> too-many-streams <limit>` (server → client,
//!   multiplexed only). Anything else → close 1002.
//! - Close 1000 (or a close without code) from the peer ends every stream of the connection gracefully; any other
//!   close code, or a connection lost without a close frame, is an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::SinkExt;
use futures::stream::{SplitSink, SplitStream};
use tlab_core::frame::{HEADER_LEN, decode_exact};
use tlab_core::server::Watched;
use tlab_core::{Error, Limits, Message, StreamId, StreamOpen};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Path of mode `ws`; the query is the stream's [`StreamOpen::to_query`] (absent: echo on stream 0).
pub(crate) const PATH_PER_STREAM: &str = "/tlab/ws";
/// Path of mode `ws-mux`.
pub(crate) const PATH_MUX: &str = "/tlab/ws-mux";
/// The only ALPN protocol offered: WebSocket upgrades need HTTP/1.1.
pub(crate) const ALPN: &[u8] = b"http/1.1";
/// Query key of the per-stream client's connect-time check: the server authenticates and upgrades it like a
/// stream, then closes it with 1000 at once.
pub(crate) const PROBE_KEY: &str = "probe";
/// How long sending a close frame may wait for a busy writer before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A WebSocket over our TLS stream (client or server side; only the server's TCP stream has deadlines).
pub(crate) type Ws = WebSocketStream<TlsStream<Watched<TcpStream>>>;
/// The reading half of a [`Ws`].
pub(crate) type WsReader = SplitStream<Ws>;

/// tungstenite's limits: a frame or message longer than the largest allowed tlab frame is cut from its header.
pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    let max = limits.max_message_size.saturating_add(HEADER_LEN);
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max))
}

/// A stream-control word carried in a text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// `open <query>`: the client opens a stream (multiplexed mode).
    Open(StreamOpen),
    /// `fin <stream>`: the sender finished its direction of the stream.
    Fin(StreamId),
    /// `refused <stream> too-many-streams <limit>`: the server did not open the stream.
    Refused {
        /// The refused stream.
        stream: StreamId,
        /// The server's stream limit.
        limit: u32,
    },
}

impl Control {
    /// The text message form.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Control::Open(open) => format!("open {}", open.to_query()),
            Control::Fin(stream) => format!("fin {stream}"),
            Control::Refused { stream, limit } => format!("refused {stream} too-many-streams {limit}"),
        }
    }

    /// Parses [`Control::to_text`]'s form.
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        let bad = || Error::Protocol(format!("unknown text message `{}`", text.chars().take(64).collect::<String>()));
        let (word, rest) = text.split_once(' ').ok_or_else(bad)?;
        let number = |s: &str| s.parse::<u32>().map_err(|_| bad());
        match word {
            "open" => Ok(Control::Open(StreamOpen::from_query(rest)?)),
            "fin" => Ok(Control::Fin(number(rest)?)),
            "refused" => match rest.split(' ').collect::<Vec<_>>()[..] {
                [stream, "too-many-streams", limit] => Ok(Control::Refused { stream: number(stream)?, limit: number(limit)? }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// What one received WebSocket message means.
#[derive(Debug)]
pub(crate) enum Event {
    /// A tlab frame.
    Frame(Message),
    /// A stream-control word.
    Control(Control),
    /// The peer closed the connection gracefully (close code 1000 or none).
    End,
    /// Ping or pong: tungstenite answers pings itself.
    Nothing,
}

/// Why a connection cannot go on: the error to report, and the close code to send when it was the peer's fault.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) close: Option<CloseCode>,
}

impl Failure {
    /// A protocol violation by the peer: answered with close 1002.
    pub(crate) fn protocol(reason: String) -> Self {
        Self { error: Error::Protocol(reason), close: Some(CloseCode::Protocol) }
    }

    fn from_decode(error: Error) -> Self {
        let close = match error {
            Error::MessageTooLarge { .. } => CloseCode::Size,
            _ => CloseCode::Protocol,
        };
        Self { error, close: Some(close) }
    }
}

/// Classifies what the reading half yielded (`None`: the TCP/TLS stream ended).
pub(crate) fn classify(item: Option<Result<WsMessage, WsError>>, max_payload: usize) -> Result<Event, Failure> {
    let lost = |reason: &str| Failure { error: Error::Closed(reason.into()), close: None };
    match item {
        None => Err(lost("connection ended without a close frame")),
        Some(Ok(WsMessage::Binary(bytes))) => decode_exact(bytes, max_payload).map(Event::Frame).map_err(Failure::from_decode),
        Some(Ok(WsMessage::Text(text))) => {
            Control::parse(text.as_str()).map(Event::Control).map_err(|e| Failure { error: e, close: Some(CloseCode::Protocol) })
        }
        Some(Ok(WsMessage::Close(None))) => Ok(Event::End),
        Some(Ok(WsMessage::Close(Some(frame)))) if frame.code == CloseCode::Normal => Ok(Event::End),
        // The peer blames us: reconnecting would not help, so these are not `Closed` (which is retryable).
        Some(Ok(WsMessage::Close(Some(frame)))) if matches!(frame.code, CloseCode::Protocol | CloseCode::Size) => Err(Failure {
            error: Error::Protocol(format!("peer closed with code {}: {}", frame.code, frame.reason)),
            close: None,
        }),
        Some(Ok(WsMessage::Close(Some(frame)))) => Err(lost(&format!("peer closed with code {}: {}", frame.code, frame.reason))),
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => Ok(Event::Nothing),
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => Err(Failure::from_decode(
            Error::MessageTooLarge { size: size.saturating_sub(HEADER_LEN), limit: max_payload },
        )),
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            Err(lost("connection reset without a closing handshake"))
        }
        Some(Err(WsError::Protocol(e))) => Err(Failure::protocol(e.to_string())),
        Some(Err(e @ WsError::Utf8(_))) => Err(Failure::protocol(e.to_string())),
        Some(Err(e)) => Err(Failure { error: map_ws_error(e), close: None }),
    }
}

/// Maps a tungstenite error of an established connection.
pub(crate) fn map_ws_error(e: WsError) -> Error {
    match e {
        WsError::Io(e) => Error::Io(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Protocol(ProtocolError::SendAfterClosing) => {
            Error::Closed(e.to_string())
        }
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Error::Closed(e.to_string()),
        other => Error::Transport(other.to_string()),
    }
}

/// A copy of `e` for each stream of a multiplexed connection that fails with it.
pub(crate) fn replicate(e: &Error) -> Error {
    match e {
        Error::Protocol(s) => Error::Protocol(s.clone()),
        Error::MessageTooLarge { size, limit } => Error::MessageTooLarge { size: *size, limit: *limit },
        Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => Error::Closed(other.to_string()),
    }
}

/// The writing half of one WebSocket connection, shared by every sink (and the close paths) using it.
///
/// Each send feeds and flushes under the lock, so a message is on the wire when `send` returns; tungstenite
/// appends queued pong/close replies to the same write.
pub(crate) struct Writer {
    sink: Mutex<SplitSink<Ws, WsMessage>>,
    closed_locally: AtomicBool,
    /// The peer's close frame arrived (and tungstenite answered it).
    closed_by_peer: AtomicBool,
}

impl Writer {
    pub(crate) fn new(sink: SplitSink<Ws, WsMessage>) -> Self {
        Self { sink: Mutex::new(sink), closed_locally: AtomicBool::new(false), closed_by_peer: AtomicBool::new(false) }
    }

    /// Whether a close frame was sent or received on this connection.
    pub(crate) fn closing(&self) -> bool {
        self.closed_locally.load(Ordering::SeqCst) || self.closed_by_peer.load(Ordering::SeqCst)
    }

    /// Sends one message and flushes it.
    pub(crate) async fn send(&self, msg: WsMessage) -> Result<(), Error> {
        self.sink.lock().await.send(msg).await.map_err(map_ws_error)
    }

    /// Sends the WebSocket messages `frame` makes of `msgs`, in order, under one hold of the writer lock: each is
    /// queued with `feed` (tungstenite writes into its write buffer, and out to the socket only when the buffer is
    /// full) and all are flushed once. The first message `frame` refuses stops the batch: the ones before it are
    /// sent, and its error is returned.
    pub(crate) async fn send_batch(
        &self,
        msgs: Vec<Message>,
        mut frame: impl FnMut(Message) -> Result<WsMessage, Error> + Send,
    ) -> Result<(), Error> {
        let mut sink = self.sink.lock().await;
        let mut refused = Ok(());
        for msg in msgs {
            match frame(msg) {
                Ok(ws) => sink.feed(ws).await.map_err(map_ws_error)?,
                Err(e) => {
                    refused = Err(e);
                    break;
                }
            }
        }
        sink.flush().await.map_err(map_ws_error)?;
        refused
    }

    /// Sends one message after running `before` under the writer lock (ordering it against other writers).
    pub(crate) async fn send_after(&self, msg: WsMessage, before: impl FnOnce() + Send) -> Result<(), Error> {
        let mut sink = self.sink.lock().await;
        before();
        sink.send(msg).await.map_err(map_ws_error)
    }

    /// Sends a stream-control word.
    pub(crate) async fn send_control(&self, control: &Control) -> Result<(), Error> {
        self.send(WsMessage::Text(control.to_text().into())).await
    }

    /// Sends a close frame, best effort: a writer blocked for long (peer not reading) is given up on.
    pub(crate) async fn close(&self, code: CloseCode, reason: &str) {
        self.closed_locally.store(true, Ordering::SeqCst);
        let frame = CloseFrame { code, reason: reason.into() };
        let sent = tokio::time::timeout(CLOSE_TIMEOUT, self.send(WsMessage::Close(Some(frame)))).await;
        if let Ok(Err(e)) | Err(e) = sent.map_err(|_| Error::Timeout("sending a close frame".into())) {
            tracing::debug!(error = %e, "close frame not sent");
        }
    }

    /// Writes out the reply tungstenite queued to the peer's close frame (nobody reads the connection any more).
    pub(crate) async fn acknowledge_close(&self) {
        self.closed_by_peer.store(true, Ordering::SeqCst);
        let flushed = tokio::time::timeout(CLOSE_TIMEOUT, async { self.sink.lock().await.flush().await }).await;
        if let Ok(Err(e)) = flushed {
            tracing::debug!(error = %e, "close reply not sent");
        }
    }

    /// Reports a failure (logged, and answered with its close code) and returns its error.
    pub(crate) async fn fail(&self, failure: Failure) -> Error {
        if let Some(code) = failure.close {
            tracing::warn!(error = %failure.error, code = u16::from(code), "closing WebSocket connection");
            let reason: String = failure.error.to_string().chars().take(120).collect();
            self.close(code, &reason).await;
        }
        failure.error
    }

    /// What a reader reports once the peer's close frame arrived: a graceful end, unless this side closed first
    /// (then the streams did not end by the peer's will).
    pub(crate) fn end(&self) -> Result<Option<Message>, Error> {
        if self.closed_locally.load(Ordering::SeqCst) {
            Err(Error::Closed("connection closed by this side".into()))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tlab_core::StreamMode;
    use tlab_core::frame::encode;

    #[test]
    fn control_words_round_trip() {
        let open = StreamOpen { stream: 4, mode: StreamMode::Source { count: 3, size: 8, interval_us: 0 }, resume: None };
        for c in [Control::Open(open), Control::Fin(7), Control::Refused { stream: 9, limit: 8 }] {
            assert_eq!(Control::parse(&c.to_text()).unwrap(), c);
        }
        assert_eq!(Control::Fin(3).to_text(), "fin 3");
        assert_eq!(Control::Refused { stream: 9, limit: 8 }.to_text(), "refused 9 too-many-streams 8");
        for bad in ["", "fin", "fin x", "hello 1", "refused 1 busy 2", "open mode=teleport"] {
            assert!(matches!(Control::parse(bad), Err(Error::Protocol(_))), "{bad}");
        }
    }

    #[test]
    fn classification() {
        let msg = Message::data(1, 2, Bytes::from_static(b"abc"));
        assert!(matches!(classify(Some(Ok(WsMessage::Binary(encode(&msg)))), 3), Ok(Event::Frame(m)) if m == msg));
        let too_big = classify(Some(Ok(WsMessage::Binary(encode(&msg)))), 2).unwrap_err();
        assert!(matches!(too_big.error, Error::MessageTooLarge { size: 3, limit: 2 }));
        assert_eq!(too_big.close, Some(CloseCode::Size));
        let garbage = classify(Some(Ok(WsMessage::Binary(Bytes::from_static(b"xyz")))), 3).unwrap_err();
        assert_eq!(garbage.close, Some(CloseCode::Protocol));
        assert!(matches!(classify(Some(Ok(WsMessage::Close(None))), 3), Ok(Event::End)));
        let away = Some(Ok(WsMessage::Close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() }))));
        assert!(matches!(classify(away, 3), Err(Failure { error: Error::Closed(_), close: None })));
        let blamed = Some(Ok(WsMessage::Close(Some(CloseFrame { code: CloseCode::Size, reason: "big".into() }))));
        assert!(matches!(classify(blamed, 3), Err(Failure { error: Error::Protocol(_), close: None })));
        assert!(matches!(classify(None, 3), Err(Failure { error: Error::Closed(_), close: None })));
    }
}
