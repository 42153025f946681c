//! The session protocol of one resumable stream as a sans-IO state machine, in the manner of quinn-proto's
//! `Connection`: nothing here reads a clock, touches a socket or spawns a task. The caller feeds what happened
//! ([`Session::handle_message`], [`Session::handle_peer_finished`], [`Session::handle_connection_error`],
//! [`Session::handle_timeout`], each with `now`), drains what to write with [`Session::poll_transmit`], learns when to
//! call back from [`Session::poll_timeout`] and reads what the application must know from [`Session::poll_event`].
//!
//! One type serves both ends ([`Role`]). The machine outlives connections: [`Session::attach`] binds it to a new
//! connection, and a lost connection only empties what was queued for writing, because every data message stays in
//! [`ReliableState`] until the peer acknowledges it.
//!
//! Wire protocol (docs/PROTOCOL.md, "session layer"): the client opens the stream with `session` and `next` (the
//! next seq it expects); the server's first message is `Resume(n)` (the next seq the server expects); each side then
//! retransmits what the other lacks, acknowledges every [`crate::reliable::ACK_EVERY`] messages, and the client sends
//! `Ping` + `Ack` every heartbeat interval, which the server answers with `Pong` + `Ack`. A side that has finished
//! its direction sends nothing more on it, not even acknowledgements. A server that does not know the session of a
//! reopened stream answers `UnknownSession` instead of `Resume`, and the client fails with [`Error::SessionLost`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tlab_core::Error;
use tlab_core::message::{ControlOp, Message, MessageKind, StreamId};

use crate::reliable::{Incoming, ReliableState};

/// Most data messages sent and not yet acknowledged before [`Session::can_send`] says wait.
pub const SEND_WINDOW: usize = 4096;

/// Most messages queued for writing on the current connection before [`Session::wants_read`] says stop reading
/// (so that a peer that does not read cannot make us queue without bound).
pub const OUTBOX_HIGH_WATER: usize = 4096;

/// Which end of the stream this machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens the stream, waits for `Resume`, sends heartbeats.
    Client,
    /// Answers with `Resume`, answers heartbeats, detaches a silent client.
    Server,
}

/// Timing of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the client sends `Ping` + `Ack` (the server never pings).
    pub heartbeat_interval: Duration,
    /// The connection is presumed dead after this long without any message from the peer (on the server: the
    /// client is detached, its state kept for resume).
    pub dead_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { heartbeat_interval: Duration::from_millis(250), dead_after: Duration::from_secs(2) }
    }
}

/// Something to write on the current connection, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Send this message.
    Message(Message),
    /// End our direction of the stream gracefully.
    Finish,
}

/// Something the application must learn.
#[derive(Debug)]
pub enum Event {
    /// The next data message, in order, exactly once.
    Delivered(Message),
    /// The peer ended its direction after everything it sent was delivered.
    PeerFinished,
    /// The client received `Resume` (or the server attached): `resent` messages go out again.
    Resumed {
        /// How many unacknowledged messages are retransmitted on the new connection.
        resent: usize,
    },
    /// The current connection is unusable (error, dead peer); reconnect and [`Session::attach`] again.
    ConnectionLost(Error),
    /// The peer broke the protocol; the stream cannot continue.
    Failed(Error),
}

/// The state of the current connection, if any.
#[derive(Debug, Clone, Copy)]
struct Attachment {
    /// The client has not received `Resume` yet: nothing may be sent.
    awaiting_resume: bool,
    /// When the peer was last heard from (or the attachment began).
    last_heard: Instant,
    /// When the client sends its next heartbeat.
    next_heartbeat: Instant,
    /// Our `Finish` has been handed out on this connection.
    finish_written: bool,
}

/// The session protocol of one resumable stream; see the module documentation.
#[derive(Debug)]
pub struct Session {
    role: Role,
    /// The client session id (0 where unknown); named in a [`Error::SessionLost`].
    session_id: u64,
    stream: StreamId,
    timing: Timing,
    reliable: ReliableState,
    attachment: Option<Attachment>,
    /// Bumped by every [`Session::attach`]; a driver of an older connection stops when it sees a newer one.
    generation: u64,
    outbox: VecDeque<Message>,
    resume_due: bool,
    ack_due: bool,
    pong_due: Option<u64>,
    ping_due: bool,
    locally_finished: bool,
    peer_finished: bool,
    failed: bool,
    /// A `Resume` has been received (client) or sent (server) at least once: the server knows the stream.
    resumed_once: bool,
    events: VecDeque<Event>,
}

impl Session {
    /// A machine for `stream`, not yet attached to a connection.
    pub fn new(role: Role, stream: StreamId, timing: Timing) -> Self {
        Self {
            role,
            session_id: 0,
            stream,
            timing,
            reliable: ReliableState::new(),
            attachment: None,
            generation: 0,
            outbox: VecDeque::new(),
            resume_due: false,
            ack_due: false,
            pong_due: None,
            ping_due: false,
            locally_finished: false,
            peer_finished: false,
            failed: false,
            resumed_once: false,
            events: VecDeque::new(),
        }
    }

    /// Names the client session this stream belongs to (used in errors).
    pub fn with_session_id(mut self, session_id: u64) -> Self {
        self.session_id = session_id;
        self
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The logical stream.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The number of the current attachment (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The next data seq expected from the peer: what a client puts in its open request as `next`.
    pub fn next_expected(&self) -> u64 {
        self.reliable.next_expected()
    }

    /// The seq the next data message we send gets.
    pub fn next_send_seq(&self) -> u64 {
        self.reliable.next_send_seq()
    }

    /// Data messages sent and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.reliable.unacked_len()
    }

    /// Messages queued for writing on the current connection.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the peer has ever resumed this stream (a client received `Resume`): only then is a later open a
    /// reopen (`reopen=1`) that a server without the session must refuse. A stream whose first open never reached
    /// the server opens afresh.
    pub fn was_resumed(&self) -> bool {
        self.resumed_once
    }

    /// Whether a connection is attached.
    pub fn is_attached(&self) -> bool {
        self.attachment.is_some()
    }

    /// Binds the machine to a new connection and returns its generation. A client passes `None` and waits for
    /// `Resume`; a server passes the client's `next` from the open request and answers `Resume` at once.
    pub fn attach(&mut self, now: Instant, peer_next_expected: Option<u64>) -> u64 {
        self.generation += 1;
        self.outbox.clear();
        self.ack_due = false;
        self.pong_due = None;
        self.ping_due = false;
        let awaiting_resume = match (self.role, peer_next_expected) {
            (Role::Server, next) => {
                self.resume_due = true;
                self.resume_from(next.unwrap_or(0));
                false
            }
            (Role::Client, _) => true,
        };
        self.attachment = Some(Attachment {
            awaiting_resume,
            last_heard: now,
            next_heartbeat: now + self.timing.heartbeat_interval,
            finish_written: false,
        });
        self.generation
    }

    /// Forgets the current connection (e.g. when the driver's transport failed); data stays for the next one.
    pub fn detach(&mut self) {
        self.attachment = None;
        self.outbox.clear();
        self.resume_due = false;
    }

    fn resume_from(&mut self, peer_next_expected: u64) {
        self.resumed_once = true;
        self.outbox = self.reliable.resume(peer_next_expected).into();
        self.events.push_back(Event::Resumed { resent: self.outbox.len() });
    }

    fn lose(&mut self, error: Error) {
        if self.attachment.is_some() {
            self.detach();
            self.events.push_back(Event::ConnectionLost(error));
        }
    }

    fn fail(&mut self, error: Error) {
        self.detach();
        self.failed = true;
        self.events.push_back(Event::Failed(error));
    }

    /// Whether the application may send another data message now (the send window has room).
    pub fn can_send(&self) -> bool {
        !self.locally_finished && self.reliable.unacked_len() < SEND_WINDOW
    }

    /// Whether the driver should read from the connection now: false while too much waits to be written.
    pub fn wants_read(&self) -> bool {
        self.attachment.is_some() && !self.peer_finished && self.outbox.len() < OUTBOX_HIGH_WATER
    }

    /// Queues one data message; it gets the next seq (returned), whatever `msg.seq` was. Kept until acknowledged.
    pub fn send(&mut self, mut msg: Message) -> u64 {
        debug_assert!(!self.locally_finished, "send after finish");
        msg.stream = self.stream;
        msg.seq = self.reliable.next_send_seq();
        msg.kind = MessageKind::Data;
        let seq = self.reliable.record_sent(&msg);
        // Before `Resume` the message waits in the reliable state; resuming queues it with the rest.
        if self.attachment.is_some_and(|a| !a.awaiting_resume) {
            self.outbox.push_back(msg);
        }
        seq
    }

    /// Ends our direction once everything queued has been written.
    pub fn finish(&mut self) {
        self.locally_finished = true;
    }

    /// A message arrived on the current connection.
    pub fn handle_message(&mut self, now: Instant, msg: Message) {
        let Some(attachment) = self.attachment.as_mut() else { return };
        attachment.last_heard = now;
        if attachment.awaiting_resume {
            if msg.control_op() == Some(ControlOp::Resume) {
                attachment.awaiting_resume = false;
                self.resume_from(msg.seq);
            } else if msg.control_op() == Some(ControlOp::UnknownSession) {
                self.fail(Error::SessionLost { session: self.session_id, stream: self.stream });
            } else {
                self.fail(Error::Protocol(format!("expected Resume first, got {:?} seq {}", msg.kind, msg.seq)));
            }
            return;
        }
        match (msg.kind, msg.control_op()) {
            (MessageKind::Data, _) => match self.reliable.on_data(msg.seq) {
                Incoming::Deliver => {
                    self.ack_due |= self.reliable.ack_due().is_some();
                    self.events.push_back(Event::Delivered(msg));
                }
                Incoming::Duplicate => {}
                Incoming::Gap { expected } => {
                    self.fail(Error::Protocol(format!("seq {} received, {expected} expected", msg.seq)));
                }
            },
            (_, Some(ControlOp::Ack)) => self.reliable.on_ack(msg.seq),
            (_, Some(ControlOp::Ping)) => {
                self.pong_due = Some(msg.seq);
                self.ack_due = true;
            }
            (_, Some(ControlOp::Pong)) => {}
            (_, Some(op @ (ControlOp::Resume | ControlOp::UnknownSession))) => {
                self.fail(Error::Protocol(format!("{op:?} in the middle of a stream")));
            }
            (_, None) => self.fail(Error::Protocol("control message without a known op".into())),
        }
    }

    /// The peer ended its direction on the current connection.
    pub fn handle_peer_finished(&mut self, _now: Instant) {
        if self.attachment.is_some_and(|a| a.awaiting_resume) {
            self.lose(Error::Closed("the stream ended before Resume".into()));
            return;
        }
        if !self.peer_finished {
            self.peer_finished = true;
            self.events.push_back(Event::PeerFinished);
        }
    }

    /// The current connection failed.
    pub fn handle_connection_error(&mut self, _now: Instant, error: Error) {
        if error.is_retryable() {
            self.lose(error);
        } else {
            self.fail(error);
        }
    }

    /// Runs the timers: dead-peer detection and the client's heartbeat.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(attachment) = self.attachment.as_mut() else { return };
        if now.saturating_duration_since(attachment.last_heard) >= self.timing.dead_after {
            self.lose(Error::PeerDead(self.timing.dead_after));
            return;
        }
        if self.role == Role::Client && !attachment.awaiting_resume && now >= attachment.next_heartbeat {
            while attachment.next_heartbeat <= now {
                attachment.next_heartbeat += self.timing.heartbeat_interval;
            }
            self.ping_due = true;
            self.ack_due = true;
        }
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let attachment = self.attachment.as_ref()?;
        let dead = attachment.last_heard + self.timing.dead_after;
        let heartbeat = (self.role == Role::Client && !attachment.awaiting_resume).then_some(attachment.next_heartbeat);
        Some(heartbeat.map_or(dead, |h| h.min(dead)))
    }

    /// The next thing to write on the current connection.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let stream = self.stream;
        let attachment = self.attachment.as_mut()?;
        if attachment.awaiting_resume || attachment.finish_written {
            return None;
        }
        if std::mem::take(&mut self.resume_due) {
            return Some(Transmit::Message(Message::control(stream, ControlOp::Resume, self.reliable.ack_now())));
        }
        // After our direction ended nothing more is sent on it, control included.
        if !self.locally_finished {
            if let Some(n) = self.pong_due.take() {
                return Some(Transmit::Message(Message::control(stream, ControlOp::Pong, n)));
            }
            if std::mem::take(&mut self.ack_due) {
                return Some(Transmit::Message(Message::control(stream, ControlOp::Ack, self.reliable.ack_now())));
            }
            if std::mem::take(&mut self.ping_due) {
                return Some(Transmit::Message(Message::control(stream, ControlOp::Ping, 0)));
            }
        }
        if let Some(msg) = self.outbox.pop_front() {
            return Some(Transmit::Message(msg));
        }
        if self.locally_finished {
            attachment.finish_written = true;
            return Some(Transmit::Finish);
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the stream is over: the peer finished and (on the server) our `Finish` was written, or it failed.
    /// A client is done when the server finishes, which the server does only after the client finished.
    pub fn is_closed(&self) -> bool {
        self.failed
            || match self.role {
                Role::Client => self.peer_finished,
                Role::Server => self.peer_finished && self.attachment.is_some_and(|a| a.finish_written),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn data(payload: &'static [u8]) -> Message {
        Message::data(0, 0, Bytes::from_static(payload))
    }

    fn drain(session: &mut Session) -> Vec<Transmit> {
        std::iter::from_fn(|| session.poll_transmit()).collect()
    }

    #[test]
    fn client_sends_nothing_before_resume_then_everything_unacked() {
        let t0 = Instant::now();
        let mut client = Session::new(Role::Client, 0, Timing::default());
        client.attach(t0, None);
        client.send(data(b"a"));
        client.send(data(b"b"));
        assert!(drain(&mut client).is_empty());
        client.handle_message(t0, Message::control(0, ControlOp::Resume, 1));
        let sent = drain(&mut client);
        assert_eq!(sent.len(), 1, "only seq 1 is missing at the server: {sent:?}");
        assert!(matches!(&sent[0], Transmit::Message(m) if m.seq == 1));
    }

    #[test]
    fn server_answers_resume_first_then_resends() {
        let t0 = Instant::now();
        let mut server = Session::new(Role::Server, 3, Timing::default());
        server.attach(t0, Some(0));
        server.send(data(b"x"));
        let sent = drain(&mut server);
        assert!(matches!(&sent[0], Transmit::Message(m) if m.control_op() == Some(ControlOp::Resume) && m.seq == 0));
        assert!(matches!(&sent[1], Transmit::Message(m) if m.is_data() && m.seq == 0 && m.stream == 3));
        // The client reconnects having seen nothing: the data goes out again after a new Resume.
        server.attach(t0, Some(0));
        let again = drain(&mut server);
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn no_control_after_finish() {
        let t0 = Instant::now();
        let mut client = Session::new(Role::Client, 0, Timing::default());
        client.attach(t0, None);
        client.handle_message(t0, Message::control(0, ControlOp::Resume, 0));
        client.finish();
        assert_eq!(drain(&mut client), vec![Transmit::Finish]);
        client.handle_message(t0, Message::control(0, ControlOp::Ping, 9));
        client.handle_timeout(t0 + Duration::from_secs(1));
        assert!(drain(&mut client).is_empty());
    }

    #[test]
    fn only_a_stream_the_server_resumed_counts_as_reopened() {
        let t0 = Instant::now();
        let mut client = Session::new(Role::Client, 0, Timing::default());
        client.attach(t0, None);
        client.handle_connection_error(t0, Error::Closed("cut before Resume".into()));
        assert!(!client.was_resumed(), "the server never saw this stream: the next open is a first open");
        client.attach(t0, None);
        client.handle_message(t0, Message::control(0, ControlOp::Resume, 0));
        assert!(client.was_resumed());
    }

    #[test]
    fn unknown_session_fails_the_client_with_session_lost() {
        let t0 = Instant::now();
        let mut client = Session::new(Role::Client, 4, Timing::default()).with_session_id(0xabc);
        client.attach(t0, None);
        client.handle_message(t0, Message::control(4, ControlOp::UnknownSession, 0));
        match client.poll_event() {
            Some(Event::Failed(Error::SessionLost { session: 0xabc, stream: 4 })) => {}
            other => panic!("expected SessionLost, got {other:?}"),
        }
        assert!(client.is_closed());
    }

    #[test]
    fn gap_fails_the_stream() {
        let t0 = Instant::now();
        let mut server = Session::new(Role::Server, 0, Timing::default());
        server.attach(t0, Some(0));
        server.handle_message(t0, Message::data(0, 5, Bytes::new()));
        assert!(matches!(server.poll_event(), Some(Event::Resumed { resent: 0 })));
        assert!(matches!(server.poll_event(), Some(Event::Failed(Error::Protocol(_)))));
        assert!(server.is_closed());
    }
}
