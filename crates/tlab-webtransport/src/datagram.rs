//! Mode `wt-datagram`: every message is one WebTransport datagram holding exactly one [`tlab_core::frame`]; the
//! logical streams of a session are told apart by the frame's stream id. One reader task per session
//! ([`read_loop`]) demultiplexes incoming datagrams into per-stream queues.
//!
//! An echo stream needs no opening: the server creates one when the first data datagram of a new stream id arrives.
//! A source stream (the server sends `count` datagrams on its schedule) is asked for by an *open datagram*: a frame
//! of the stream with seq [`OPEN_SEQ`] whose payload is the stream's open query (`stream=0&mode=source&count=…`).
//! The client repeats it until the stream's first datagram arrives ([`OPEN_RETRIES`]); the server opens each stream
//! id from an open datagram once per session and ignores the copies. Nothing ends a stream on the wire: `finish`
//! only ends the local sending half, and a reader ends a source stream by its count or by silence. Sink and
//! resumable streams are not offered over datagrams ([`Error::Unsupported`]).
//!
//! Loss: a datagram is lost where the link drops the packet carrying it, and (with a debug log) where its stream's
//! queue of [`QUEUE`] is full because the reader stalls. Nothing else drops one at the experiments' rates: wtransport
//! hands datagrams over through a bounded queue that waits instead of dropping, quinn drops only the oldest when its
//! send buffer (1 MiB) or receive buffer (1.25 MB) is full. But quinn sends datagrams under congestion control: when
//! the window is the limit (500 Hz through 2 % loss and 40 ms RTT), several datagrams share one QUIC packet and one
//! packet loss takes them together, so losses are correlated and their count varies more than a binomial one — the
//! mean stays the link's. Paced below the window, the count is binomial (crates/tlab-cli/tests/datagram_loss.rs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tlab_core::frame::{self, HEADER_LEN};
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamId, StreamMode, StreamOpen};
use tokio::sync::mpsc;
use wtransport::error::{ConnectionError, SendDatagramError};

use crate::wire::{CODE_CLOSED, SessionGuard};

/// Datagrams queued per stream before further ones are dropped (datagrams may be lost anyway; a slow stream must not
/// stall the reader and so every other stream).
const QUEUE: usize = 1024;

/// The seq of an open datagram (no data message has it: seqs count from 0 per stream).
pub(crate) const OPEN_SEQ: u64 = u64::MAX;

/// When the client sends its open datagram, from the stream's opening, until the stream's first datagram arrives:
/// datagrams may be lost, so one copy is not enough, and spacing the copies keeps one loss burst from taking all.
const OPEN_RETRIES: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(350),
    Duration::from_millis(750),
    Duration::from_millis(1550),
];

/// What the server opens for the first datagram of a stream id it does not know: the source an open datagram asks
/// for, or an echo stream for a data datagram. `None` for an open datagram that is not a source stream's query.
pub(crate) fn requested_open(msg: &Message) -> Option<StreamOpen> {
    if msg.seq != OPEN_SEQ {
        return Some(StreamOpen::echo(msg.stream));
    }
    let open = std::str::from_utf8(&msg.payload).map_err(|e| Error::Protocol(e.to_string())).and_then(StreamOpen::from_query);
    match open {
        Ok(open @ StreamOpen { mode: StreamMode::Source { .. }, resume: None, .. }) if open.stream == msg.stream => Some(open),
        other => {
            tracing::debug!(stream = msg.stream, ?other, "open datagram refused: only source streams are opened by datagram");
            None
        }
    }
}

/// Routes of one session: the queue of each open stream, and why the session ended once it did.
#[derive(Default)]
pub(crate) struct Demux(Mutex<Routes>);

#[derive(Default)]
struct Routes {
    queues: HashMap<StreamId, mpsc::Sender<Message>>,
    /// Streams that have received a datagram.
    heard: HashSet<StreamId>,
    /// `Some(None)`: ended gracefully (the peer closed with code 0); `Some(Some(reason))`: failed.
    end: Option<Option<String>>,
}

impl Demux {
    /// Registers stream `stream` and returns its halves; `Err` if the id is already open.
    pub(crate) fn open(
        self: &Arc<Self>,
        stream: StreamId,
        limits: Limits,
        session: Arc<SessionGuard>,
    ) -> Result<MessageStream, Error> {
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            let mut routes = self.0.lock().unwrap();
            if routes.end.is_some() {
                return Err(Error::Closed("session closed".into()));
            }
            if routes.queues.contains_key(&stream) {
                return Err(Error::Config(format!("stream {stream} is already open on this session")));
            }
            routes.queues.insert(stream, tx);
        }
        Ok(MessageStream {
            sink: Box::new(DatagramSink { session: session.clone(), stream, limits, finished: false }),
            source: Box::new(DatagramSource { demux: self.clone(), rx, stream, _session: session }),
        })
    }

    /// Number of open streams.
    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().queues.len()
    }

    /// Whether stream `stream` has received a datagram.
    fn heard(&self, stream: StreamId) -> bool {
        self.0.lock().unwrap().heard.contains(&stream)
    }

    /// Client side: registers source stream `open` and sends its open datagram on the [`OPEN_RETRIES`] schedule
    /// until the stream hears from the server (or the session ends).
    pub(crate) fn open_source(
        self: &Arc<Self>,
        open: &StreamOpen,
        limits: Limits,
        session: Arc<SessionGuard>,
    ) -> Result<MessageStream, Error> {
        let request = frame::encode(&Message::data(open.stream, OPEN_SEQ, Bytes::from(open.to_query())));
        let stream = self.open(open.stream, limits, session.clone())?;
        // The bare connection: the retries must not keep the session open.
        let (demux, connection, id) = (self.clone(), session.0.clone(), open.stream);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for at in OPEN_RETRIES {
                tokio::time::sleep_until(start + at).await;
                if demux.heard(id) || connection.send_datagram(request.clone()).is_err() {
                    break;
                }
            }
        });
        Ok(stream)
    }

    /// Queues `msg` for its stream; gives it back if no stream of its id is open.
    fn route(&self, msg: Message) -> Option<Message> {
        let mut routes = self.0.lock().unwrap();
        let Some(tx) = routes.queues.get(&msg.stream) else { return Some(msg) };
        let stream = msg.stream;
        match tx.try_send(msg) {
            Ok(()) => {
                routes.heard.insert(stream);
                None
            }
            Err(mpsc::error::TrySendError::Full(msg)) => {
                tracing::debug!(stream = msg.stream, seq = msg.seq, "datagram dropped: stream queue full");
                None
            }
            // The stream's reader is gone: forget it, so that the id may open again.
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                routes.queues.remove(&msg.stream);
                Some(msg)
            }
        }
    }

    /// Records how the session ended and ends every stream's queue.
    fn end(&self, error: ConnectionError) {
        let graceful = matches!(&error, ConnectionError::ApplicationClosed(close) if close.code().into_inner() == u64::from(CODE_CLOSED));
        let mut routes = self.0.lock().unwrap();
        routes.end = Some((!graceful).then(|| error.to_string()));
        routes.queues.clear();
    }
}

/// Reads the session's datagrams until it ends, queueing each valid frame for its stream. `unknown` is asked about
/// frames of a stream id that is not open (the server opens a stream there; the client drops them), and about the
/// first open datagram of each stream id (which is never queued; later copies are dropped). Datagrams that are not
/// one valid frame within `max_payload` are dropped with a debug log; the session stays up.
pub(crate) async fn read_loop(
    connection: wtransport::Connection,
    demux: Arc<Demux>,
    max_payload: usize,
    mut unknown: impl FnMut(&Message) -> bool,
) {
    let mut opened = HashSet::new();
    let error = loop {
        let datagram = match connection.receive_datagram().await {
            Ok(datagram) => datagram,
            Err(e) => break e,
        };
        match frame::decode_exact(datagram.payload(), max_payload) {
            Ok(msg) if msg.seq == OPEN_SEQ => {
                if opened.insert(msg.stream) {
                    unknown(&msg);
                }
            }
            Ok(msg) => {
                if let Some(msg) = demux.route(msg)
                    && unknown(&msg)
                {
                    demux.route(msg);
                }
            }
            Err(e) => tracing::debug!(error = %e, "datagram dropped: not a valid frame"),
        }
    };
    demux.end(error);
}

struct DatagramSink {
    session: Arc<SessionGuard>,
    stream: StreamId,
    limits: Limits,
    finished: bool,
}

#[async_trait]
impl MessageSink for DatagramSink {
    /// Sends at once or fails: a frame that does not fit the current maximum datagram size is
    /// [`Error::MessageTooLarge`] (sizes in payload bytes: `limit` is that maximum minus the frame header).
    async fn send(&mut self, mut msg: Message) -> Result<(), Error> {
        self.limits.check_size(msg.payload.len())?;
        if self.finished {
            return Err(Error::Closed(format!("stream {} already finished", self.stream)));
        }
        let connection = &self.session.0;
        let max = connection.max_datagram_size().ok_or(Error::Unsupported("datagrams (the peer does not accept them)"))?;
        let too_large = || Error::MessageTooLarge { size: msg.payload.len(), limit: max.saturating_sub(HEADER_LEN) };
        if HEADER_LEN + msg.payload.len() > max {
            return Err(too_large());
        }
        msg.stream = self.stream;
        connection.send_datagram(frame::encode(&msg)).map_err(|e| match e {
            SendDatagramError::TooLarge => too_large(),
            SendDatagramError::UnsupportedByPeer => Error::Unsupported("datagrams (the peer does not accept them)"),
            SendDatagramError::NotConnected => Error::Closed("session closed".into()),
        })
    }

    /// Datagram streams have no end on the wire: this only refuses further sends.
    async fn finish(&mut self) -> Result<(), Error> {
        self.finished = true;
        Ok(())
    }
}

struct DatagramSource {
    demux: Arc<Demux>,
    rx: mpsc::Receiver<Message>,
    stream: StreamId,
    _session: Arc<SessionGuard>,
}

#[async_trait]
impl MessageSource for DatagramSource {
    /// `Ok(None)` once the peer closed the session gracefully, `Err` if it failed. Cancel-safe (an mpsc receive).
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        match self.rx.recv().await {
            Some(msg) => Ok(Some(msg)),
            None => match self.demux.0.lock().unwrap().end.clone() {
                Some(Some(reason)) => Err(Error::Closed(reason)),
                Some(None) => Ok(None),
                None => Err(Error::Closed(format!("stream {} closed", self.stream))),
            },
        }
    }
}

impl Drop for DatagramSource {
    fn drop(&mut self) {
        self.rx.close();
        let mut routes = self.demux.0.lock().unwrap();
        // Only our own (now closed) route: the id may already have been reopened with a new queue.
        if routes.queues.get(&self.stream).is_some_and(mpsc::Sender::is_closed) {
            routes.queues.remove(&self.stream);
        }
    }
}
