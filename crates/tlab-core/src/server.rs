//! What every transport's server shares, written once: the connection [`Deadlines`] (handshake, first request,
//! idle), a per-connection [`ConnectionClock`] that knows when the current deadline falls, the [`Watched`] byte
//! stream that enforces it on a TCP connection (and closes it without a reset, see [`LINGER`]), the per-IP
//! connection cap ([`PerIpConnections`]), a TCP accept loop ([`accept_tcp`]) that backs off on accept errors
//! (`EMFILE` …) instead of spinning the log, and the [`cors`] policy of the HTTP-based endpoints.
//!
//! Transport crates never depend on each other; they all depend on this module, so the policy is the same for every
//! mode and documented once (docs/PROTOCOL.md, "Deadlines and connection limits").

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

pub mod cors;

/// How long a server connection that is done keeps reading, and discarding, what the client still sends (see
/// [`Watched::new`]; QUIC servers do the same for a stream): long enough for a client to finish a message of the
/// size limit and read the answer.
pub const LINGER: Duration = Duration::from_secs(5);

/// How long a server waits for each phase of a client's connection before closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From accepting the connection to a finished TLS (or QUIC) handshake.
    pub handshake: Duration,
    /// From the finished handshake to the first complete request (upgrade, open header, HTTP request, auth stream,
    /// session request), however slowly its bytes trickle in.
    pub first_request: Duration,
    /// How long a connection may stay idle afterwards (see [`ConnectionClock`] for what counts as activity).
    pub idle: Duration,
}

impl Default for Deadlines {
    /// Handshake 10 s, first request 10 s, idle 60 s: generous for any real client (the session layer pings every
    /// 250 ms), short enough that silent connections cannot pile up.
    fn default() -> Self {
        Self { handshake: Duration::from_secs(10), first_request: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }
}

impl Deadlines {
    /// All three deadlines set to `each` (tests use a short one).
    pub fn all(each: Duration) -> Self {
        Self { handshake: each, first_request: each, idle: each }
    }
}

/// The deadline state of one connection, shared by its I/O and its request handlers.
///
/// Before the first request the deadline is fixed: handshake end + [`Deadlines::first_request`] (bytes that trickle
/// in do not extend it). After it, the connection is idle when no request or stream is in progress (no
/// [`Busy`] guard alive) and no byte moved either way for [`Deadlines::idle`].
#[derive(Debug)]
pub struct ConnectionClock {
    deadlines: Deadlines,
    origin: Instant,
    /// When the handshake finished, in ns after `origin` (`u64::MAX` before).
    handshake_done: AtomicU64,
    /// Last byte moved or last busy guard dropped, in ns after `origin`.
    last_activity: AtomicU64,
    requested: AtomicBool,
    busy: AtomicUsize,
}

impl ConnectionClock {
    /// A clock started now, when the connection was accepted.
    pub fn new(deadlines: Deadlines) -> Arc<Self> {
        Arc::new(Self {
            deadlines,
            origin: Instant::now(),
            handshake_done: AtomicU64::new(u64::MAX),
            last_activity: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        })
    }

    /// The deadlines this clock enforces.
    pub fn deadlines(&self) -> Deadlines {
        self.deadlines
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    /// The TLS or QUIC handshake finished: the first-request deadline starts now.
    pub fn handshake_done(&self) {
        self.handshake_done.store(self.now_ns(), Ordering::Release);
    }

    /// A complete first request arrived: from now on only [`Deadlines::idle`] applies.
    pub fn request_seen(&self) {
        self.requested.store(true, Ordering::Release);
        self.touch();
    }

    /// Bytes moved.
    pub fn touch(&self) {
        self.last_activity.store(self.now_ns(), Ordering::Release);
    }

    /// Marks a request or stream in progress (and the first request seen) until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.request_seen();
        Busy(self.clone())
    }

    /// When the connection's current deadline falls, as of now; a later call may move it (activity, a new phase).
    pub fn deadline(&self) -> Instant {
        if !self.requested.load(Ordering::Acquire) {
            let start = match self.handshake_done.load(Ordering::Acquire) {
                u64::MAX => self.deadlines.handshake,
                done => Duration::from_nanos(done),
            };
            return self.origin + start + self.deadlines.first_request;
        }
        if self.busy.load(Ordering::Acquire) > 0 {
            return Instant::now() + self.deadlines.idle;
        }
        self.at(self.last_activity.load(Ordering::Acquire)) + self.deadlines.idle
    }

    /// Whether the first request arrived.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Completes once the current deadline has passed (re-checked each time it falls, as activity moves it).
    pub async fn expired(&self) {
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request or stream in progress on a [`ConnectionClock`]'s connection (see [`ConnectionClock::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<ConnectionClock>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A byte stream whose reads fail with [`io::ErrorKind::TimedOut`] once its [`ConnectionClock`]'s deadline passes;
/// every byte read or written counts as activity. Without a clock (a client's connection) it only passes through.
///
/// Servers read their connections continuously, so the failing read ends the connection (and frees its descriptor)
/// in whatever protocol stack sits on top.
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    clock: Option<Arc<ConnectionClock>>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Runs on `inner` when the stream is dropped (a server connection's [`linger`]).
    on_drop: Option<fn(&T)>,
}

impl Watched<TcpStream> {
    /// A server's TCP connection under `clock`'s deadlines. Dropping it closes without a reset: the write side is
    /// shut down (FIN behind everything written) and what the client still sends is read and discarded until it
    /// closes too or [`LINGER`] passes. Closing a socket with unread input makes the kernel send RST, and the RST
    /// makes the client's kernel throw away what it received but had not read yet: the server's last answer (a
    /// WebSocket Close 1009, an HTTP 413 to an oversize body, the last messages of a source) would be lost.
    pub fn new(tcp: TcpStream, clock: Arc<ConnectionClock>) -> Self {
        let mut watched = Self::watching(tcp, clock);
        watched.on_drop = Some(linger);
        watched
    }
}

impl<T> Watched<T> {
    /// `inner` under `clock`'s deadlines.
    fn watching(inner: T, clock: Arc<ConnectionClock>) -> Self {
        let timer = Some(Box::pin(tokio::time::sleep_until(clock.deadline())));
        Self { inner, clock: Some(clock), timer, on_drop: None }
    }

    /// `inner` with no deadline (the client side of a connection type both sides share).
    pub fn unwatched(inner: T) -> Self {
        Self { inner, clock: None, timer: None, on_drop: None }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Ready with an error once the deadline passed; registers the timer's waker otherwise.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let (Some(clock), Some(timer)) = (&self.clock, &mut self.timer) else { return Poll::Pending };
        // A phase change (first request → idle) may move the deadline earlier than the armed timer.
        let deadline = clock.deadline();
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = clock.deadline();
            if Instant::now() >= deadline {
                let phase = if clock.requested() { "idle" } else { "first request" };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("{phase} deadline passed")));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    fn touch(&self) {
        if let Some(clock) = &self.clock {
            clock.touch();
        }
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop {
            on_drop(&self.inner);
        }
    }
}

/// [`Watched::new`]'s close: a duplicate of the descriptor outlives `tcp` (whose close then frees nothing), its
/// write side is shut down, and a task reads it until the client's FIN, an error or [`LINGER`], then closes it.
fn linger(tcp: &TcpStream) {
    use std::os::fd::AsFd as _;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let socket = match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            tracing::debug!(error = %e, "no descriptor to linger on: closing at once");
            return;
        }
    };
    if socket.shutdown(std::net::Shutdown::Write).is_err() {
        return; // not connected any more: nothing to protect
    }
    runtime.spawn(async move {
        let Ok(mut socket) = TcpStream::from_std(socket) else { return };
        let mut discard = vec![0u8; 16 << 10];
        let drained = tokio::time::timeout(LINGER, async {
            while matches!(socket.read(&mut discard).await, Ok(n) if n > 0) {}
        });
        if drained.await.is_err() {
            tracing::debug!("client still sending after {LINGER:?}: closing");
        }
    });
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections per client IP address against a cap (`--max-connections-per-ip`).
#[derive(Debug, Clone, Default)]
pub struct PerIpConnections {
    max: Option<u32>,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl PerIpConnections {
    /// A counter refusing connections beyond `max` per IP (`None` = unlimited).
    pub fn new(max: Option<u32>) -> Self {
        Self { max, open: Arc::default() }
    }

    /// The cap, if any.
    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// Counts one more connection from `ip` until the permit is dropped, or `None` when `ip` has `max` already.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpPermit> {
        let mut open = self.open.lock().unwrap();
        let count = open.entry(ip).or_insert(0);
        if self.max.is_some_and(|max| *count >= max) {
            return None;
        }
        *count += 1;
        Some(IpPermit { open: self.open.clone(), ip })
    }

    /// Connections open from `ip` now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

/// One connection counted by [`PerIpConnections`] until dropped.
#[derive(Debug)]
pub struct IpPermit {
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Sleeps after accept errors: 10 ms doubling to 1 s while they last, back to 10 ms after a success. Logs the first
/// error of a run and then one line per second at most.
#[derive(Debug)]
pub struct AcceptBackoff {
    delay: Duration,
    failures: u64,
}

impl AcceptBackoff {
    /// The first delay.
    pub const MIN: Duration = Duration::from_millis(10);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A backoff at its first delay.
    pub fn new() -> Self {
        Self { delay: Self::MIN, failures: 0 }
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.delay = Self::MIN;
        self.failures = 0;
    }

    /// The delay the next error waits.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Logs `error` (rate-limited) and waits the current delay, doubling it for the next error.
    pub async fn wait(&mut self, error: &io::Error) {
        self.failures += 1;
        if self.failures == 1 || self.delay == Self::MAX {
            tracing::warn!(%error, failures = self.failures, retry_in = ?self.delay, "accept failed");
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets a few log lines per second through, so that a flood of refused or garbage connections cannot flood the log.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    window: Mutex<(Instant, u32)>,
}

impl LogBudget {
    /// A budget of `per_second` lines each second.
    pub fn new(per_second: u32) -> Self {
        Self { per_second, window: Mutex::new((Instant::now(), 0)) }
    }

    /// Whether one more line may be logged now.
    pub fn allow(&self) -> bool {
        let mut window = self.window.lock().unwrap();
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= self.per_second
    }
}

impl Default for LogBudget {
    /// Ten lines a second.
    fn default() -> Self {
        Self::new(10)
    }
}

/// A TCP connection just accepted.
#[derive(Debug)]
pub struct Accepted {
    /// The connection (`TCP_NODELAY` set).
    pub tcp: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its count against the per-IP cap, `None` when the client's IP is over the cap: the server then answers with
    /// its mode's documented refusal and closes.
    pub permit: Option<IpPermit>,
    /// The connection's deadlines, started at accept.
    pub clock: Arc<ConnectionClock>,
}

/// Accepts on `listener` forever, running `serve` for each connection on a task of a set this future owns (dropping
/// or aborting it ends every connection). Accept errors back off ([`AcceptBackoff`]). A connection that ends in a
/// TLS failure or a missed deadline (garbage, silent clients) is logged at info, rate-limited ([`LogBudget`]); other
/// ends at debug. `mode` names the transport in those lines.
pub async fn accept_tcp<F, Fut>(listener: TcpListener, deadlines: Deadlines, per_ip: PerIpConnections, mode: &'static str, serve: F)
where
    F: Fn(Accepted) -> Fut,
    Fut: Future<Output = Result<(), crate::Error>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::new();
    let budget = Arc::new(LogBudget::default());
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff.reset();
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "TCP_NODELAY failed");
                    }
                    let permit = per_ip.acquire(peer.ip());
                    if permit.is_none() && budget.allow() {
                        tracing::warn!(%peer, mode, max = per_ip.max(), "connection refused: too many connections from this address");
                    }
                    let work = serve(Accepted { tcp, peer, permit, clock: ConnectionClock::new(deadlines) });
                    let budget = budget.clone();
                    connections.spawn(async move {
                        match work.await {
                            Ok(()) => {}
                            Err(e @ (crate::Error::Tls(_) | crate::Error::Timeout(_))) if budget.allow() => {
                                tracing::info!(%peer, mode, error = %e, "connection dropped before its first request");
                            }
                            Err(e) => tracing::debug!(%peer, mode, error = %e, "connection ended"),
                        }
                    });
                }
                Err(e) => backoff.wait(&e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Runs `work` under `deadline` (a phase of [`Deadlines`]), naming `what` in the timeout error.
pub async fn within<T>(deadline: Duration, what: &str, work: impl IntoFuture<Output = T>) -> Result<T, crate::Error> {
    tokio::time::timeout(deadline, work).await.map_err(|_| crate::Error::Timeout(format!("{what} within {deadline:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_counts_and_releases() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let cap = PerIpConnections::new(Some(2));
        let a = cap.acquire(ip).unwrap();
        let _b = cap.acquire(ip).unwrap();
        assert!(cap.acquire(ip).is_none(), "the third connection from one IP is refused");
        assert!(cap.acquire(other).is_some(), "another IP has its own count");
        drop(a);
        assert_eq!(cap.open(ip), 1);
        assert!(cap.acquire(ip).is_some());
        let unlimited = PerIpConnections::new(None);
        let held: Vec<_> = (0..100).map(|_| unlimited.acquire(ip).unwrap()).collect();
        assert_eq!(unlimited.open(ip), 100);
        drop(held);
        assert_eq!(unlimited.open(ip), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn log_budget_refills_each_second() {
        let budget = LogBudget::new(3);
        assert_eq!((0..5).filter(|_| budget.allow()).count(), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_a_second_and_resets() {
        let mut backoff = AcceptBackoff::new();
        let error = io::Error::other("EMFILE");
        let mut delays = Vec::new();
        for _ in 0..9 {
            delays.push(backoff.delay());
            backoff.wait(&error).await;
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.delay(), AcceptBackoff::MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_phases() {
        let deadlines = Deadlines { handshake: Duration::from_secs(1), first_request: Duration::from_secs(2), idle: Duration::from_secs(5) };
        let clock = ConnectionClock::new(deadlines);
        let start = Instant::now();
        assert_eq!(clock.deadline(), start + Duration::from_secs(3), "before the handshake: handshake + first request");
        tokio::time::advance(Duration::from_millis(500)).await;
        clock.handshake_done();
        clock.touch();
        assert_eq!(clock.deadline(), start + Duration::from_millis(2500), "bytes do not extend the first request");
        clock.request_seen();
        assert_eq!(clock.deadline(), start + Duration::from_millis(5500));
        let busy = clock.busy();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(clock.deadline() > Instant::now(), "never idle while busy");
        drop(busy);
        assert_eq!(clock.deadline(), Instant::now() + Duration::from_secs(5));
        clock.expired().await;
        assert_eq!(Instant::now(), start + Duration::from_millis(105_500));
    }

    #[tokio::test]
    async fn a_dropped_server_connection_delivers_its_last_answer_despite_unread_input() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut watched = Watched::new(tcp, ConnectionClock::new(Deadlines::default()));
            let mut first = [0u8; 1];
            watched.read_exact(&mut first).await.unwrap();
            watched.write_all(b"answer").await.unwrap();
            // Dropped with most of the client's megabyte unread.
        });
        let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let upload = tokio::spawn(async move { writer.write_all(&vec![7u8; 1 << 20]).await });
        let mut answer = Vec::new();
        reader.read_to_end(&mut answer).await.expect("a FIN, not a reset");
        assert_eq!(answer, b"answer");
        upload.await.unwrap().expect("the server read (and discarded) the whole upload");
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn watched_read_fails_at_the_deadline_and_activity_extends_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let clock = ConnectionClock::new(Deadlines::all(Duration::from_secs(1)));
        clock.handshake_done();
        clock.request_seen();
        let (near, mut far) = tokio::io::duplex(64);
        let mut watched = Watched::watching(near, clock.clone());
        let start = Instant::now();
        tokio::time::advance(Duration::from_millis(900)).await;
        far.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        watched.read_exact(&mut byte).await.unwrap();
        let error = watched.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(Instant::now(), start + Duration::from_millis(1900), "idle counts from the last byte");
        let (near, _far) = tokio::io::duplex(8);
        let mut plain = Watched::unwatched(near);
        let pending = tokio::time::timeout(Duration::from_secs(3600), plain.read(&mut byte)).await;
        assert!(pending.is_err(), "an unwatched stream has no deadline");
    }
}
