//! Mode `ws`: one logical stream on one WebSocket connection, read and written directly by the stream's halves (no
//! task in between).
//!
//! A direction ends with text `fin <stream>`, not with a close frame: tungstenite answers a close at once and then
//! refuses to send, which would forbid the server's answer after the client finished (sink mode's count, late
//! echoes). Once both directions are finished, the side that notices sends close 1000; a server whose application
//! is done with the stream first (a source) closes when it is ([`Link::close_after_service`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use tlab_core::frame::encode;
use tlab_core::{Error, Limits, Message, MessageSink, MessageSource, MessageStream, StreamId};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::wire::{Control, Event, Failure, Writer, Ws, WsReader, classify};

/// What both halves of a per-stream connection share.
pub(crate) struct Link {
    pub(crate) writer: Writer,
    stream: StreamId,
    sent_fin: AtomicBool,
    got_fin: AtomicBool,
}

impl Link {
    /// The server's application let go of the stream: ends the connection with close 1000 if the server's
    /// direction was finished (after its `fin`), 1011 if not (the application failed), unless a close frame went
    /// either way already. The client may not have finished its direction: a source does not need it.
    pub(crate) async fn close_after_service(&self) {
        if self.writer.closing() {
            return;
        }
        let code = if self.sent_fin.load(Ordering::SeqCst) { CloseCode::Normal } else { CloseCode::Error };
        self.writer.close(code, "").await;
    }

    /// Marks one direction finished; closes the connection when the other one is too.
    async fn finished(&self, mine: &AtomicBool, other: &AtomicBool) {
        mine.store(true, Ordering::SeqCst);
        if other.load(Ordering::SeqCst) {
            self.writer.close(CloseCode::Normal, "").await;
        }
    }
}

/// Splits `ws` into the two halves of stream `stream`; the returned [`Link`] lets the owner close it.
pub(crate) fn stream(ws: Ws, stream: StreamId, limits: Limits) -> (MessageStream, Arc<Link>) {
    let (sink, reader) = ws.split();
    let link = Arc::new(Link {
        writer: Writer::new(sink),
        stream,
        sent_fin: AtomicBool::new(false),
        got_fin: AtomicBool::new(false),
    });
    let halves = MessageStream {
        sink: Box::new(LinkSink { link: link.clone(), limits }),
        source: Box::new(LinkSource { link: link.clone(), reader, max_payload: limits.max_message_size, done: None }),
    };
    (halves, link)
}

struct LinkSink {
    link: Arc<Link>,
    limits: Limits,
}

impl LinkSink {
    /// The binary message carrying `msg` on this stream, unless the limits or a finished direction refuse it.
    fn frame(&self, mut msg: Message) -> Result<WsMessage, Error> {
        self.limits.check_size(msg.payload.len())?;
        if self.link.sent_fin.load(Ordering::SeqCst) {
            return Err(Error::Closed(format!("stream {} already finished", self.link.stream)));
        }
        msg.stream = self.link.stream;
        Ok(WsMessage::Binary(encode(&msg)))
    }
}

#[async_trait]
impl MessageSink for LinkSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        let frame = self.frame(msg)?;
        self.link.writer.send(frame).await
    }

    /// Feeds every message to tungstenite and flushes once.
    async fn send_batch(&mut self, msgs: Vec<Message>) -> Result<(), Error> {
        let this = &*self;
        this.link.writer.send_batch(msgs, |msg| this.frame(msg)).await
    }

    async fn finish(&mut self) -> Result<(), Error> {
        if self.link.sent_fin.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.link.writer.send_control(&Control::Fin(self.link.stream)).await?;
        self.link.finished(&self.link.sent_fin, &self.link.got_fin).await;
        Ok(())
    }
}

struct LinkSource {
    link: Arc<Link>,
    reader: WsReader,
    max_payload: usize,
    /// Set once the stream ended: `None` inside for a graceful end, the reason of the failure otherwise.
    done: Option<Option<String>>,
}

impl LinkSource {
    /// Handles one event; `None` means "nothing for the caller, read on".
    async fn on_event(&mut self, event: Result<Event, Failure>) -> Option<Result<Option<Message>, Error>> {
        let stream = self.link.stream;
        let result = match event {
            Ok(Event::Frame(msg)) if msg.stream == stream => return Some(Ok(Some(msg))),
            Ok(Event::Frame(msg)) => Err(Failure::protocol(format!("frame of stream {} on the connection of stream {stream}", msg.stream))),
            Ok(Event::Control(Control::Fin(s))) if s == stream => {
                self.done = Some(None);
                self.link.finished(&self.link.got_fin, &self.link.sent_fin).await;
                return Some(Ok(None));
            }
            Ok(Event::Control(other)) => Err(Failure::protocol(format!("`{}` on the connection of stream {stream}", other.to_text()))),
            Ok(Event::Nothing) => return None,
            Ok(Event::End) => Ok(()),
            Err(failure) => Err(failure),
        };
        Some(match result {
            Ok(()) => {
                let end = self.link.writer.end();
                self.done = Some(end.as_ref().err().map(|e| e.to_string()));
                self.link.writer.acknowledge_close().await;
                end
            }
            Err(failure) => {
                self.done = Some(Some(failure.error.to_string()));
                Err(self.link.writer.fail(failure).await)
            }
        })
    }
}

#[async_trait]
impl MessageSource for LinkSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        loop {
            match &self.done {
                Some(None) => return Ok(None),
                Some(Some(reason)) => return Err(Error::Closed(reason.clone())),
                None => {}
            }
            // `next` is cancel-safe (tungstenite buffers partial frames); what follows it completes before the
            // message counts as consumed, except a close frame being sent, which `done` already accounts for.
            let item = self.reader.next().await;
            if let Some(out) = self.on_event(classify(item, self.max_payload)).await {
                return out;
            }
        }
    }
}
