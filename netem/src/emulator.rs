//! The TUN backend: client and server in two network namespaces of this process, one TUN device in each, and one
//! forwarding thread that moves every IP packet between them through the [`Link`] model.
//!
//! Real kernel TCP/UDP runs on both sides, so retransmission and loss recovery happen for real. The thread sleeps in
//! `ppoll` with a nanosecond timeout and a 1 ns timer slack, and releases a packet only once its due time has come:
//! never early. The TUN queues are long (txqueuelen 10000) so that the only queue that drops is the model's
//! bottleneck.
//!
//! Timing: every packet is stamped on the monotonic clock right after it is read (not once per read burst), and
//! released no earlier than the model's due time, itself never before stamp + fixed delay; debug builds assert
//! both at every write. Each release's lateness (write time − due time) goes into a [`Lateness`] histogram,
//! read with [`EmulatedLink::lateness`]. For tests, `TLAB_NETEM_TEST_STALL_MS=N` makes the first forwarder of the
//! process sleep N ms once, with packets inside and after 64 releases: an artificial stall that makes them late.
//!
//! Schedule events: a NAT rebinding is carried out in the forwarder by a [`Nat`]: the client's flows get a new
//! public address ([`next_nat_address`]) and port, replies are mapped back, and packets to the old mapping still
//! arrive until it expires (the profile's `old_mapping_s`). An address change makes the forwarder drop everything
//! from or to [`CLIENT_ADDR`] at once, while a control thread (commands would stall forwarding) removes that
//! address from the client's device and, with `tcp = "abort"`, aborts its TCP connections; with `tcp = "silent"`
//! they are left to find out by themselves. QUIC-style UDP flows continue from the new address, TCP must reconnect.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

use crate::health::Lateness;
use crate::capture::{CaptureSink, Side};
use crate::io_error::IoError;
use crate::namespace::NetNs;
use crate::tun::Tun;
use crate::nat::{Inbound, Nat};
use crate::{Counters, Direction, DropRule, EventKind, Impairments, Link, Packet, RuleId, RuleStatus, TargetedDrop, Target, TcpOnMove};

/// The client's address inside its namespace.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The server's address inside its namespace.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The client's second address: where an address change moves it.
pub const CLIENT_ALT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

/// The public address a NAT rebinding gives the client's flows after `current` (`None` before the first):
/// 10.77.0.101, .102, … .200, then .101 again. The server reaches them all through its device's /24.
pub fn next_nat_address(current: Option<Ipv4Addr>) -> Ipv4Addr {
    let last = current.map_or(100, |a| a.octets()[3]);
    Ipv4Addr::new(10, 77, 0, if (101..200).contains(&last) { last + 1 } else { 101 })
}

/// The link's device in each namespace (a TUN device, or a veth end for the kernel backend).
pub(crate) const DEVICE: &str = "tlab0";
/// Most packets read from one device before the loop looks at the other one and at due releases.
const READ_BURST: usize = 64;

/// Counters of both directions plus what the I/O layer itself saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    /// Client → server, as counted by the model.
    pub uplink: Counters,
    /// Server → client, as counted by the model.
    pub downlink: Counters,
    /// Non-IPv4 packets (e.g. IPv6 noise) dropped before the model.
    pub non_ipv4: u64,
    /// Packets the receiving TUN refused (queue full or malformed after corruption).
    pub write_refused: u64,
    /// Address-change / NAT-rebind events that fired.
    pub events: u64,
    /// Packets from or to the client's old address after an address change, dropped: that address is gone.
    pub old_address_dropped: u64,
    /// Packets the server sent to an expired NAT mapping, dropped.
    pub nat_expired_dropped: u64,
}

/// Both namespaces with IPv6 off, secondary-address promotion on and the same TCP congestion control; returns it.
pub(crate) fn prepare_namespaces() -> Result<(Arc<NetNs>, Arc<NetNs>, &'static str), IoError> {
    let client = Arc::new(NetNs::new("client")?);
    let server = Arc::new(NetNs::new("server")?);
    for ns in [&client, &server] {
        // IPv6 off before the device comes up, so it sends no router solicitations.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        // Deleting the client's primary address on an address change must keep (promote) the secondary one.
        ns.sysctl("net.ipv4.conf.default.promote_secondaries", "1")?;
    }
    let congestion_control = CONGESTION_CONTROL_PREFERENCE
        .into_iter()
        .find(|cc| [&client, &server].iter().all(|ns| ns.sysctl("net.ipv4.tcp_congestion_control", cc).is_ok()))
        .ok_or_else(|| IoError::Setup(format!("none of {CONGESTION_CONTROL_PREFERENCE:?} may be set in a namespace")))?;
    Ok((client, server, congestion_control))
}

/// Addresses on [`DEVICE`] in both namespaces (the client gets its alternative address too), long queue, up.
pub(crate) fn configure_addresses(client: &NetNs, server: &NetNs) -> Result<(), IoError> {
    for (ns, addrs) in [(client, &[CLIENT_ADDR, CLIENT_ALT_ADDR][..]), (server, &[SERVER_ADDR][..])] {
        for addr in addrs {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", DEVICE])?;
        }
        ns.ip(&["link", "set", DEVICE, "mtu", "1500", "txqueuelen", "10000", "up"])?;
    }
    Ok(())
}

/// Carries out an event that needs commands in the client's namespace (the NAT rebinding lives in the forwarder).
///
/// An address change deletes [`CLIENT_ADDR`]; [`CLIENT_ALT_ADDR`] is promoted, so new sockets and unconnected UDP
/// sockets (QUIC) send from it. With [`TcpOnMove::Abort`] TCP connections bound to the old address are aborted
/// (`ss -K`, ECONNABORTED), as a mobile OS does when it leaves a network; without kernel support for that, and
/// with [`TcpOnMove::Silent`], nothing tells them: their packets vanish and they die by retransmission timeout or
/// the application's own heartbeat.
pub(crate) fn carry_out(client: &NetNs, kind: EventKind) -> Result<(), IoError> {
    if let EventKind::AddressChange { tcp } = kind {
        client.ip(&["addr", "del", &format!("{CLIENT_ADDR}/24"), "dev", DEVICE])?;
        if tcp == TcpOnMove::Abort {
            client.exec("ss", &["-K", "-t", "src", &CLIENT_ADDR.to_string()])?;
        }
    }
    Ok(())
}

/// A running emulated link between two namespaces. Dropping it stops the thread; the namespaces disappear with the
/// last handle.
pub struct EmulatedLink {
    client: Arc<NetNs>,
    server: Arc<NetNs>,
    counters: Arc<Mutex<LinkCounters>>,
    stop: Arc<AtomicBool>,
    /// The forwarding thread and the control thread that carries out events for it.
    threads: Option<(Worker, Worker)>,
    congestion_control: &'static str,
    realtime: bool,
    commands: mpsc::Sender<LinkCommand>,
    /// Link time zero: when the forwarder's clock started, as an [`Instant`] and in CLOCK_MONOTONIC ns.
    origin: (Instant, u64),
    drops: Arc<Mutex<DropLog>>,
    /// Ids of armed rules, assigned in arming order as the model does.
    next_rule: std::sync::atomic::AtomicU64,
    lateness: Arc<Mutex<Lateness>>,
}

/// A targeted drop on the monotonic clock (the clock of `Message::sent_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedDrop {
    /// When the dropped packet entered the link, CLOCK_MONOTONIC ns.
    pub at_ns: u64,
    /// The drop as the model logged it (its `at` is link time).
    pub drop: TargetedDrop,
}

/// What the forwarder reports about targeted drops.
#[derive(Debug, Default)]
struct DropLog {
    drops: Vec<LoggedDrop>,
    rules: Vec<RuleStatus>,
}

/// A change asked of a running link; the forwarding thread applies it at its next wake-up (within 10 ms).
#[derive(Debug, Clone)]
enum LinkCommand {
    Impair(Target, Impairments),
    Event(EventKind),
    Blackhole(Target, Duration),
    ArmDrop(DropRule),
}

/// Gives a thread (the forwarder, or the selftest's probe receiver) a real-time priority (SCHED_FIFO 10) so that
/// busy CPUs — the endpoints, or anything else on the machine — do not delay its wake-ups by a scheduler time slice
/// (milliseconds), which would release packets late. Best effort: without the privilege it stays a normal thread.
pub(crate) fn make_realtime(tid: nix::unistd::Pid) -> bool {
    std::process::Command::new("chrt")
        .args(["-f", "-p", "10", &tid.to_string()])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A background thread of the link and its outcome.
type Worker = JoinHandle<Result<(), IoError>>;

/// TCP congestion control wanted in both namespaces, best first; the host default may be BBR. Cubic is the QUIC
/// modes' default (quinn's), so with it a TCP-vs-QUIC comparison compares protocols. Some kernels allow only a
/// subset inside a namespace (`net.ipv4.tcp_allowed_congestion_control`, "reno bbr" on the development machine):
/// then TCP falls back to reno, unlike QUIC's default, which is why the link reports the one that runs.
pub const CONGESTION_CONTROL_PREFERENCE: [&str; 2] = ["cubic", "reno"];

impl EmulatedLink {
    /// Creates both namespaces and devices and starts forwarding through `link`.
    pub fn start(link: Link) -> Result<Self, IoError> {
        Self::start_captured(link, None)
    }

    /// [`EmulatedLink::start`], handing every packet to `capture` as it is read and as it is delivered (see
    /// [`crate::capture`]).
    pub fn start_captured(link: Link, capture: Option<CaptureSink>) -> Result<Self, IoError> {
        let (client, server, congestion_control) = prepare_namespaces()?;
        let client_tun = client.run(|| Tun::create(DEVICE))??;
        let server_tun = server.run(|| Tun::create(DEVICE))??;
        configure_addresses(&client, &server)?;
        let counters = Arc::new(Mutex::new(LinkCounters::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (control_tx, control_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel();
        let control = {
            let client = client.clone();
            std::thread::Builder::new()
                .name("tlab-netem-control".into())
                .spawn(move || control_rx.iter().try_for_each(|kind| carry_out(&client, kind)))
                .map_err(|e| IoError::io("spawning the control thread", e))?
        };
        let origin = (Instant::now(), monotonic_ns());
        let drops = Arc::new(Mutex::new(DropLog::default()));
        let lateness = Arc::new(Mutex::new(Lateness::default()));
        let forwarder = Forwarder {
            link,
            client_tun,
            server_tun,
            counters: counters.clone(),
            stop: stop.clone(),
            control: control_tx,
            commands: command_rx,
            nat: Nat::new(),
            moved: false,
            pool: Vec::new(),
            start: origin,
            drops: drops.clone(),
            rules_armed: false,
            capture,
            lateness: lateness.clone(),
            stall: test_stall(),
        };
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tlab-netem".into())
            .spawn(move || {
                let _ = tid_tx.send(nix::unistd::gettid());
                forwarder.run()
            })
            .map_err(|e| IoError::io("spawning the forwarding thread", e))?;
        let realtime = tid_rx.recv().is_ok_and(make_realtime);
        let next_rule = std::sync::atomic::AtomicU64::new(0);
        let threads = Some((thread, control));
        Ok(Self { client, server, counters, stop, threads, congestion_control, realtime, commands, origin, drops, next_rule, lateness })
    }

    /// Arms a targeted-drop rule (its times are link time, see [`EmulatedLink::link_time`]); returns its id. The
    /// forwarder applies it at its next wake-up (within 10 ms), so arm rules ahead of their `not_before`.
    pub fn arm_drop(&self, rule: DropRule) -> RuleId {
        let _ = self.commands.send(LinkCommand::ArmDrop(rule));
        self.next_rule.fetch_add(1, Ordering::Relaxed)
    }

    /// Every targeted drop so far, in time order, on the monotonic clock.
    pub fn drop_log(&self) -> Vec<LoggedDrop> {
        self.drops.lock().unwrap().drops.clone()
    }

    /// What each armed rule has matched and dropped so far.
    pub fn drop_rules(&self) -> Vec<RuleStatus> {
        self.drops.lock().unwrap().rules.clone()
    }

    /// Link time (the model's `now`) of a CLOCK_MONOTONIC instant; instants before the link started map to zero.
    pub fn link_time(&self, monotonic_ns: u64) -> Duration {
        Duration::from_nanos(monotonic_ns.saturating_sub(self.origin.1))
    }

    /// Replaces the impairments of `target` from now on (packets already inside keep their schedule).
    pub fn set_impairments(&self, target: Target, impairments: Impairments) {
        let _ = self.commands.send(LinkCommand::Impair(target, impairments));
    }

    /// Fires an address change or NAT rebinding now.
    pub fn fire_event(&self, kind: EventKind) {
        let _ = self.commands.send(LinkCommand::Event(kind));
    }

    /// Drops every packet entering `target` for `duration`, starting now.
    pub fn blackhole(&self, target: Target, duration: Duration) {
        let _ = self.commands.send(LinkCommand::Blackhole(target, duration));
    }

    /// The TCP congestion control running in both namespaces (record it in results).
    pub fn congestion_control(&self) -> &'static str {
        self.congestion_control
    }

    /// Whether the forwarding thread got its real-time priority (record it with delay measurements).
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// Lateness of every release so far (write time − due time).
    pub fn lateness(&self) -> Lateness {
        self.lateness.lock().unwrap().clone()
    }

    /// The client's namespace.
    pub fn client(&self) -> &Arc<NetNs> {
        &self.client
    }

    /// The server's namespace.
    pub fn server(&self) -> &Arc<NetNs> {
        &self.server
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> LinkCounters {
        *self.counters.lock().unwrap()
    }

    /// Stops forwarding and returns the final counters (or the error that stopped the thread).
    pub fn stop(mut self) -> Result<LinkCounters, IoError> {
        self.halt()?;
        Ok(self.counters())
    }

    fn halt(&mut self) -> Result<(), IoError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some((forwarder, control)) = self.threads.take() else { return Ok(()) };
        let forwarded = forwarder.join().map_err(|_| IoError::Setup("forwarding thread panicked".into()))?;
        // The forwarder's end of the channel is gone now, so the control thread finishes its queue and returns.
        let controlled = control.join().map_err(|_| IoError::Setup("control thread panicked".into()))?;
        forwarded.and(controlled)
    }
}

impl Drop for EmulatedLink {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            eprintln!("tlab-netem: forwarding stopped with an error: {e}");
        }
    }
}

struct Forwarder {
    link: Link,
    client_tun: Tun,
    server_tun: Tun,
    counters: Arc<Mutex<LinkCounters>>,
    stop: Arc<AtomicBool>,
    /// Events that need commands go to the control thread: running `ip` here would stall every packet.
    control: mpsc::Sender<EventKind>,
    /// Changes asked by [`EmulatedLink`]'s owner while the link runs.
    commands: mpsc::Receiver<LinkCommand>,
    /// Identity until the first NAT rebinding, then the client's flows appear to come from its public mappings.
    nat: Nat,
    /// After an address change [`CLIENT_ADDR`] no longer exists on the path.
    moved: bool,
    /// Buffers of released packets, reused for new ones instead of allocating per packet.
    pool: Vec<Packet>,
    /// Link time zero, as in [`EmulatedLink`].
    start: (Instant, u64),
    /// Where targeted drops and rule counts are reported.
    drops: Arc<Mutex<DropLog>>,
    /// Whether any rule was armed (only then is there anything to report).
    rules_armed: bool,
    /// Where packets are captured, if anywhere: the sender's side at read, the receiver's side at delivery.
    capture: Option<CaptureSink>,
    /// Where each release's lateness is recorded.
    lateness: Arc<Mutex<Lateness>>,
    /// The test stall still to come, if any.
    stall: Option<Duration>,
}

/// The artificial stall of `TLAB_NETEM_TEST_STALL_MS` (see the module docs), for the first forwarder of the process.
fn test_stall() -> Option<Duration> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let ms: u64 = std::env::var("TLAB_NETEM_TEST_STALL_MS").ok()?.parse().ok()?;
    (!TAKEN.swap(true, Ordering::Relaxed)).then(|| Duration::from_millis(ms))
}

/// Most buffers kept for reuse (a few MB).
const POOL_LIMIT: usize = 4096;

impl Forwarder {
    fn run(mut self) -> Result<(), IoError> {
        // Wake-ups within a microsecond of the requested time instead of the default 50 µs slack.
        let _ = nix::sys::prctl::set_timerslack(1);
        let (start, start_ns) = self.start;
        let mut buf = vec![0u8; 65_536];
        let mut io = LinkCounters::default();
        while !self.stop.load(Ordering::Relaxed) {
            let now = start.elapsed();
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    LinkCommand::Impair(target, impairments) => self.link.set_impairments(now, target, impairments),
                    LinkCommand::Event(kind) => self.link.schedule_event(now, kind),
                    LinkCommand::Blackhole(target, duration) => self.link.add_blackhole(target, now..now + duration),
                    LinkCommand::ArmDrop(rule) => {
                        self.link.arm_drop(rule);
                        self.rules_armed = true;
                    }
                }
            }
            while let Some(event) = self.link.poll_event(now) {
                io.events += 1;
                match event.kind {
                    EventKind::NatRebind { old_mapping } => {
                        let public = next_nat_address(self.nat.public_address());
                        self.nat.rebind(event.at, public, old_mapping);
                    }
                    EventKind::AddressChange { .. } => self.moved = true,
                }
                // A closed channel means the control thread failed; its error surfaces when the link stops.
                let _ = self.control.send(event.kind);
            }
            self.read_burst(Direction::Uplink, &mut buf, start, &mut io)?;
            self.read_burst(Direction::Downlink, &mut buf, start, &mut io)?;
            self.release_due(start, &mut io)?;
            {
                let mut shared = self.counters.lock().unwrap();
                *shared = LinkCounters {
                    uplink: *self.link.pipeline(Direction::Uplink).counters(),
                    downlink: *self.link.pipeline(Direction::Downlink).counters(),
                    ..io
                };
            }
            if self.rules_armed {
                let dropped = self.link.take_drops();
                let mut log = self.drops.lock().unwrap();
                log.drops.extend(dropped.into_iter().map(|drop| LoggedDrop { at_ns: start_ns + drop.at.as_nanos() as u64, drop }));
                log.rules = self.link.drop_rules();
            }
            self.wait(start)?;
        }
        if let Some(capture) = self.capture.take() {
            capture.link_stopped(&self.counters.lock().unwrap());
        }
        Ok(())
    }

    /// Reads up to [`READ_BURST`] packets from one side, stamping each on the monotonic clock right after its read.
    fn read_burst(&mut self, direction: Direction, buf: &mut [u8], start: Instant, io: &mut LinkCounters) -> Result<(), IoError> {
        let tun = match direction {
            Direction::Uplink => &self.client_tun,
            Direction::Downlink => &self.server_tun,
        };
        for _ in 0..READ_BURST {
            let Some(n) = tun.recv(buf)? else { break };
            // After the read, so the stamp is never earlier than the packet's arrival.
            let arrived = start.elapsed();
            if n == 0 || buf[0] >> 4 != 4 {
                io.non_ipv4 += 1;
                continue;
            }
            if let Some(capture) = &self.capture {
                let side = if direction == Direction::Uplink { Side::Client } else { Side::Server };
                capture.record(side, self.start.1 + arrived.as_nanos() as u64, &buf[..n]);
            }
            if self.moved && n >= 20 {
                let client_side = match direction {
                    Direction::Uplink => &buf[12..16],
                    Direction::Downlink => &buf[16..20],
                };
                if client_side == CLIENT_ADDR.octets() {
                    io.old_address_dropped += 1;
                    continue;
                }
            }
            let mut packet = self.pool.pop().unwrap_or_default();
            packet.clear();
            packet.extend_from_slice(&buf[..n]);
            // Packets the NAT cannot parse (malformed) pass unchanged.
            let verdict = match direction {
                Direction::Uplink => self.nat.outbound(&mut packet).map(|()| Inbound::Forward),
                Direction::Downlink => self.nat.inbound(&mut packet, arrived),
            };
            if verdict == Ok(Inbound::Expired) {
                io.nat_expired_dropped += 1;
                self.pool.push(packet);
                continue;
            }
            self.link.push(direction, packet, arrived);
        }
        Ok(())
    }

    /// Writes out every packet due by now, recording how late each write is; debug builds check that none leaves
    /// before its arrival + fixed delay.
    fn release_due(&mut self, start: Instant, io: &mut LinkCounters) -> Result<(), IoError> {
        let mut lateness = self.lateness.lock().unwrap();
        if let Some(stall) = self.stall
            && lateness.count() >= 64
            && self.link.next_wakeup().is_some()
        {
            self.stall = None;
            std::thread::sleep(stall);
        }
        let now = start.elapsed();
        for (direction, tun) in [(Direction::Uplink, &self.server_tun), (Direction::Downlink, &self.client_tun)] {
            while let Some(release) = self.link.poll_release_timed(direction, now) {
                debug_assert!(
                    release.departs <= now && release.arrived + release.min_delay <= release.departs,
                    "released early: arrived {:?}, fixed delay {:?}, due {:?}, released {now:?}",
                    release.arrived,
                    release.min_delay,
                    release.departs
                );
                lateness.record(start.elapsed().saturating_sub(release.departs));
                if !tun.send(&release.packet)? {
                    io.write_refused += 1;
                } else if let Some(capture) = &self.capture {
                    let side = if direction == Direction::Uplink { Side::Server } else { Side::Client };
                    capture.record(side, monotonic_ns(), &release.packet);
                }
                if self.pool.len() < POOL_LIMIT {
                    self.pool.push(release.packet);
                }
            }
        }
        Ok(())
    }

    /// Sleeps until a device is readable or the model's next due time (at most 10 ms, to notice `stop`).
    fn wait(&self, start: Instant) -> Result<(), IoError> {
        let now = start.elapsed();
        let limit = Duration::from_millis(10);
        let timeout = self.link.next_wakeup().map_or(limit, |due| due.saturating_sub(now).min(limit));
        if timeout.is_zero() {
            return Ok(());
        }
        let mut fds = [
            PollFd::new(self.client_tun.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.server_tun.as_fd(), PollFlags::POLLIN),
        ];
        poll_precise(&mut fds, timeout)
    }
}

/// `ppoll` with a nanosecond timeout (poll(2) only takes milliseconds, which would release packets up to 1 ms late).
fn poll_precise(fds: &mut [PollFd<'_>], timeout: Duration) -> Result<(), IoError> {
    let spec = nix::sys::time::TimeSpec::from_duration(timeout);
    match nix::poll::ppoll(fds, Some(spec), None) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(IoError::os("ppoll", e)),
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `Message::sent_at` (Rust's [`Instant`] reads the same clock but hides it).
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
