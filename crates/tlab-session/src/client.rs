//! The client half of the session layer, independent of the transport: heartbeats detect a dead peer, reconnects
//! back off exponentially with jitter, and each stream resumes from the last position both sides acknowledged, so
//! a reliable stream survives a dropped connection with no loss and no duplicates.
//!
//! Wire protocol (see docs/PROTOCOL.md): a resumable stream is opened with `session` and `next` in its
//! [`crate::StreamOpen`]; the server's first message is a `Resume(n)` control; then both sides retransmit what the
//! other lacks, acknowledge every [`crate::reliable::ACK_EVERY`] messages and on every `Ping`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use tlab_core::config::{ClientConfig, ResumeFrom, StreamMode, StreamOpen};
use tlab_core::Error;
use tlab_core::message::{ControlOp, Message, MessageKind, StreamId};
use crate::reliable::{Incoming, ReliableState};
use tlab_core::transport::{Connection, MessageSink, MessageSource, MessageStream, Transport};

/// Tuning of the client session layer.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// How often a ping (with an ack) is sent on each stream.
    pub heartbeat_interval: Duration,
    /// The peer is presumed dead after this long without any message.
    pub dead_after: Duration,
    /// First reconnect delay; doubled per failed attempt up to `backoff_max`, jittered to [½, 1]×.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Stop reconnecting (and fail the stream) after this long without a working connection.
    pub give_up_after: Duration,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
            seed: 0,
        }
    }
}

/// The delay before reconnect attempt `attempt` (0-based): `min(initial·2^attempt, max)` scaled by a uniform
/// factor in [0.5, 1] ("equal jitter"), so that many clients cut at once do not reconnect in lockstep.
pub fn backoff_delay(config: &SessionConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = config.backoff_initial.saturating_mul(1u32 << attempt.min(20));
    let capped = exp.min(config.backoff_max);
    capped.mul_f64(rng.random_range(0.5..=1.0))
}

struct ConnectionSlot {
    generation: u64,
    connection: Option<Arc<dyn Connection>>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    client: ClientConfig,
    config: SessionConfig,
    id: u64,
    slot: tokio::sync::Mutex<ConnectionSlot>,
    rng: std::sync::Mutex<ChaCha8Rng>,
    reconnects: AtomicU64,
}

impl Inner {
    /// The current connection, or a new one when `broken` names the current generation.
    async fn connection(&self, broken: Option<u64>) -> Result<(u64, Arc<dyn Connection>), Error> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = &slot.connection {
            if broken != Some(slot.generation) {
                return Ok((slot.generation, conn.clone()));
            }
            conn.close().await;
            slot.connection = None;
        }
        let conn: Arc<dyn Connection> = Arc::from(self.transport.connect(self.client.clone()).await?);
        if slot.generation > 0 {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        slot.generation += 1;
        slot.connection = Some(conn.clone());
        Ok((slot.generation, conn))
    }

    /// Opens the stream on a working connection, reconnecting with backoff until `give_up_after`.
    async fn open(&self, stream: StreamId, mode: StreamMode, next_expected: u64) -> Result<(u64, MessageStream), Error> {
        let open = StreamOpen { stream, mode, resume: Some(ResumeFrom { session: self.id, next_expected }) };
        let started = Instant::now();
        let mut broken = None;
        for attempt in 0.. {
            let result = match self.connection(broken).await {
                Ok((generation, conn)) => {
                    broken = Some(generation);
                    tokio::time::timeout(self.client.connect_timeout, conn.open_stream(open))
                        .await
                        .unwrap_or_else(|_| Err(Error::Timeout("opening a stream".into())))
                        .map(|s| (generation, s))
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(opened) => return Ok(opened),
                Err(e) if e.is_retryable() && started.elapsed() < self.config.give_up_after => {
                    let delay = backoff_delay(&self.config, attempt, &mut *self.rng.lock().unwrap());
                    tracing::debug!(stream, attempt, ?delay, error = %e, "reconnecting");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop only ends by returning")
    }
}

/// A client session whose streams survive connection loss.
#[derive(Clone)]
pub struct ResilientSession {
    inner: Arc<Inner>,
}

impl ResilientSession {
    /// Connects once (so that a wrong token or certificate fails here, not in a retry loop).
    pub async fn connect(transport: Arc<dyn Transport>, client: ClientConfig, config: SessionConfig) -> Result<Self, Error> {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        // The id must differ between clients even when they share a jitter seed: the server keys resume state by it.
        let id = rand::random::<u64>() | 1;
        let inner = Arc::new(Inner {
            transport,
            client,
            config,
            id,
            slot: tokio::sync::Mutex::new(ConnectionSlot { generation: 0, connection: None }),
            rng: std::sync::Mutex::new(rng),
            reconnects: AtomicU64::new(0),
        });
        inner.connection(None).await?;
        Ok(Self { inner })
    }

    /// How many times a connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Opens a resumable stream. Its data messages get seqs 0, 1, 2… in send order, whatever the caller set.
    pub async fn open_stream(&self, stream: StreamId, mode: StreamMode) -> Result<MessageStream, Error> {
        let (generation, first) = self.inner.open(stream, mode, 0).await?;
        let (to_task, from_user) = mpsc::channel(1024);
        let (to_user, from_task) = mpsc::channel(1024);
        let task = StreamTask { inner: self.inner.clone(), stream, mode, state: ReliableState::new(), user_finished: false };
        tokio::spawn(task.run(generation, first, from_user, to_user));
        Ok(MessageStream {
            sink: Box::new(ResilientSink { to_task, next_seq: 0, stream }),
            source: Box::new(ResilientSource { from_task, ended: false }),
        })
    }

    /// Moves the current connection to a new local address (native migration); transports without it refuse with
    /// [`Error::Unsupported`] and rely on reconnect + resume instead.
    pub async fn rebind(&self, local: std::net::SocketAddr) -> Result<(), Error> {
        let connection = self.inner.slot.lock().await.connection.clone();
        match connection {
            Some(connection) => connection.rebind(local).await,
            None => Err(Error::Closed("no connection to move".into())),
        }
    }

    /// Closes the current connection.
    pub async fn close(&self) {
        if let Some(conn) = self.inner.slot.lock().await.connection.take() {
            conn.close().await;
        }
    }
}

enum Command {
    Send(Message),
    Finish,
}

struct ResilientSink {
    to_task: mpsc::Sender<Command>,
    next_seq: u64,
    stream: StreamId,
}

#[async_trait]
impl MessageSink for ResilientSink {
    async fn send(&mut self, mut msg: Message) -> Result<(), Error> {
        msg.stream = self.stream;
        msg.seq = self.next_seq;
        msg.kind = MessageKind::Data;
        self.to_task.send(Command::Send(msg)).await.map_err(|_| Error::Closed("session stream ended".into()))?;
        self.next_seq += 1;
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), Error> {
        self.to_task.send(Command::Finish).await.map_err(|_| Error::Closed("session stream ended".into()))
    }
}

struct ResilientSource {
    from_task: mpsc::Receiver<Result<Option<Message>, Error>>,
    ended: bool,
}

#[async_trait]
impl MessageSource for ResilientSource {
    async fn recv(&mut self) -> Result<Option<Message>, Error> {
        if self.ended {
            return Ok(None);
        }
        match self.from_task.recv().await {
            Some(Ok(Some(msg))) => Ok(Some(msg)),
            Some(Ok(None)) | None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
        }
    }
}

/// Why one connection's service loop ended.
enum Leave {
    /// The stream is over (graceful end or fatal error already reported).
    Done,
    /// The connection broke; reconnect and resume.
    Reconnect(Error),
}

struct StreamTask {
    inner: Arc<Inner>,
    stream: StreamId,
    mode: StreamMode,
    state: ReliableState,
    user_finished: bool,
}

impl StreamTask {
    async fn run(
        mut self,
        mut generation: u64,
        first: MessageStream,
        mut from_user: mpsc::Receiver<Command>,
        to_user: mpsc::Sender<Result<Option<Message>, Error>>,
    ) {
        let mut current = first;
        loop {
            match self.serve_connection(current, &mut from_user, &to_user).await {
                Leave::Done => return,
                Leave::Reconnect(e) => {
                    tracing::debug!(stream = self.stream, error = %e, "connection lost, resuming");
                    // Mark this generation broken so that the first stream to notice replaces the connection.
                    let _ = self.inner.connection(Some(generation)).await;
                    match self.inner.open(self.stream, self.mode, self.state.next_expected()).await {
                        Ok((g, s)) => {
                            generation = g;
                            current = s;
                        }
                        Err(e) => {
                            let _ = to_user.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn serve_connection(
        &mut self,
        stream: MessageStream,
        from_user: &mut mpsc::Receiver<Command>,
        to_user: &mpsc::Sender<Result<Option<Message>, Error>>,
    ) -> Leave {
        let MessageStream { mut sink, mut source } = stream;
        let config = self.inner.config;
        let stream_id = self.stream;
        // Resume handshake: the server's first message says where to restart.
        match tokio::time::timeout(config.dead_after, source.recv()).await {
            Ok(Ok(Some(msg))) if msg.control_op() == Some(ControlOp::Resume) => {
                for m in self.state.resume(msg.seq) {
                    if let Err(e) = sink.send(m).await {
                        return Leave::Reconnect(e);
                    }
                }
            }
            Ok(Ok(Some(other))) => {
                let _ = to_user.send(Err(Error::Protocol(format!("expected Resume, got {other:?}")))).await;
                return Leave::Done;
            }
            Ok(Ok(None)) => return Leave::Reconnect(Error::Closed("closed before resume".into())),
            Ok(Err(e)) => return Leave::Reconnect(e),
            Err(_) => return Leave::Reconnect(Error::PeerDead(config.dead_after)),
        }
        if self.user_finished && let Err(e) = sink.finish().await {
            return Leave::Reconnect(e);
        }
        let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                command = from_user.recv(), if !self.user_finished => {
                    let result = match command {
                        Some(Command::Send(msg)) => {
                            self.state.record_sent(&msg);
                            sink.send(msg).await
                        }
                        Some(Command::Finish) | None => {
                            self.user_finished = true;
                            sink.finish().await
                        }
                    };
                    if let Err(e) = result {
                        return Leave::Reconnect(e);
                    }
                }
                incoming = source.recv() => {
                    let msg = match incoming {
                        Ok(Some(msg)) => msg,
                        Ok(None) => {
                            let _ = to_user.send(Ok(None)).await;
                            return Leave::Done;
                        }
                        Err(e) if e.is_retryable() => return Leave::Reconnect(e),
                        Err(e) => {
                            let _ = to_user.send(Err(e)).await;
                            return Leave::Done;
                        }
                    };
                    last_heard = Instant::now();
                    let reply = match (msg.kind, msg.control_op()) {
                        (MessageKind::Data, _) => match self.state.on_data(msg.seq) {
                            Incoming::Deliver => {
                                if to_user.send(Ok(Some(msg))).await.is_err() {
                                    return Leave::Done;
                                }
                                // After finishing, our direction carries nothing more, not even acks.
                                let ack = self.state.ack_due().filter(|_| !self.user_finished);
                                ack.map(|n| Message::control(stream_id, ControlOp::Ack, n))
                            }
                            Incoming::Duplicate => None,
                            Incoming::Gap { expected } => {
                                let _ = to_user.send(Err(Error::Protocol(format!("seq {} received, {expected} expected", msg.seq)))).await;
                                return Leave::Done;
                            }
                        },
                        (_, Some(ControlOp::Ack)) => {
                            self.state.on_ack(msg.seq);
                            None
                        }
                        (_, Some(ControlOp::Ping)) if !self.user_finished => {
                            Some(Message::control(stream_id, ControlOp::Pong, msg.seq))
                        }
                        _ => None,
                    };
                    if let Some(reply) = reply && let Err(e) = sink.send(reply).await {
                        return Leave::Reconnect(e);
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > config.dead_after {
                        return Leave::Reconnect(Error::PeerDead(config.dead_after));
                    }
                    if self.user_finished {
                        continue;
                    }
                    let ping = Message::control(stream_id, ControlOp::Ping, 0);
                    let ack = Message::control(stream_id, ControlOp::Ack, self.state.ack_now());
                    for m in [ping, ack] {
                        if let Err(e) = sink.send(m).await {
                            return Leave::Reconnect(e);
                        }
                    }
                }
            }
        }
    }
}

/// A convenience for callers that only need payloads: a data message with the current time.
pub fn data(stream: StreamId, payload: Bytes) -> Message {
    Message::data(stream, 0, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let config = SessionConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            ..SessionConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for attempt in 0..12 {
            let full = Duration::from_millis(10 * (1 << attempt)).min(Duration::from_millis(500));
            for _ in 0..100 {
                let d = backoff_delay(&config, attempt, &mut rng);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} outside [{:?}, {full:?}]", full / 2);
            }
        }
    }

    #[test]
    fn backoff_is_reproducible_from_the_seed() {
        let config = SessionConfig::default();
        let a: Vec<_> = {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            (0..5).map(|i| backoff_delay(&config, i, &mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            (0..5).map(|i| backoff_delay(&config, i, &mut rng)).collect()
        };
        assert_eq!(a, b);
    }
}
