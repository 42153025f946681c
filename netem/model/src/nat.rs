//! The NAT of the NAT-rebinding event, on virtual time: which public address and port each of the client's flows
//! appears to come from, and whether a packet the server sends to an old mapping still reaches the client.
//!
//! Until the first rebinding the NAT is transparent: packets pass unchanged, so the client's own address and port
//! are its public ones. A rebinding at `now` gives every flow (protocol, private address, private port) a new
//! mapping on a new public address, with a port allocated from [`PUBLIC_PORTS`] on the flow's first packet after
//! it; the client's packets leave through the new mapping at once. The mappings in use before keep forwarding
//! packets the server sends to them for the rebinding's `old_mapping` time (zero: not at all), then they expire and
//! such packets are dropped, as behind a real NAT whose old binding timed out. Packets without ports (ICMP,
//! non-first fragments) get their address mapped only, per public address. Rewriting fixes every checksum
//! ([`crate::ipv4`]); ICMP errors keep the addresses they quote.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::ipv4::{Ipv4Error, endpoints, rewrite_destination, rewrite_source};

/// Public ports the NAT allocates: below Linux's ephemeral range (32768–60999), so a rebound port never equals the
/// client's own.
pub const PUBLIC_PORTS: RangeInclusive<u16> = 10_000..=32_767;

/// What to do with a packet the server sent towards the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Forward it (rewritten to the private endpoint if it was addressed to a mapping).
    Forward,
    /// Drop it: it is addressed to a mapping that has expired.
    Expired,
}

/// A public endpoint's private side and when it stops working (`None`: it is the current mapping).
#[derive(Clone, Copy, Debug)]
struct Mapping {
    private: Ipv4Addr,
    private_port: Option<u16>,
    expires: Option<Duration>,
}

impl Mapping {
    fn valid_at(&self, now: Duration) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

/// (protocol, address, port): one side of a flow; the port is `None` for packets without ports.
type Endpoint = (u8, Ipv4Addr, Option<u16>);

/// The NAT between client and server, driven on virtual time.
#[derive(Debug)]
pub struct Nat {
    /// The current public address; `None` until the first rebinding (transparent).
    public: Option<Ipv4Addr>,
    /// Private endpoint → public port under the current public address.
    current: HashMap<Endpoint, Option<u16>>,
    /// Public endpoint → its mapping (current ones and old ones not yet purged).
    mappings: HashMap<Endpoint, Mapping>,
    /// Until when the transparent (identity) mapping of the time before the first rebinding still works.
    transparent_until: Option<Duration>,
    next_port: u16,
}

impl Default for Nat {
    fn default() -> Self {
        Self {
            public: None,
            current: HashMap::new(),
            mappings: HashMap::new(),
            transparent_until: None,
            next_port: *PUBLIC_PORTS.start(),
        }
    }
}

impl Nat {
    /// A transparent NAT (no rebinding yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current public address, once a rebinding has happened.
    pub fn public_address(&self) -> Option<Ipv4Addr> {
        self.public
    }

    /// Rebinds at `now`: new flows and the client's next packets use `public` with new ports; the mappings in use
    /// until now keep working for `old_mapping`.
    pub fn rebind(&mut self, now: Duration, public: Ipv4Addr, old_mapping: Duration) {
        let expires = now + old_mapping;
        if self.public.is_none() {
            self.transparent_until = Some(expires);
        }
        for mapping in self.mappings.values_mut().filter(|m| m.expires.is_none()) {
            mapping.expires = Some(expires);
        }
        self.mappings.retain(|_, m| m.valid_at(now));
        self.current.clear();
        self.public = Some(public);
    }

    /// Rewrites a client → server packet to its flow's current public endpoint. A packet that cannot be parsed
    /// is left unchanged and the error returned.
    pub fn outbound(&mut self, packet: &mut [u8]) -> Result<(), Ipv4Error> {
        let Some(public) = self.public else { return Ok(()) };
        let e = endpoints(packet)?;
        let private: Endpoint = match e.source_port {
            Some(port) => (e.protocol, e.source, Some(port)),
            // Address-only packets share one mapping per private address, whatever their protocol.
            None => (0, e.source, None),
        };
        let port = match self.current.get(&private) {
            Some(&port) => port,
            None => {
                let port = private.2.map(|_| self.allocate_port(private.0, public));
                self.current.insert(private, port);
                let mapping = Mapping { private: private.1, private_port: private.2, expires: None };
                self.mappings.insert((private.0, public, port), mapping);
                port
            }
        };
        rewrite_source(packet, public, port)
    }

    /// Maps a server → client packet arriving at `now` back to the private endpoint, or says it must be dropped.
    /// A packet that cannot be parsed is left unchanged and the error returned.
    pub fn inbound(&mut self, packet: &mut [u8], now: Duration) -> Result<Inbound, Ipv4Error> {
        if self.public.is_none() {
            return Ok(Inbound::Forward);
        }
        let e = endpoints(packet)?;
        let key: Endpoint = match e.destination_port {
            Some(port) => (e.protocol, e.destination, Some(port)),
            None => (0, e.destination, None),
        };
        match self.mappings.get(&key).copied() {
            Some(m) if m.valid_at(now) => {
                rewrite_destination(packet, m.private, m.private_port)?;
                Ok(Inbound::Forward)
            }
            Some(_) => {
                self.mappings.remove(&key);
                Ok(Inbound::Expired)
            }
            // Not a mapping of ours: the transparent time's identity mapping, while it lasts.
            None if self.transparent_until.is_some_and(|until| now < until) => Ok(Inbound::Forward),
            None => Ok(Inbound::Expired),
        }
    }

    /// The next port of [`PUBLIC_PORTS`] that no live mapping on `public` uses for `protocol`.
    fn allocate_port(&mut self, protocol: u8, public: Ipv4Addr) -> u16 {
        loop {
            let port = self.next_port;
            self.next_port = if port == *PUBLIC_PORTS.end() { *PUBLIC_PORTS.start() } else { port + 1 };
            if !self.mappings.contains_key(&(protocol, public, Some(port))) {
                return port;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::testing::build;
    use crate::ipv4::{TCP, UDP, checksums_valid};

    const CLIENT: [u8; 4] = [10, 77, 0, 1];
    const SERVER: [u8; 4] = [10, 77, 0, 2];
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn source(p: &[u8]) -> (Ipv4Addr, Option<u16>) {
        let e = endpoints(p).unwrap();
        (e.source, e.source_port)
    }

    fn destination(p: &[u8]) -> (Ipv4Addr, Option<u16>) {
        let e = endpoints(p).unwrap();
        (e.destination, e.destination_port)
    }

    #[test]
    fn transparent_until_the_first_rebinding() {
        let mut nat = Nat::new();
        let mut up = build(UDP, CLIENT, SERVER, 40_000, 443, b"hi");
        let before = up.clone();
        nat.outbound(&mut up).unwrap();
        assert_eq!(up, before);
        let mut down = build(UDP, SERVER, CLIENT, 443, 40_000, b"hi");
        assert_eq!(nat.inbound(&mut down, ms(5)), Ok(Inbound::Forward));
        assert_eq!(nat.public_address(), None);
    }

    #[test]
    fn rebinding_changes_address_and_port_with_valid_checksums_both_ways() {
        for protocol in [TCP, UDP] {
            let mut nat = Nat::new();
            nat.rebind(ms(100), PUBLIC, Duration::ZERO);
            let mut up = build(protocol, CLIENT, SERVER, 40_000, 443, b"payload");
            nat.outbound(&mut up).unwrap();
            let (address, port) = source(&up);
            let port = port.unwrap();
            assert_eq!(address, PUBLIC);
            assert!(PUBLIC_PORTS.contains(&port) && port != 40_000, "{port}");
            assert_eq!(checksums_valid(&up), Ok(true), "protocol {protocol}");
            // The same flow keeps its mapping; another flow gets another port.
            let mut again = build(protocol, CLIENT, SERVER, 40_000, 443, b"more");
            nat.outbound(&mut again).unwrap();
            assert_eq!(source(&again), (PUBLIC, Some(port)));
            let mut other = build(protocol, CLIENT, SERVER, 40_001, 443, b"x");
            nat.outbound(&mut other).unwrap();
            assert_ne!(source(&other).1, Some(port));
            // The server's reply to the public endpoint reaches the private one, checksums intact.
            let mut reply = build(protocol, SERVER, PUBLIC.octets(), 443, port, b"reply");
            assert_eq!(nat.inbound(&mut reply, ms(200)), Ok(Inbound::Forward));
            assert_eq!(destination(&reply), (Ipv4Addr::from(CLIENT), Some(40_000)));
            assert_eq!(checksums_valid(&reply), Ok(true), "protocol {protocol}");
            assert_eq!(reply, build(protocol, SERVER, CLIENT, 443, 40_000, b"reply"));
        }
    }

    #[test]
    fn the_old_mapping_works_until_it_expires_on_virtual_time() {
        let mut nat = Nat::new();
        nat.rebind(ms(1000), PUBLIC, ms(500));
        let to_old = || build(UDP, SERVER, CLIENT, 443, 40_000, b"late");
        let mut p = to_old();
        assert_eq!(nat.inbound(&mut p, ms(1499)), Ok(Inbound::Forward));
        assert_eq!(p, to_old(), "the old (transparent) mapping forwards unchanged");
        assert_eq!(nat.inbound(&mut to_old(), ms(1500)), Ok(Inbound::Expired));
        assert_eq!(nat.inbound(&mut to_old(), ms(9000)), Ok(Inbound::Expired));
    }

    #[test]
    fn zero_old_mapping_time_drops_at_once() {
        let mut nat = Nat::new();
        nat.rebind(ms(1000), PUBLIC, Duration::ZERO);
        let mut p = build(UDP, SERVER, CLIENT, 443, 40_000, b"late");
        assert_eq!(nat.inbound(&mut p, ms(1000)), Ok(Inbound::Expired));
    }

    #[test]
    fn a_second_rebinding_retires_the_first_ones_mappings() {
        let mut nat = Nat::new();
        nat.rebind(ms(0), PUBLIC, Duration::ZERO);
        let mut up = build(UDP, CLIENT, SERVER, 40_000, 443, b"a");
        nat.outbound(&mut up).unwrap();
        let first = source(&up);
        let second_public = Ipv4Addr::new(10, 77, 0, 102);
        nat.rebind(ms(100), second_public, ms(50));
        let mut up = build(UDP, CLIENT, SERVER, 40_000, 443, b"b");
        nat.outbound(&mut up).unwrap();
        assert_eq!(source(&up).0, second_public);
        let to_first = || build(UDP, SERVER, first.0.octets(), 443, first.1.unwrap(), b"r");
        let mut p = to_first();
        assert_eq!(nat.inbound(&mut p, ms(149)), Ok(Inbound::Forward));
        assert_eq!(destination(&p), (Ipv4Addr::from(CLIENT), Some(40_000)));
        assert_eq!(nat.inbound(&mut to_first(), ms(150)), Ok(Inbound::Expired));
    }

    #[test]
    fn packets_without_ports_get_their_address_mapped() {
        let mut nat = Nat::new();
        nat.rebind(ms(0), PUBLIC, Duration::ZERO);
        let mut icmp = build(UDP, CLIENT, SERVER, 1, 2, b"ping");
        icmp[9] = 1;
        nat.outbound(&mut icmp).unwrap();
        assert_eq!(source(&icmp), (PUBLIC, None));
        let mut reply = build(UDP, SERVER, PUBLIC.octets(), 2, 1, b"pong");
        reply[9] = 1;
        assert_eq!(nat.inbound(&mut reply, ms(1)), Ok(Inbound::Forward));
        assert_eq!(destination(&reply), (Ipv4Addr::from(CLIENT), None));
    }
}
