//! The one async driver of a [`Session`] on one connection, used by both ends. It never blocks its reader behind its
//! writer: reading, writing (a batch at a time with [`MessageSink::send_batch`], on a future that owns the sink), the machine's timer and the
//! application's input are branches of one `select!`, so heartbeats and acknowledgements keep flowing while the
//! peer's receive window is full, and a full outbox only pauses reading (see [`Session::wants_read`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use tlab_core::{Error, Message};
use tlab_core::transport::{MessageSink, MessageStream};

use crate::machine::{Event, Session, Transmit};

/// Most transmits written by one write future before the loop looks around again.
const WRITE_BATCH: usize = 64;

/// A session machine shared between the driver of its current connection and whoever replaces it.
pub type SharedSession = Arc<Mutex<Session>>;

/// What sits above the session machine (the user's stream on a client, echo/source/sink on a server).
#[async_trait]
pub trait Application: Send {
    /// What the application wants from the session next; resolves when it has input (a message to send, a
    /// permit to deliver, a timer). Must be cancel-safe: it is one branch of a `select!`.
    async fn input(&mut self, can_send: bool) -> Input;
    /// Reacts to one event of the machine (delivered data, peer finished, resumed). Must not block.
    fn on_event(&mut self, now: Instant, event: Event, session: &mut Session);
    /// Applies what [`Application::input`] returned.
    fn apply(&mut self, now: Instant, input: Input, session: &mut Session);
    /// Whether the application can take more delivered messages now (false pauses reading).
    fn wants_more(&self) -> bool {
        true
    }
}

/// Input of an [`Application`] to its session, opaque to the driver.
pub enum Input {
    /// The application has a data message to send.
    Send(tlab_core::Message),
    /// The application has ended its direction.
    Finish,
    /// Something application-specific happened (a permit, a timer); [`Application::apply`] knows what.
    Wake,
}

/// How driving one connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The stream is over.
    Closed,
    /// The connection broke; reconnect and attach again.
    Lost(Error),
    /// The stream cannot continue (protocol violation, fatal error).
    Failed(Error),
    /// A newer connection took the session over.
    Superseded,
}

type WriteFuture = BoxFuture<'static, (Box<dyn MessageSink>, Result<(), Error>)>;

/// Writes `batch` in order: each run of messages with one [`MessageSink::send_batch`], a finish with `finish`.
fn write_batch(mut sink: Box<dyn MessageSink>, batch: Vec<Transmit>) -> WriteFuture {
    async move {
        let mut messages = Vec::with_capacity(batch.len());
        for transmit in batch {
            match transmit {
                Transmit::Message(msg) => messages.push(msg),
                Transmit::Finish => {
                    let result = match send_all(&mut sink, &mut messages).await {
                        Ok(()) => sink.finish().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        return (sink, Err(e));
                    }
                }
            }
        }
        let result = send_all(&mut sink, &mut messages).await;
        (sink, result)
    }
    .boxed()
}

/// Sends and empties `messages` (nothing to do when empty).
async fn send_all(sink: &mut Box<dyn MessageSink>, messages: &mut Vec<Message>) -> Result<(), Error> {
    if messages.is_empty() {
        return Ok(());
    }
    sink.send_batch(std::mem::take(messages)).await
}

fn lock(session: &SharedSession) -> MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drives `session` (already attached as `generation`) over `stream` until the stream closes, the connection is
/// lost, the stream fails, or a newer attachment supersedes this one.
pub async fn drive(session: &SharedSession, generation: u64, stream: MessageStream, app: &mut dyn Application) -> Outcome {
    let MessageStream { sink, mut source } = stream;
    let mut idle_sink = Some(sink);
    let mut writing: Option<WriteFuture> = None;
    loop {
        let (deadline, read, can_send) = {
            let mut s = lock(session);
            if s.generation() != generation {
                return Outcome::Superseded;
            }
            let now = Instant::now();
            s.handle_timeout(now);
            while let Some(event) = s.poll_event() {
                match event {
                    Event::ConnectionLost(e) => return Outcome::Lost(e),
                    Event::Failed(e) => return Outcome::Failed(e),
                    other => app.on_event(now, other, &mut s),
                }
            }
            if writing.is_none()
                && let Some(sink) = idle_sink.take()
            {
                let batch: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).take(WRITE_BATCH).collect();
                if batch.is_empty() {
                    if s.is_closed() {
                        return Outcome::Closed;
                    }
                    idle_sink = Some(sink);
                } else {
                    writing = Some(write_batch(sink, batch));
                }
            }
            (s.poll_timeout(), s.wants_read() && app.wants_more(), s.can_send())
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            incoming = source.recv(), if read => {
                let mut s = lock(session);
                if s.generation() != generation {
                    return Outcome::Superseded;
                }
                let now = Instant::now();
                match incoming {
                    Ok(Some(msg)) => s.handle_message(now, msg),
                    Ok(None) => s.handle_peer_finished(now),
                    Err(e) => s.handle_connection_error(now, e),
                }
            }
            (sink, result) = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                writing = None;
                idle_sink = Some(sink);
                if let Err(e) = result {
                    let mut s = lock(session);
                    if s.generation() != generation {
                        return Outcome::Superseded;
                    }
                    s.handle_connection_error(Instant::now(), e);
                }
            }
            () = timer => {}
            input = app.input(can_send) => {
                let mut s = lock(session);
                if s.generation() != generation {
                    return Outcome::Superseded;
                }
                app.apply(Instant::now(), input, &mut s);
            }
        }
    }
}
