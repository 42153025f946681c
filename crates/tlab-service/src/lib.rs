//! The server application of `tlab serve`: echo, source and sink streams, with the server half of the session
//! layer (resume without loss or duplicates) for streams opened with a resume point.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use tlab_core::config::{StreamMode, StreamOpen};
use tlab_core::message::{ControlOp, Message, MessageKind, StreamId};
use tlab_session::reliable::{Incoming, ReliableState};
use tlab_core::transport::{MessageSink, MessageStream, StreamService};

/// Most unacknowledged messages a resumable source stream sends before waiting for an ack.
const SOURCE_WINDOW: usize = 4096;

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
    resumable: Mutex<HashMap<ResumeKey, Arc<Mutex<ResumableStream>>>>,
}

/// Resume state is per (session id, stream id).
type ResumeKey = (u64, StreamId);

#[derive(Default)]
struct ResumableStream {
    reliable: ReliableState,
    /// Bumped by each attaching connection; an older connection's task stops when it sees a newer one.
    generation: u64,
    sink_count: u64,
    last_activity: Option<Instant>,
}

impl EchoService {
    /// A service with the given session-layer tuning.
    pub fn new(config: EchoServiceConfig) -> Self {
        Self { config, resumable: Mutex::default() }
    }

    fn attach(&self, session: u64, stream: StreamId) -> (Arc<Mutex<ResumableStream>>, u64) {
        let mut table = self.resumable.lock().unwrap();
        let window = self.config.resume_window;
        table.retain(|_, s| s.lock().unwrap().last_activity.is_none_or(|t| t.elapsed() < window));
        let entry = table.entry((session, stream)).or_default().clone();
        let generation = {
            let mut s = entry.lock().unwrap();
            s.generation += 1;
            s.last_activity = Some(Instant::now());
            s.generation
        };
        (entry, generation)
    }

    async fn serve_plain(&self, open: StreamOpen, stream: MessageStream) {
        let MessageStream { mut sink, mut source } = stream;
        let outcome: Result<(), tlab_core::Error> = async {
            match open.mode {
                StreamMode::Echo => {
                    while let Some(msg) = source.recv().await? {
                        match (msg.kind, msg.control_op()) {
                            (MessageKind::Data, _) => sink.send(msg).await?,
                            (_, Some(ControlOp::Ping)) => sink.send(Message::control(open.stream, ControlOp::Pong, msg.seq)).await?,
                            _ => {}
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

    async fn serve_resumable(&self, open: StreamOpen, session: u64, peer_next_expected: u64, stream: MessageStream) {
        let (entry, generation) = self.attach(session, open.stream);
        let MessageStream { mut sink, mut source } = stream;
        let current = |s: &ResumableStream| s.generation == generation;
        let outcome: Result<(), tlab_core::Error> = async {
            let (resend, next_expected) = {
                let mut s = entry.lock().unwrap();
                (s.reliable.resume(peer_next_expected), s.reliable.ack_now())
            };
            sink.send(Message::control(open.stream, ControlOp::Resume, next_expected)).await?;
            for msg in resend {
                sink.send(msg).await?;
            }
            let source_params = match open.mode {
                StreamMode::Source { count, size, interval_us } => Some((count, Bytes::from(vec![0xA5u8; size]), interval_us)),
                _ => None,
            };
            let start = tokio::time::Instant::now();
            loop {
                let (can_source, next_send_at) = {
                    let s = entry.lock().unwrap();
                    if !current(&s) {
                        return Ok(());
                    }
                    match &source_params {
                        Some((count, _, interval_us)) => (
                            s.reliable.next_send_seq() < *count && s.reliable.unacked_len() < SOURCE_WINDOW,
                            start + Duration::from_micros(interval_us * s.reliable.next_send_seq()),
                        ),
                        None => (false, start),
                    }
                };
                tokio::select! {
                    incoming = tokio::time::timeout(self.config.idle_timeout, source.recv()) => {
                        let Ok(incoming) = incoming else {
                            return Err(tlab_core::Error::PeerDead(self.config.idle_timeout));
                        };
                        let Some(msg) = incoming? else {
                            return self.finish_resumable(&entry, open, &mut *sink).await;
                        };
                        let mut out = Vec::with_capacity(2);
                        {
                            let mut s = entry.lock().unwrap();
                            if !current(&s) {
                                return Ok(());
                            }
                            s.last_activity = Some(Instant::now());
                            match (msg.kind, msg.control_op()) {
                                (MessageKind::Data, _) => match s.reliable.on_data(msg.seq) {
                                    Incoming::Deliver => {
                                        match open.mode {
                                            StreamMode::Echo => {
                                                s.reliable.record_sent(&msg);
                                                out.push(msg);
                                            }
                                            _ => s.sink_count += 1,
                                        }
                                        out.extend(s.reliable.ack_due().map(|n| Message::control(open.stream, ControlOp::Ack, n)));
                                    }
                                    Incoming::Duplicate => {}
                                    Incoming::Gap { expected } => {
                                        return Err(tlab_core::Error::Protocol(format!("seq {} received, {expected} expected", msg.seq)));
                                    }
                                },
                                (_, Some(ControlOp::Ack)) => s.reliable.on_ack(msg.seq),
                                (_, Some(ControlOp::Ping)) => {
                                    out.push(Message::control(open.stream, ControlOp::Pong, msg.seq));
                                    out.push(Message::control(open.stream, ControlOp::Ack, s.reliable.ack_now()));
                                }
                                _ => {}
                            }
                        }
                        for m in out {
                            sink.send(m).await?;
                        }
                    }
                    _ = tokio::time::sleep_until(next_send_at), if can_source => {
                        let (_, payload, _) = source_params.as_ref().expect("source mode");
                        let msg = {
                            let mut s = entry.lock().unwrap();
                            let msg = Message::data(open.stream, s.reliable.next_send_seq(), payload.clone());
                            s.reliable.record_sent(&msg);
                            msg
                        };
                        sink.send(msg).await?;
                    }
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            tracing::debug!(stream = open.stream, session = format!("{session:x}"), error = %e, "resumable stream detached");
        }
    }

    /// The client finished its direction: answer as the mode says and end ours.
    async fn finish_resumable(
        &self,
        entry: &Mutex<ResumableStream>,
        open: StreamOpen,
        sink: &mut dyn MessageSink,
    ) -> Result<(), tlab_core::Error> {
        let summary = {
            let mut s = entry.lock().unwrap();
            match open.mode {
                StreamMode::Sink if s.reliable.next_send_seq() == 0 => {
                    let msg = Message::data(open.stream, 0, Bytes::copy_from_slice(&s.sink_count.to_be_bytes()));
                    s.reliable.record_sent(&msg);
                    Some(msg)
                }
                _ => None,
            }
        };
        if let Some(msg) = summary {
            sink.send(msg).await?;
        }
        sink.finish().await
    }
}

#[async_trait]
impl StreamService for EchoService {
    async fn serve(&self, open: StreamOpen, stream: MessageStream) {
        match open.resume {
            None => self.serve_plain(open, stream).await,
            Some(resume) => self.serve_resumable(open, resume.session, resume.next_expected, stream).await,
        }
    }
}
