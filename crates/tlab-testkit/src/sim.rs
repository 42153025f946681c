//! A deterministic virtual-time harness for the session protocol, in the manner of quinn-proto's `Pair` and neqo's
//! simulator: a client and a server [`Session`] exchange messages over simulated connections whose packets cross a
//! `tlab_netem_model` [`Link`] (delay, jitter, loss, blackholes), with no sockets, no tasks and no sleeping.
//!
//! A simulated connection behaves like a reliable ordered transport that can break: the link's delay applies to
//! every message, arrivals are reassembled in order (as TCP or a QUIC stream would), and any packet the link drops
//! — by loss or inside a blackhole — stalls that connection for good, so that the session layer must find out by
//! its own timers, reconnect and resume. [`Pair::cut_after`] breaks a connection abruptly instead (both ends see
//! the error at once, as after a reset).
//!
//! The client sends `messages` data messages on a fixed schedule and finishes; the server echoes each one and
//! finishes when the client has. [`Pair::run`] returns what each side delivered, so a test asserts exactly-once,
//! in-order delivery and anything else it likes about the run ([`Report`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tlab_core::message::{ControlOp, Message};
use tlab_netem_model::{Direction, Impairments, Link};
use tlab_session::{Event, Role, Session, Timing, Transmit};

/// What one simulated run does.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Data messages the client sends (each echoed by the server).
    pub messages: u64,
    /// Time between two client messages.
    pub interval: Duration,
    /// Session timing of both ends (the server detaches after `dead_after` of silence, as the client does).
    pub timing: Timing,
    /// Impairments of client → server.
    pub uplink: Impairments,
    /// Impairments of server → client.
    pub downlink: Impairments,
    /// Link windows in which every packet is dropped (both directions), as time since the start.
    pub blackholes: Vec<std::ops::Range<Duration>>,
    /// Break the connection abruptly after the client has written this many data messages in total.
    pub cut_after: Vec<u64>,
    /// Probability that a control message (Ack, Ping, Pong) is delivered twice, the copy after the next message.
    pub duplicate_control: f64,
    /// Delay before the client reconnects after a loss (the real client backs off with jitter; here it is fixed so
    /// the schedule is easy to reason about).
    pub reconnect_delay: Duration,
    /// Give up (the test fails) when virtual time passes this.
    pub time_limit: Duration,
    /// Seed of the link and of the control duplication.
    pub seed: u64,
}

impl Scenario {
    /// `messages` echoes at 1 ms spacing over a clean 10 ms one-way link, default timing, no faults.
    pub fn clean(messages: u64, seed: u64) -> Self {
        let path = Impairments { delay: Duration::from_millis(10), ..Impairments::default() };
        Self {
            messages,
            interval: Duration::from_millis(1),
            timing: Timing::default(),
            uplink: path.clone(),
            downlink: path,
            blackholes: Vec::new(),
            cut_after: Vec::new(),
            duplicate_control: 0.0,
            reconnect_delay: Duration::from_millis(50),
            time_limit: Duration::from_secs(600),
            seed,
        }
    }
}

/// What happened in one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Seqs of the echoes the client delivered, in delivery order.
    pub client_delivered: Vec<u64>,
    /// Seqs the server delivered, in delivery order.
    pub server_delivered: Vec<u64>,
    /// Connections opened (the first included).
    pub connections: u64,
    /// When (virtual time) and why the client lost a connection.
    pub client_losses: Vec<(Duration, String)>,
    /// The client finished cleanly (the server's end arrived after everything).
    pub closed: bool,
    /// A failure of either end (protocol violation), if any.
    pub failure: Option<String>,
    /// Virtual time at the end.
    pub elapsed: Duration,
    /// Most data messages the client held unacknowledged at any moment.
    pub max_client_unacked: usize,
}

/// What a simulated packet carries.
#[derive(Debug, Clone)]
enum Payload {
    /// The client's open request with its `next`.
    Open(u64),
    /// A session transmit.
    Transmit(Transmit),
}

#[derive(Debug)]
struct Packet {
    connection: u64,
    /// Position in its direction of its connection (for in-order reassembly).
    position: u64,
    payload: Payload,
}

/// One direction of one simulated connection.
#[derive(Debug, Default)]
struct Lane {
    next_position: u64,
    next_expected: u64,
    out_of_order: BTreeMap<u64, Payload>,
    /// A packet of this lane was dropped: nothing after it is ever delivered.
    stalled_at: Option<u64>,
}

/// Two session machines, a link and the simulated connections between them.
pub struct Pair {
    scenario: Scenario,
    t0: Instant,
    now: Duration,
    link: Link,
    client: Session,
    server: Session,
    packets: HashMap<u64, Packet>,
    next_packet: u64,
    /// The client's current connection, if any.
    connection: Option<u64>,
    /// The connection the server is attached to, if any.
    server_connection: Option<u64>,
    lanes: HashMap<(u64, Direction), Lane>,
    reconnect_at: Option<Duration>,
    next_send: Duration,
    client_data_written: u64,
    rng: ChaCha8Rng,
    /// Control messages waiting to be delivered a second time, after the next message.
    echoes_of_control: Vec<(Direction, Message)>,
    report: Report,
}

impl Pair {
    /// A pair ready to run `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        let mut link = Link::new(scenario.uplink.clone(), scenario.downlink.clone(), scenario.seed);
        for window in &scenario.blackholes {
            link.add_blackhole(tlab_netem_model::Target::Both, window.clone());
        }
        let rng = ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5e55_1011);
        Self {
            client: Session::new(Role::Client, 0, scenario.timing),
            server: Session::new(Role::Server, 0, scenario.timing),
            scenario,
            t0: Instant::now(),
            now: Duration::ZERO,
            link,
            packets: HashMap::new(),
            next_packet: 0,
            connection: None,
            server_connection: None,
            lanes: HashMap::new(),
            reconnect_at: Some(Duration::ZERO),
            next_send: Duration::ZERO,
            client_data_written: 0,
            rng,
            echoes_of_control: Vec::new(),
            report: Report::default(),
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn push(&mut self, direction: Direction, connection: u64, payload: Payload) {
        let lane = self.lanes.entry((connection, direction)).or_default();
        let position = lane.next_position;
        lane.next_position += 1;
        let id = self.next_packet;
        self.next_packet += 1;
        let size = match &payload {
            Payload::Transmit(Transmit::Message(m)) => 40 + m.payload.len(),
            _ => 40,
        };
        self.packets.insert(id, Packet { connection, position, payload });
        let mut bytes = vec![0u8; size];
        bytes[..8].copy_from_slice(&id.to_be_bytes());
        self.link.push(direction, bytes, self.now);
    }

    /// Hands every packet the link releases now to its lane; returns the in-order payloads per direction.
    fn release(&mut self) -> Vec<(Direction, u64, Payload)> {
        let mut ready = Vec::new();
        for direction in [Direction::Uplink, Direction::Downlink] {
            while let Some(bytes) = self.link.poll_release(direction, self.now) {
                let id = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                // A duplicate the link made is recognised by its position, as a transport would.
                let Some(packet) = self.packets.get(&id) else { continue };
                let lane = self.lanes.entry((packet.connection, direction)).or_default();
                if packet.position >= lane.next_expected {
                    lane.out_of_order.insert(packet.position, packet.payload.clone());
                }
                while let Some(payload) = lane.out_of_order.remove(&lane.next_expected) {
                    if lane.stalled_at.is_some_and(|s| lane.next_expected >= s) {
                        break;
                    }
                    lane.next_expected += 1;
                    ready.push((direction, packet.connection, payload));
                }
            }
        }
        ready
    }

    fn connect(&mut self) {
        let connection = self.report.connections;
        self.report.connections += 1;
        self.connection = Some(connection);
        let now = self.instant();
        self.client.attach(now, None);
        self.push(Direction::Uplink, connection, Payload::Open(self.client.next_expected()));
    }

    fn lose_client_connection(&mut self, why: String) {
        self.report.client_losses.push((self.now, why));
        if let Some(c) = self.connection.take() {
            for direction in [Direction::Uplink, Direction::Downlink] {
                self.lanes.entry((c, direction)).or_default().stalled_at = Some(0);
            }
        }
        self.reconnect_at = Some(self.now + self.scenario.reconnect_delay);
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Delivered(m) => self.report.client_delivered.push(m.seq),
                Event::PeerFinished => self.report.closed = true,
                Event::Resumed { .. } => {}
                Event::ConnectionLost(e) => self.lose_client_connection(e.to_string()),
                Event::Failed(e) => self.report.failure = Some(format!("client: {e}")),
            }
        }
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::Delivered(m) => {
                    self.report.server_delivered.push(m.seq);
                    self.server.send(m);
                }
                Event::PeerFinished => self.server.finish(),
                Event::Resumed { .. } => {}
                Event::ConnectionLost(_) => self.server_connection = None,
                Event::Failed(e) => self.report.failure = Some(format!("server: {e}")),
            }
        }
    }

    fn deliver(&mut self, direction: Direction, connection: u64, payload: Payload) {
        let now = self.instant();
        match (direction, payload) {
            (Direction::Uplink, Payload::Open(next)) => {
                self.server.attach(now, Some(next));
                self.server_connection = Some(connection);
            }
            (Direction::Uplink, Payload::Transmit(t)) if self.server_connection == Some(connection) => match t {
                Transmit::Message(m) => self.server.handle_message(now, m),
                Transmit::Finish => self.server.handle_peer_finished(now),
            },
            (Direction::Downlink, Payload::Transmit(t)) if self.connection == Some(connection) => match t {
                Transmit::Message(m) => self.client.handle_message(now, m),
                Transmit::Finish => self.client.handle_peer_finished(now),
            },
            // Packets of a connection an end has already left behind.
            _ => {}
        }
    }

    fn transmit(&mut self) {
        if let Some(c) = self.connection {
            while let Some(t) = self.client.poll_transmit() {
                if matches!(&t, Transmit::Message(m) if m.is_data()) {
                    self.client_data_written += 1;
                }
                self.send_with_duplicates(Direction::Uplink, c, t);
                if self.scenario.cut_after.contains(&self.client_data_written) && self.connection.is_some() {
                    self.cut();
                    return;
                }
            }
        }
        if let Some(c) = self.server_connection {
            while let Some(t) = self.server.poll_transmit() {
                self.send_with_duplicates(Direction::Downlink, c, t);
            }
        }
    }

    fn send_with_duplicates(&mut self, direction: Direction, connection: u64, transmit: Transmit) {
        for (d, copy) in std::mem::take(&mut self.echoes_of_control) {
            if d == direction {
                self.push(d, connection, Payload::Transmit(Transmit::Message(copy)));
            } else {
                self.echoes_of_control.push((d, copy));
            }
        }
        if let Transmit::Message(m) = &transmit
            && matches!(m.control_op(), Some(ControlOp::Ack | ControlOp::Ping | ControlOp::Pong))
            && self.rng.random_bool(self.scenario.duplicate_control)
        {
            self.echoes_of_control.push((direction, m.clone()));
        }
        self.push(direction, connection, Payload::Transmit(transmit));
    }

    /// Breaks the current connection abruptly: both ends see an error now; nothing in flight arrives.
    fn cut(&mut self) {
        let now = self.instant();
        let reset = || tlab_core::Error::Closed("simulated reset".into());
        self.client.handle_connection_error(now, reset());
        if self.server_connection.is_some() && self.server_connection == self.connection {
            self.server.handle_connection_error(now, reset());
        }
        self.drain_events();
    }

    fn client_app(&mut self) {
        while self.next_send <= self.now
            && self.client.next_send_seq() < self.scenario.messages
            && self.client.can_send()
        {
            self.client.send(Message::data(0, 0, Bytes::from_static(b"0123456789abcdef")));
            self.next_send += self.scenario.interval;
        }
        if self.client.next_send_seq() == self.scenario.messages {
            self.client.finish();
        }
        self.report.max_client_unacked = self.report.max_client_unacked.max(self.client.unacked());
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let to_virtual = |i: Instant| i.saturating_duration_since(self.t0);
        let sending =
            (self.client.can_send() && self.client.next_send_seq() < self.scenario.messages).then_some(self.next_send);
        [
            self.link.next_wakeup(),
            self.client.poll_timeout().map(to_virtual),
            self.server.poll_timeout().map(to_virtual),
            self.reconnect_at,
            sending,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the scenario to its end (the client closed or failed) or the time limit.
    pub fn run(mut self) -> Report {
        loop {
            if self.reconnect_at.is_some_and(|t| t <= self.now) {
                self.reconnect_at = None;
                self.connect();
            }
            for (direction, connection, payload) in self.release() {
                self.deliver(direction, connection, payload);
                self.drain_events();
            }
            let now = self.instant();
            self.client.handle_timeout(now);
            self.server.handle_timeout(now);
            self.drain_events();
            self.client_app();
            self.transmit();
            self.drain_events();
            if self.report.closed || self.report.failure.is_some() {
                break;
            }
            let Some(next) = self.next_wakeup() else { break };
            if next >= self.scenario.time_limit {
                self.now = self.scenario.time_limit;
                break;
            }
            // Never stand still: a wakeup that is already due is retried a microsecond later.
            self.now = next.max(self.now + Duration::from_micros(1));
        }
        self.report.elapsed = self.now;
        self.report
    }
}
