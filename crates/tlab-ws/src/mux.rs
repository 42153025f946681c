//! Mode `ws-mux`: many logical streams on one WebSocket connection. Frames carry their stream id; one reader task
//! per connection routes them to per-stream channels; sinks write directly through the shared [`Writer`].
//!
//! A stream is in the table from its `open` until both directions are finished (`fin` sent and received) or both of
//! its halves are dropped; the table's size is what `limits.max_streams` bounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::StreamExt;
use tlab_core::frame::encode;
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamId, StreamService};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::wire::{Control, Event, Failure, Writer, Ws, WsReader, classify, replicate};

/// Messages buffered per stream before the reader (and so every stream of the connection) waits for its consumer.
const STREAM_QUEUE: usize = 1024;

type Inbound = Result<Option<Message>, Error>;

struct Entry {
    /// Distinguishes this opening from an earlier one of the same stream id.
    id: u64,
    /// Where received frames go; `None` once the peer finished its direction.
    route: Option<mpsc::Sender<Inbound>>,
    sent_fin: bool,
}

#[derive(Default)]
struct Table {
    entries: HashMap<StreamId, Entry>,
    next_id: u64,
}

/// One multiplexed connection: its writer and its stream table.
pub(crate) struct Mux {
    pub(crate) writer: Writer,
    table: Mutex<Table>,
    limits: Limits,
    /// Dropped with the last handle, which stops the reader task of a client connection.
    _stop: oneshot::Sender<()>,
}

/// Which end of the connection the reader serves.
pub(crate) enum Side {
    /// Accepts `refused`.
    Client,
    /// Accepts `open`, and serves each opened stream on a task of `tasks` (aborted with the connection).
    Server { service: Arc<dyn StreamService>, tasks: JoinSet<()> },
}

impl Mux {
    /// Splits `ws`; the reading half and the stop signal go to [`read_loop`].
    pub(crate) fn new(ws: Ws, limits: Limits) -> (Arc<Self>, WsReader, oneshot::Receiver<()>) {
        let (sink, reader) = ws.split();
        let (stop, stopped) = oneshot::channel();
        let mux = Arc::new(Self { writer: Writer::new(sink), table: Mutex::default(), limits, _stop: stop });
        (mux, reader, stopped)
    }

    /// Adds `stream` to the table and returns its two halves.
    pub(crate) fn open(self: &Arc<Self>, stream: StreamId) -> Result<MessageStream, Error> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut table = self.table.lock().unwrap();
        if table.entries.contains_key(&stream) {
            return Err(Error::Protocol(format!("stream {stream} is already open")));
        }
        self.limits.check_streams(stream, table.entries.len())?;
        table.next_id += 1;
        let id = table.next_id;
        table.entries.insert(stream, Entry { id, route: Some(tx), sent_fin: false });
        drop(table);
        let handle = Arc::new(Handle { mux: self.clone(), stream, id });
        Ok(MessageStream {
            sink: Box::new(MuxSink { handle: handle.clone(), finished: false }),
            source: Box::new(MuxSource { _handle: handle, inbound: rx, done: None }),
        })
    }

    /// The peer finished its direction of `stream`: takes its route out (to deliver the end on).
    fn peer_finished(&self, stream: StreamId) -> Option<mpsc::Sender<Inbound>> {
        let mut table = self.table.lock().unwrap();
        let entry = table.entries.get_mut(&stream)?;
        let route = entry.route.take();
        if entry.sent_fin {
            table.entries.remove(&stream);
        }
        route
    }

    /// This side finished its direction of opening `id` of `stream`.
    fn finished(&self, stream: StreamId, id: u64) {
        let mut table = self.table.lock().unwrap();
        let Some(entry) = table.entries.get_mut(&stream).filter(|e| e.id == id) else { return };
        entry.sent_fin = true;
        if entry.route.is_none() {
            table.entries.remove(&stream);
        }
    }

    /// The route of a frame of `stream`, if anyone still listens.
    fn route(&self, stream: StreamId) -> Option<mpsc::Sender<Inbound>> {
        self.table.lock().unwrap().entries.get(&stream).and_then(|e| e.route.clone())
    }

    /// Ends every stream with what `end` makes (the connection is over).
    fn end_all(&self, end: impl Fn() -> Inbound) {
        let entries = std::mem::take(&mut self.table.lock().unwrap().entries);
        for route in entries.into_values().filter_map(|e| e.route) {
            // A full queue is not waited for: its consumer then sees the channel closed, which is an error too.
            let _ = route.try_send(end());
        }
    }
}

/// Reads the connection until it ends, routing frames to streams; on the server also opens streams.
pub(crate) async fn read_loop(mux: Weak<Mux>, mut reader: WsReader, mut stop: oneshot::Receiver<()>, mut side: Side, max_payload: usize) {
    loop {
        let item = tokio::select! {
            item = reader.next() => item,
            _ = &mut stop => return,
            () = reap(&mut side) => continue,
        };
        let Some(mux) = mux.upgrade() else { return };
        let failure = match classify(item, max_payload) {
            Ok(Event::Frame(msg)) => {
                let stream = msg.stream;
                match mux.route(stream) {
                    Some(route) if route.send(Ok(Some(msg))).await.is_ok() => {}
                    // Frames may race with a refusal, a finish or a consumer that went away: not the peer's fault.
                    _ => tracing::debug!(stream, "frame for a stream nobody reads: dropped"),
                }
                continue;
            }
            Ok(Event::Control(Control::Fin(stream))) => {
                if let Some(route) = mux.peer_finished(stream) {
                    let _ = route.send(Ok(None)).await;
                }
                continue;
            }
            Ok(Event::Control(Control::Open(open))) => match &mut side {
                Side::Server { service, tasks } => match mux.open(open.stream) {
                    Ok(stream) => {
                        let service = service.clone();
                        tasks.spawn(async move { service.serve(open, stream).await });
                        continue;
                    }
                    Err(Error::TooManyStreams { stream, limit }) => {
                        tracing::warn!(stream, limit, "stream refused: too many streams on one connection");
                        let _ = mux.writer.send_control(&Control::Refused { stream, limit }).await;
                        continue;
                    }
                    Err(e) => Failure::protocol(e.to_string()),
                },
                Side::Client => Failure::protocol("`open` from the server".into()),
            },
            Ok(Event::Control(Control::Refused { stream, limit })) => match side {
                Side::Client => {
                    let mut table = mux.table.lock().unwrap();
                    if let Some(route) = table.entries.remove(&stream).and_then(|e| e.route) {
                        let _ = route.try_send(Err(Error::TooManyStreams { stream, limit }));
                    }
                    continue;
                }
                Side::Server { .. } => Failure::protocol("`refused` from the client".into()),
            },
            Ok(Event::Nothing) => continue,
            Ok(Event::End) => {
                mux.end_all(|| mux.writer.end());
                mux.writer.acknowledge_close().await;
                return;
            }
            Err(failure) => failure,
        };
        let error = mux.writer.fail(failure).await;
        mux.end_all(|| Err(replicate(&error)));
        return;
    }
}

/// Completes when a served stream's task ends (reaping it); never on a client.
async fn reap(side: &mut Side) {
    match side {
        Side::Server { tasks, .. } if !tasks.is_empty() => {
            let _ = tasks.join_next().await;
        }
        _ => std::future::pending().await,
    }
}

/// Held by both halves of a stream: the stream leaves the table when both are dropped.
struct Handle {
    mux: Arc<Mux>,
    stream: StreamId,
    id: u64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut table = self.mux.table.lock().unwrap();
        if table.entries.get(&self.stream).is_some_and(|e| e.id == self.id) {
            table.entries.remove(&self.stream);
        }
    }
}

struct MuxSink {
    handle: Arc<Handle>,
    finished: bool,
}

impl MuxSink {
    /// The binary message carrying `msg` on this stream, unless the limits or a finished direction refuse it.
    fn frame(&self, mut msg: Message) -> Result<WsMessage, Error> {
        self.handle.mux.limits.check_size(msg.payload.len())?;
        if self.finished {
            return Err(Error::Closed(format!("stream {} already finished", self.handle.stream)));
        }
        msg.stream = self.handle.stream;
        Ok(WsMessage::Binary(encode(&msg)))
    }
}

#[async_trait]
impl MessageSink for MuxSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        let frame = self.frame(msg)?;
        self.handle.mux.writer.send(frame).await
    }

    /// Feeds every message to tungstenite and flushes once, holding the connection's writer for the batch.
    async fn send_batch(&mut self, msgs: Vec<Message>) -> Result<(), Error> {
        let this = &*self;
        this.handle.mux.writer.send_batch(msgs, |msg| this.frame(msg)).await
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let Handle { mux, stream, id } = &*self.handle;
        // The table is updated under the writer lock, so a reopening of this id cannot overtake the `fin`.
        let fin = WsMessage::Text(Control::Fin(*stream).to_text().into());
        mux.writer.send_after(fin, || mux.finished(*stream, *id))
            .await
    }
}

struct MuxSource {
    _handle: Arc<Handle>,
    inbound: mpsc::Receiver<Inbound>,
    /// Set once the stream ended: `None` inside for a graceful end, the reason of the failure otherwise.
    done: Option<Option<String>>,
}

#[async_trait]
impl MessageSource for MuxSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        match &self.done {
            Some(None) => return Ok(None),
            Some(Some(reason)) => return Err(Error::Closed(reason.clone())),
            None => {}
        }
        // `mpsc::Receiver::recv` is cancel-safe.
        let result = match self.inbound.recv().await {
            Some(result) => result,
            None => Err(Error::Closed("connection lost".into())),
        };
        match &result {
            Ok(Some(_)) => {}
            Ok(None) => self.done = Some(None),
            Err(e) => self.done = Some(Some(e.to_string())),
        }
        result
    }
}
