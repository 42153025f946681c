//! Client, server and per-stream configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::message::{MAX_STREAM_ID, StreamId};
pub use crate::server::Deadlines;
pub use crate::server::cors::AllowOrigin;
use crate::tls::{CertPin, Identity};
use crate::transport::StreamService;

/// Limits a server (and a client) enforces on its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes; a larger message closes that connection.
    pub max_message_size: usize,
    /// Most logical streams one session may open.
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_message_size: 4 << 20, max_streams: 1024 }
    }
}

impl Limits {
    /// `Err(MessageTooLarge)` when `size` exceeds the limit.
    pub fn check_size(&self, size: usize) -> Result<(), Error> {
        if size > self.max_message_size {
            return Err(Error::MessageTooLarge { size, limit: self.max_message_size });
        }
        Ok(())
    }

    /// `Err(TooManyStreams)` when opening one more stream beyond `open_now` exceeds the limit.
    pub fn check_streams(&self, stream: StreamId, open_now: usize) -> Result<(), Error> {
        if open_now >= self.max_streams as usize {
            return Err(Error::TooManyStreams { stream, limit: self.max_streams });
        }
        Ok(())
    }
}

/// The congestion controller a run's connections use, on both ends: the suite's `congestion_control`.
///
/// The QUIC transports run quinn's implementation of it; the TCP-based transports ignore this field, because kernel
/// TCP's algorithm is a per-network-namespace setting that the runner makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionControl {
    /// CUBIC (RFC 9438), Linux TCP's default.
    #[default]
    Cubic,
    /// NewReno (RFC 6582 / RFC 9002).
    NewReno,
    /// BBR (version 1).
    Bbr,
}

impl CongestionControl {
    /// Every algorithm, in the order of the docs.
    pub const ALL: [Self; 3] = [Self::Cubic, Self::NewReno, Self::Bbr];

    /// The name in suites and results: `cubic`, `newreno` or `bbr`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::NewReno => "newreno",
            Self::Bbr => "bbr",
        }
    }
}

impl std::fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CongestionControl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|cc| cc.name() == s).ok_or_else(|| {
            Error::Config(format!("unknown congestion control `{s}` (expected cubic, newreno or bbr)"))
        })
    }
}

/// Everything a transport needs to serve.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS certificate and key presented to clients.
    pub identity: Arc<Identity>,
    /// The bearer token every client must present in its handshake.
    pub token: String,
    /// Limits enforced on every client.
    pub limits: Limits,
    /// What the server does with each accepted stream (echo, source, sink).
    pub service: Arc<dyn StreamService>,
    /// The congestion controller of the connections the server accepts (QUIC transports; TCP ignores it).
    pub congestion: CongestionControl,
    /// How long a connection may take for its handshake and first request, and stay idle.
    pub deadlines: Deadlines,
    /// Most connections open at once from one client IP address (`None` = unlimited, the default); the next one
    /// gets the mode's documented refusal.
    pub max_connections_per_ip: Option<u32>,
    /// The page origins the HTTP-based modes (SSE, h3, gRPC-Web) let browsers call them from (CORS; default: any).
    pub allow_origin: AllowOrigin,
}

/// Everything a transport needs to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server URL as printed by `tlab serve` (scheme, host, port, path).
    pub url: String,
    /// How the server certificate is checked.
    pub pin: CertPin,
    /// The bearer token sent in the handshake.
    pub token: String,
    /// Limits the client enforces on what it sends and receives.
    pub limits: Limits,
    /// Give up a connection attempt after this long.
    pub connect_timeout: Duration,
    /// The congestion controller of the connections the client opens (QUIC transports; TCP ignores it).
    pub congestion: CongestionControl,
}

impl ClientConfig {
    /// A configuration with default limits, a 10 s connect timeout and the default congestion controller (CUBIC).
    pub fn new(url: impl Into<String>, pin: CertPin, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pin,
            token: token.into(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            congestion: CongestionControl::default(),
        }
    }

    /// The `host:port` authority and the path of [`ClientConfig::url`].
    pub fn authority_and_path(&self) -> Result<(SocketAddr, String), Error> {
        let rest = self
            .url
            .split_once("://")
            .map(|(_, rest)| rest)
            .ok_or_else(|| Error::Config(format!("URL `{}` has no scheme", self.url)))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = authority
            .parse::<SocketAddr>()
            .map_err(|e| Error::Config(format!("URL `{}`: `{authority}` is not an IP:port ({e})", self.url)))?;
        Ok((addr, path.to_string()))
    }
}

/// What the server does on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Every data message is sent back unchanged (same stream, seq, sent_at, payload).
    Echo,
    /// The server sends `count` messages of `size` bytes, `interval_us` apart (0 = as fast as possible), then ends.
    Source {
        /// Messages to send.
        count: u64,
        /// Payload bytes per message.
        size: usize,
        /// Microseconds between messages.
        interval_us: u64,
    },
    /// The server consumes data; when the client finishes, it answers one message whose 8-byte big-endian payload
    /// is the number of data messages it received.
    Sink,
}

/// Resume information of the session layer, sent when a stream (re)opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeFrom {
    /// Identifies the client session across connections.
    pub session: u64,
    /// The next data seq the client expects from the server (everything below arrived).
    pub next_expected: u64,
    /// The stream was open before on another connection: a server that has no state for the session must refuse
    /// (it was restarted or forgot the session) instead of starting afresh. Query key `reopen=1`.
    pub reopen: bool,
}

/// The request that opens one logical stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpen {
    /// The logical stream.
    pub stream: StreamId,
    /// What the server does with it.
    pub mode: StreamMode,
    /// Present when the session layer manages the stream (resumable).
    pub resume: Option<ResumeFrom>,
}

impl StreamOpen {
    /// An echo stream without session layer.
    pub fn echo(stream: StreamId) -> Self {
        Self { stream, mode: StreamMode::Echo, resume: None }
    }

    /// The URL query form used by every HTTP-based transport: `stream=3&mode=echo[&session=…&next=…[&reopen=1]]`.
    pub fn to_query(&self) -> String {
        let mut q = format!("stream={}", self.stream);
        match self.mode {
            StreamMode::Echo => q.push_str("&mode=echo"),
            StreamMode::Sink => q.push_str("&mode=sink"),
            StreamMode::Source { count, size, interval_us } => {
                q.push_str(&format!("&mode=source&count={count}&size={size}&interval_us={interval_us}"))
            }
        }
        if let Some(r) = self.resume {
            q.push_str(&format!("&session={:x}&next={}", r.session, r.next_expected));
            if r.reopen {
                q.push_str("&reopen=1");
            }
        }
        q
    }

    /// Parses [`StreamOpen::to_query`]'s form; unknown keys are ignored (so `token=` may share the query).
    pub fn from_query(query: &str) -> Result<Self, Error> {
        let mut fields = std::collections::HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            fields.insert(k, v);
        }
        let number = |key: &str, default: Option<u64>| -> Result<u64, Error> {
            match fields.get(key) {
                Some(v) => v.parse().map_err(|_| Error::Protocol(format!("stream open: `{key}={v}` is not a number"))),
                None => default.ok_or_else(|| Error::Protocol(format!("stream open: `{key}` is missing"))),
            }
        };
        let stream = number("stream", Some(0))?;
        if stream > MAX_STREAM_ID as u64 {
            return Err(Error::Protocol(format!("stream open: stream id {stream} above {MAX_STREAM_ID}")));
        }
        let mode = match fields.get("mode").copied().unwrap_or("echo") {
            "echo" => StreamMode::Echo,
            "sink" => StreamMode::Sink,
            "source" => StreamMode::Source {
                count: number("count", None)?,
                size: number("size", None)? as usize,
                interval_us: number("interval_us", Some(0))?,
            },
            other => return Err(Error::Protocol(format!("stream open: unknown mode `{other}`"))),
        };
        let resume = match fields.get("session") {
            Some(s) => Some(ResumeFrom {
                session: u64::from_str_radix(s, 16)
                    .map_err(|_| Error::Protocol(format!("stream open: session `{s}` is not hex")))?,
                next_expected: number("next", Some(0))?,
                reopen: number("reopen", Some(0))? == 1,
            }),
            None => None,
        };
        Ok(Self { stream: stream as StreamId, mode, resume })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips() {
        let cases = [
            StreamOpen::echo(0),
            StreamOpen { stream: 7, mode: StreamMode::Sink, resume: Some(ResumeFrom { session: 0xabc, next_expected: 9, reopen: true }) },
            StreamOpen { stream: 2, mode: StreamMode::Source { count: 10, size: 64, interval_us: 500 }, resume: None },
        ];
        for open in cases {
            assert_eq!(StreamOpen::from_query(&open.to_query()).unwrap(), open);
        }
    }

    #[test]
    fn query_defaults_and_foreign_keys() {
        let open = StreamOpen::from_query("token=abc").unwrap();
        assert_eq!(open, StreamOpen::echo(0));
    }

    #[test]
    fn bad_queries_are_protocol_errors() {
        for q in ["stream=x", "mode=teleport", "mode=source&size=1", "stream=4294967295", "session=zz"] {
            assert!(matches!(StreamOpen::from_query(q), Err(Error::Protocol(_))), "{q}");
        }
    }

    #[test]
    fn limits_check() {
        let limits = Limits { max_message_size: 10, max_streams: 2 };
        assert!(limits.check_size(10).is_ok());
        assert!(matches!(limits.check_size(11), Err(Error::MessageTooLarge { size: 11, limit: 10 })));
        assert!(limits.check_streams(1, 1).is_ok());
        assert!(matches!(limits.check_streams(2, 2), Err(Error::TooManyStreams { stream: 2, limit: 2 })));
    }

    #[test]
    fn congestion_control_names_round_trip() {
        for cc in CongestionControl::ALL {
            assert_eq!(cc.to_string().parse::<CongestionControl>().unwrap(), cc);
        }
        assert_eq!("newreno".parse::<CongestionControl>().unwrap(), CongestionControl::NewReno);
        assert_eq!(CongestionControl::default(), CongestionControl::Cubic);
        assert!(matches!("reno".parse::<CongestionControl>(), Err(Error::Config(_))));
        assert!(matches!("CUBIC".parse::<CongestionControl>(), Err(Error::Config(_))));
    }

    #[test]
    fn url_authority_and_path() {
        let cfg = ClientConfig::new("wss://127.0.0.1:4433/tlab/ws", CertPin::AnyCertificate, "t");
        let (addr, path) = cfg.authority_and_path().unwrap();
        assert_eq!(addr, "127.0.0.1:4433".parse().unwrap());
        assert_eq!(path, "/tlab/ws");
        let bad = ClientConfig::new("localhost:1", CertPin::AnyCertificate, "t");
        assert!(matches!(bad.authority_and_path(), Err(Error::Config(_))));
    }
}
