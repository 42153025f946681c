//! The server application of `tlab serve`: echo, source and sink streams, with the server half of the session
//! layer (resume without loss or duplicates) for streams opened with a resume point.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt as _;

use tlab_core::config::{ResumeFrom, StreamMode, StreamOpen};
use tlab_core::message::{ControlOp, Message, MessageKind, StreamId};
use tlab_core::transport::{MessageStream, StreamService};
use tlab_session::driver::{self, Application, Input, Outcome, SharedSession};
use tlab_session::machine::{Event, Role, Session, Timing};

/// Tuning of the server half of the session layer.
#[derive(Debug, Clone, Copy)]
pub struct EchoServiceConfig {
    /// A resumable stream whose client is silent this long is detached (its state kept for resume).
    pub idle_timeout: Duration,
    /// Resume state of a detached stream is forgotten after this long.
    pub resume_window: Duration,
}

impl Default for EchoServiceConfig {
    fn default() -> Self {
        Self { idle_timeout: Duration::from_secs(10), resume_window: Duration::from_secs(120) }
    }
}

/// Echo / source / sink application; see [`StreamMode`] for what each does.
#[derive(Default)]
pub struct EchoService {
    config: EchoServiceConfig,
    resumable: Mutex<HashMap<ResumeKey, Arc<ResumableStream>>>,
}

/// Resume state is per (session id, stream id).
type ResumeKey = (u64, StreamId);

/// What the server keeps of one resumable stream between connections.
struct ResumableStream {
    session: SharedSession,
    /// When the stream was first opened: a source's schedule is relative to it.
    started: Instant,
    /// When a connection last attached or detached.
    touched: Mutex<Instant>,
}

impl EchoService {
    /// A service with the given session-layer tuning.
    pub fn new(config: EchoServiceConfig) -> Self {
        Self { config, resumable: Mutex::default() }
    }

    /// The resume state of (`session`, `stream`), new if unknown and this is the stream's first open, `None` if
    /// unknown and a reopen; forgets detached state older than the window.
    fn entry(&self, resume: ResumeFrom, stream: StreamId) -> Option<Arc<ResumableStream>> {
        let session = resume.session;
        let mut table = self.resumable.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.config.resume_window;
        table.retain(|_, s| {
            lock(&s.session).is_attached() || s.touched.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < window
        });
        if resume.reopen && !table.contains_key(&(session, stream)) {
            return None;
        }
        let timing = Timing { dead_after: self.config.idle_timeout, ..Timing::default() };
        let now = Instant::now();
        let entry = table
            .entry((session, stream))
            .or_insert_with(|| {
                Arc::new(ResumableStream {
                    session: Arc::new(Mutex::new(Session::new(Role::Server, stream, timing))),
                    started: now,
                    touched: Mutex::new(now),
                })
            })
            .clone();
        Some(entry)
    }

    async fn serve_plain(&self, open: StreamOpen, stream: MessageStream) {
        let MessageStream { mut sink, mut source } = stream;
        let outcome: Result<(), tlab_core::Error> = async {
            match open.mode {
                StreamMode::Echo => {
                    // Each wait for a message is followed by taking what has arrived with it, so echoes go out in
                    // batches as large as what the transport delivered at once (up to ECHO_BATCH).
                    while let Some(first) = source.recv().await? {
                        let mut answers = Vec::new();
                        answers.extend(echo_answer(open.stream, first));
                        let mut end = None;
                        while answers.len() < ECHO_BATCH {
                            // `recv` is cancel-safe: a poll that finds nothing ready loses nothing.
                            match source.recv().now_or_never() {
                                Some(Ok(Some(msg))) => answers.extend(echo_answer(open.stream, msg)),
                                Some(other) => {
                                    end = Some(other);
                                    break;
                                }
                                None => break,
                            }
                        }
                        if !answers.is_empty() {
                            sink.send_batch(answers).await?;
                        }
                        match end {
                            Some(Err(e)) => return Err(e),
                            Some(Ok(_)) => break,
                            None => {}
                        }
                    }
                }
                StreamMode::Source { count, size, interval_us } => {
                    let payload = Bytes::from(vec![0xA5u8; size]);
                    let start = tokio::time::Instant::now();
                    for seq in 0..count {
                        if interval_us > 0 {
                            tokio::time::sleep_until(start + Duration::from_micros(interval_us * seq)).await;
                        }
                        sink.send(Message::data(open.stream, seq, payload.clone())).await?;
                    }
                }
                StreamMode::Sink => {
                    let mut count = 0u64;
                    while let Some(msg) = source.recv().await? {
                        count += u64::from(msg.is_data());
                    }
                    sink.send(Message::data(open.stream, 0, Bytes::copy_from_slice(&count.to_be_bytes()))).await?;
                }
            }
            sink.finish().await
        }
        .await;
        if let Err(e) = outcome {
            tracing::debug!(stream = open.stream, error = %e, "stream ended abnormally");
        }
    }

    async fn serve_resumable(&self, open: StreamOpen, resume: ResumeFrom, stream: MessageStream) {
        let Some(entry) = self.entry(resume, open.stream) else {
            tracing::info!(stream = open.stream, session = format!("{:x}", resume.session), "reopen of an unknown session refused");
            let MessageStream { mut sink, .. } = stream;
            let refusal = Message::control(open.stream, ControlOp::UnknownSession, 0);
            if let Err(e) = async { sink.send(refusal).await?; sink.finish().await }.await {
                tracing::debug!(stream = open.stream, error = %e, "refusal not delivered");
            }
            return;
        };
        let generation = lock(&entry.session).attach(Instant::now(), Some(resume.next_expected));
        let mut app = ResumableApp::new(open, &entry);
        let outcome = driver::drive(&entry.session, generation, stream, &mut app).await;
        *entry.touched.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let session = format!("{:x}", resume.session);
        match outcome {
            // Written is not received: the connection may die before the client has our last echoes and our end,
            // and its reopen must still find the stream (which then resends them and ends again). So the state
            // stays, detached, until the resume window forgets it.
            Outcome::Closed => lock(&entry.session).detach(),
            Outcome::Superseded => tracing::debug!(stream = open.stream, session, "resumed on a newer connection"),
            Outcome::Lost(e) => tracing::debug!(stream = open.stream, session, error = %e, "resumable stream detached"),
            Outcome::Failed(e) => tracing::info!(stream = open.stream, session, error = %e, "resumable stream failed"),
        }
    }
}

/// Most echoes written with one [`tlab_core::MessageSink::send_batch`] on a plain echo stream.
const ECHO_BATCH: usize = 64;

/// What a plain echo stream answers to `msg`: the data message itself, a pong to a ping, nothing to other controls.
fn echo_answer(stream: StreamId, msg: Message) -> Option<Message> {
    match (msg.kind, msg.control_op()) {
        (MessageKind::Data, _) => Some(msg),
        (_, Some(ControlOp::Ping)) => Some(Message::control(stream, ControlOp::Pong, msg.seq)),
        _ => None,
    }
}

fn lock(session: &SharedSession) -> std::sync::MutexGuard<'_, Session> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// Echo, source or sink on top of a server [`Session`]. Everything that must survive a reconnect lives in the
/// session (what was delivered, what was sent) or in the [`ResumableStream`] (when the source started).
struct ResumableApp {
    open: StreamOpen,
    payload: Bytes,
    started: tokio::time::Instant,
    next_source_seq: u64,
}

impl ResumableApp {
    fn new(open: StreamOpen, entry: &ResumableStream) -> Self {
        let payload = match open.mode {
            StreamMode::Source { size, .. } => Bytes::from(vec![0xA5u8; size]),
            _ => Bytes::new(),
        };
        let next_source_seq = lock(&entry.session).next_send_seq();
        Self { open, payload, started: entry.started.into(), next_source_seq }
    }

    /// A source that sent its `count` finishes its direction: the client's direction is not needed for it (the
    /// client finishes its own when it sees the end, which closes the stream on both sides).
    fn finish_if_sent(&self, session: &mut Session) {
        if matches!(self.open.mode, StreamMode::Source { .. }) && self.next_source_due().is_none() {
            session.finish();
        }
    }

    /// When the next source message is due, if the source has more to send.
    fn next_source_due(&self) -> Option<tokio::time::Instant> {
        match self.open.mode {
            StreamMode::Source { count, interval_us, .. } if self.next_source_seq < count => {
                Some(self.started + Duration::from_micros(interval_us * self.next_source_seq))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Application for ResumableApp {
    async fn input(&mut self, can_send: bool) -> Input {
        match self.next_source_due().filter(|_| can_send) {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                Input::Wake
            }
            None => std::future::pending().await,
        }
    }

    fn on_event(&mut self, _now: Instant, event: Event, session: &mut Session) {
        match event {
            Event::Delivered(msg) if self.open.mode == StreamMode::Echo => {
                session.send(msg);
            }
            // The client's end of its direction does not cut a source short: it finishes by itself.
            Event::PeerFinished if matches!(self.open.mode, StreamMode::Source { .. }) => {}
            Event::PeerFinished => {
                // Sink: one summary (the data count), sent once even across reconnects.
                if self.open.mode == StreamMode::Sink && session.next_send_seq() == 0 {
                    let count = session.next_expected();
                    session.send(Message::data(self.open.stream, 0, Bytes::copy_from_slice(&count.to_be_bytes())));
                }
                session.finish();
            }
            // Attached (first open or resume): a source with nothing left to send (`count=0`, or all sent before a
            // reconnect) finishes at once.
            Event::Resumed { .. } => self.finish_if_sent(session),
            _ => {}
        }
    }

    fn apply(&mut self, _now: Instant, _input: Input, session: &mut Session) {
        if self.next_source_due().is_some() && session.can_send() {
            self.next_source_seq = session.send(Message::data(self.open.stream, 0, self.payload.clone())) + 1;
            self.finish_if_sent(session);
        }
    }
}

#[async_trait]
impl StreamService for EchoService {
    async fn serve(&self, open: StreamOpen, stream: MessageStream) {
        match open.resume {
            None => self.serve_plain(open, stream).await,
            Some(resume) => self.serve_resumable(open, resume, stream).await,
        }
    }
}
