//! The client end of the session layer: [`ResilientSession`] is itself a [`Connection`] (as tower's `Reconnect` is
//! itself a `Service`), so callers have one code path. Each stream it opens is a client [`Session`] machine driven
//! by [`crate::driver::drive`] over whatever connection currently works; when that connection is lost the stream
//! reconnects with exponential backoff and jitter and resumes where both sides left off.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tlab_core::config::{ClientConfig, ResumeFrom, StreamMode, StreamOpen};
use tlab_core::message::{Message, StreamId};
use tlab_core::transport::{Connection, MessageSink, MessageSource, MessageStream, Transport};
use tlab_core::Error;

use crate::driver::{self, Application, Input, Outcome, SharedSession};
use crate::machine::{Event, Role, Session, Timing};

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
    /// Stop reconnecting (and fail the stream) after this long without progress (data delivered or acknowledged).
    pub give_up_after: Duration,
    /// Stop reconnecting (and fail the stream) after this many attempts without progress.
    pub max_attempts: u32,
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
            max_attempts: 64,
            seed: 0,
        }
    }
}

impl SessionConfig {
    fn timing(&self) -> Timing {
        Timing { heartbeat_interval: self.heartbeat_interval, dead_after: self.dead_after }
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
    rng: Mutex<ChaCha8Rng>,
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

    fn backoff(&self, attempt: u32) -> Duration {
        backoff_delay(&self.config, attempt, &mut *self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Opens the stream on a working connection. `attempt` counts reconnects without progress so far; the backoff
    /// grows with it and is reset only by progress, not by a successful open. Gives up once `since_progress` is
    /// older than `give_up_after`.
    async fn open(
        &self,
        stream: StreamId,
        mode: StreamMode,
        resume: ResumeFrom,
        attempt: &mut u32,
        since_progress: Instant,
    ) -> Result<(u64, MessageStream), Error> {
        let open = StreamOpen { stream, mode, resume: Some(resume) };
        let mut broken = None;
        loop {
            if *attempt > 0 {
                let budget_spent =
                    since_progress.elapsed() >= self.config.give_up_after || *attempt > self.config.max_attempts;
                if budget_spent {
                    return Err(Error::Timeout(format!(
                        "session {:x} stream {stream}: gave up reconnecting after {attempt} attempts in {:.1?} \
                         without progress (budget: {} attempts, {:?})",
                        self.id,
                        since_progress.elapsed(),
                        self.config.max_attempts,
                        self.config.give_up_after
                    )));
                }
                tokio::time::sleep(self.backoff(*attempt - 1)).await;
            }
            *attempt += 1;
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
                Err(e) if e.is_retryable() => tracing::debug!(stream, attempt = *attempt, error = %e, "reconnecting"),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A client session whose streams survive connection loss. It is a [`Connection`]: `open_stream` ignores the
/// caller's `resume` field and manages resumption itself; a stream's data messages get seqs 0, 1, 2… in send order.
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
            rng: Mutex::new(rng),
            reconnects: AtomicU64::new(0),
        });
        inner.connection(None).await?;
        Ok(Self { inner })
    }

    /// How many times a connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Connection for ResilientSession {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let mut attempt = 0;
        let first_open = ResumeFrom { session: self.inner.id, next_expected: 0, reopen: false };
        let (connection, first) =
            self.inner.open(open.stream, open.mode, first_open, &mut attempt, Instant::now()).await?;
        let machine = Session::new(Role::Client, open.stream, self.inner.config.timing()).with_session_id(self.inner.id);
        let session = Arc::new(Mutex::new(machine));
        let (to_task, from_user) = mpsc::channel(1024);
        let (to_user, from_task) = mpsc::channel(1024);
        let bridge = UserBridge { from_user, to_user, pending: VecDeque::new(), user_finished: false };
        let task = StreamTask { inner: self.inner.clone(), session, open, bridge };
        tokio::spawn(task.run(connection, first));
        Ok(MessageStream {
            sink: Box::new(ResilientSink { to_task }),
            source: Box::new(ResilientSource { from_task, ended: false }),
        })
    }

    /// Closes the current connection.
    async fn close(&self) {
        if let Some(conn) = self.inner.slot.lock().await.connection.take() {
            conn.close().await;
        }
    }

    /// Moves the current connection to a new local address (native migration); transports without it refuse with
    /// [`Error::Unsupported`] and rely on reconnect + resume instead.
    async fn rebind(&self, local: std::net::SocketAddr) -> Result<(), Error> {
        let connection = self.inner.slot.lock().await.connection.clone();
        match connection {
            Some(connection) => connection.rebind(local).await,
            None => Err(Error::Closed("no connection to move".into())),
        }
    }
}

enum Command {
    Send(Message),
    Finish,
}

struct ResilientSink {
    to_task: mpsc::Sender<Command>,
}

#[async_trait]
impl MessageSink for ResilientSink {
    async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.to_task.send(Command::Send(msg)).await.map_err(|_| Error::Closed("session stream ended".into()))
    }

    /// Once the stream is over (the server finished a source first, or the stream failed) there is nothing left
    /// to end: the source reports how it ended.
    async fn finish(&mut self) -> Result<(), Error> {
        let _ = self.to_task.send(Command::Finish).await;
        Ok(())
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

/// The client's [`Application`]: the user's sink feeds the machine, delivered messages go to the user's source.
struct UserBridge {
    from_user: mpsc::Receiver<Command>,
    to_user: mpsc::Sender<Result<Option<Message>, Error>>,
    /// Delivered, not yet handed to the user.
    pending: VecDeque<Message>,
    user_finished: bool,
}

/// Most delivered messages held for a slow user before the driver stops reading.
const PENDING_LIMIT: usize = 1024;

#[async_trait]
impl Application for UserBridge {
    async fn input(&mut self, can_send: bool) -> Input {
        let deliver = !self.pending.is_empty();
        let take = can_send && !self.user_finished;
        tokio::select! {
            permit = self.to_user.reserve(), if deliver => {
                if let (Ok(permit), Some(msg)) = (permit, self.pending.pop_front()) {
                    permit.send(Ok(Some(msg)));
                }
                Input::Wake
            }
            command = self.from_user.recv(), if take => match command {
                Some(Command::Send(msg)) => Input::Send(msg),
                Some(Command::Finish) | None => Input::Finish,
            },
            else => std::future::pending().await,
        }
    }

    fn on_event(&mut self, _now: Instant, event: Event, session: &mut Session) {
        match event {
            Event::Delivered(msg) => self.pending.push_back(msg),
            // The server ended first (a source): our direction carries nothing it needs, so it ends too, and the
            // server's side of the stream closes instead of waiting for us.
            Event::PeerFinished if !self.user_finished => {
                self.user_finished = true;
                session.finish();
            }
            _ => {}
        }
    }

    fn apply(&mut self, _now: Instant, input: Input, session: &mut Session) {
        match input {
            Input::Send(msg) => {
                session.send(msg);
            }
            Input::Finish => {
                self.user_finished = true;
                session.finish();
            }
            Input::Wake => {}
        }
    }

    fn wants_more(&self) -> bool {
        self.pending.len() < PENDING_LIMIT
    }
}

struct StreamTask {
    inner: Arc<Inner>,
    session: SharedSession,
    open: StreamOpen,
    bridge: UserBridge,
}

impl StreamTask {
    /// Progress so far: (data delivered to us, data of ours acknowledged).
    fn progress(&self) -> (u64, u64) {
        let s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        (s.next_expected(), s.next_send_seq() - s.unacked() as u64)
    }

    async fn run(mut self, mut connection: u64, first: MessageStream) {
        let mut current = first;
        let mut attempt = 0u32;
        let mut since_progress = Instant::now();
        loop {
            let generation = self.session.lock().unwrap_or_else(|p| p.into_inner()).attach(Instant::now(), None);
            let before = self.progress();
            let outcome = driver::drive(&self.session, generation, current, &mut self.bridge).await;
            let error = match outcome {
                Outcome::Closed => None,
                Outcome::Failed(e) => Some(e),
                Outcome::Superseded => Some(Error::Closed("the session was taken over".into())),
                Outcome::Lost(e) => {
                    if self.progress() != before {
                        attempt = 0;
                        since_progress = Instant::now();
                    }
                    tracing::debug!(stream = self.open.stream, error = %e, attempt, "connection lost, resuming");
                    // Mark this connection broken so that the first stream to notice replaces it.
                    let _ = self.inner.connection(Some(connection)).await;
                    // A reopen only if the server ever resumed the stream: an open lost before reaching it is a first
                    // open again (else a server that never saw the stream would answer UnknownSession).
                    let reopen = self.session.lock().unwrap_or_else(|p| p.into_inner()).was_resumed();
                    let resume = ResumeFrom { session: self.inner.id, next_expected: self.progress().0, reopen };
                    match self.inner.open(self.open.stream, self.open.mode, resume, &mut attempt, since_progress).await {
                        Ok((c, s)) => {
                            connection = c;
                            current = s;
                            continue;
                        }
                        Err(e) => Some(e),
                    }
                }
            };
            self.finish(error).await;
            return;
        }
    }

    /// Hands the user what was delivered, then the end (or the error).
    async fn finish(self, error: Option<Error>) {
        let UserBridge { to_user, pending, .. } = self.bridge;
        for msg in pending {
            if to_user.send(Ok(Some(msg))).await.is_err() {
                return;
            }
        }
        let _ = to_user.send(error.map_or(Ok(None), Err)).await;
    }
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
