//! Pure IPv4 rewriting for the address-change and NAT-rebinding events: replace the source or destination address
//! (and, for TCP/UDP, the port) and fix the IP header checksum and the TCP/UDP checksum incrementally (RFC 1624),
//! so a rewritten packet is as valid as the original. Non-first fragments carry no ports; only their address and
//! header checksum change (the first fragment's transport checksum covers the whole datagram).

use std::net::Ipv4Addr;

/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;

/// Why a packet could not be read or rewritten. A packet is never modified when an error is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ipv4Error {
    /// The buffer is shorter than its headers or its IP total length say.
    #[error("packet truncated: {len} bytes, need {needed}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes required.
        needed: usize,
    },
    /// The IP version field is not 4.
    #[error("not an IPv4 packet (version {version})")]
    NotIpv4 {
        /// The version found.
        version: u8,
    },
    /// The IHL field is below the 20-byte minimum.
    #[error("invalid IPv4 header length {header_len}")]
    BadHeaderLength {
        /// Header length in bytes.
        header_len: usize,
    },
    /// A port rewrite was asked for a packet without ports (not TCP/UDP, or a non-first fragment).
    #[error("packet has no ports to rewrite (protocol {protocol}, fragment offset {fragment_offset})")]
    NoPorts {
        /// IP protocol number.
        protocol: u8,
        /// Fragment offset in 8-byte units.
        fragment_offset: u16,
    },
}

/// Addresses and ports of a packet (ports only for TCP/UDP carrying their header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub source: Ipv4Addr,
    /// Destination address.
    pub destination: Ipv4Addr,
    /// Source port, if the packet has one.
    pub source_port: Option<u16>,
    /// Destination port, if the packet has one.
    pub destination_port: Option<u16>,
}

/// Offsets within one parsed packet.
struct Layout {
    header_len: usize,
    total_len: usize,
    protocol: u8,
    fragment_offset: u16,
    more_fragments: bool,
    /// Offset of the TCP/UDP checksum field, when the transport header is present.
    transport_checksum: Option<usize>,
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn layout(packet: &[u8]) -> Result<Layout, Ipv4Error> {
    if packet.len() < 20 {
        return Err(Ipv4Error::Truncated { len: packet.len(), needed: 20 });
    }
    let version = packet[0] >> 4;
    if version != 4 {
        return Err(Ipv4Error::NotIpv4 { version });
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(Ipv4Error::BadHeaderLength { header_len });
    }
    let total_len = usize::from(word(packet, 2));
    let needed = total_len.max(header_len);
    if packet.len() < needed {
        return Err(Ipv4Error::Truncated { len: packet.len(), needed });
    }
    let protocol = packet[9];
    let flags_fragment = word(packet, 6);
    let fragment_offset = flags_fragment & 0x1fff;
    let (min_transport, checksum_at) = match protocol {
        TCP => (20, 16),
        UDP => (8, 6),
        _ => (0, 0),
    };
    let transport_checksum = (min_transport > 0 && fragment_offset == 0 && total_len >= header_len + min_transport)
        .then_some(header_len + checksum_at);
    Ok(Layout {
        header_len,
        total_len,
        protocol,
        fragment_offset,
        more_fragments: flags_fragment & 0x2000 != 0,
        transport_checksum,
    })
}

/// Reads the addresses and ports of an IPv4 packet.
pub fn endpoints(packet: &[u8]) -> Result<Endpoints, Ipv4Error> {
    let l = layout(packet)?;
    let port = |at: usize| l.transport_checksum.map(|_| word(packet, l.header_len + at));
    Ok(Endpoints {
        protocol: l.protocol,
        source: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        destination: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        source_port: port(0),
        destination_port: port(2),
    })
}

/// Sets the source address (and the source port if `port` is given), fixing the checksums.
pub fn rewrite_source(packet: &mut [u8], address: Ipv4Addr, port: Option<u16>) -> Result<(), Ipv4Error> {
    rewrite(packet, 12, 0, address, port)
}

/// Sets the destination address (and the destination port if `port` is given), fixing the checksums.
pub fn rewrite_destination(packet: &mut [u8], address: Ipv4Addr, port: Option<u16>) -> Result<(), Ipv4Error> {
    rewrite(packet, 16, 2, address, port)
}

fn rewrite(
    packet: &mut [u8],
    address_at: usize,
    port_at: usize,
    address: Ipv4Addr,
    port: Option<u16>,
) -> Result<(), Ipv4Error> {
    let l = layout(packet)?;
    if port.is_some() && l.transport_checksum.is_none() {
        return Err(Ipv4Error::NoPorts { protocol: l.protocol, fragment_offset: l.fragment_offset });
    }
    let old_address: [u8; 4] = packet[address_at..address_at + 4].try_into().expect("4 bytes");
    let new_address = address.octets();
    packet[address_at..address_at + 4].copy_from_slice(&new_address);
    set_word(packet, 10, adjust(word(packet, 10), &old_address, &new_address));

    let Some(checksum_at) = l.transport_checksum else { return Ok(()) };
    let stored = word(packet, checksum_at);
    // A zero UDP checksum means "not computed" and must stay zero.
    let has_checksum = !(l.protocol == UDP && stored == 0);
    // The transport checksum covers the pseudo-header, hence the addresses.
    let mut checksum = adjust(stored, &old_address, &new_address);
    if let Some(port) = port {
        let at = l.header_len + port_at;
        let old_port = [packet[at], packet[at + 1]];
        set_word(packet, at, port);
        checksum = adjust(checksum, &old_port, &port.to_be_bytes());
    }
    if has_checksum {
        // In UDP a computed checksum of zero is sent as 0xffff.
        let checksum = if l.protocol == UDP && checksum == 0 { 0xffff } else { checksum };
        set_word(packet, checksum_at, checksum);
    }
    Ok(())
}

/// Checks the IP header checksum and, for a complete (unfragmented) TCP/UDP datagram, the transport checksum, by
/// full recomputation.
pub fn checksums_valid(packet: &[u8]) -> Result<bool, Ipv4Error> {
    let l = layout(packet)?;
    if fold(ones_sum(&packet[..l.header_len], 0)) != 0xffff {
        return Ok(false);
    }
    let Some(checksum_at) = l.transport_checksum.filter(|_| !l.more_fragments) else { return Ok(true) };
    if l.protocol == UDP && word(packet, checksum_at) == 0 {
        return Ok(true);
    }
    Ok(fold(transport_sum(packet, l.header_len, l.total_len, l.protocol)) == 0xffff)
}

/// One's-complement sum of the pseudo-header and the transport segment (checksum field included).
fn transport_sum(packet: &[u8], header_len: usize, total_len: usize, protocol: u8) -> u32 {
    let segment_len = (total_len - header_len) as u32;
    let pseudo = ones_sum(&packet[12..20], u32::from(protocol) + segment_len);
    ones_sum(&packet[header_len..total_len], pseudo)
}

/// Adds big-endian 16-bit words of `data` (odd length padded with zero) to `sum`, without folding.
fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for each changed 16-bit word `m` → `m'`.
fn adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!checksum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(sum)
}

fn set_word(packet: &mut [u8], at: usize, value: u16) {
    packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Packets for tests, built with checksums computed independently of the code under test.
#[cfg(test)]
pub(crate) mod testing {
    use super::{TCP, UDP};

    /// Builds an IPv4 packet with correct checksums, computed independently of the code under test.
    pub(crate) fn build(protocol: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let transport_len = if protocol == TCP { 20 } else { 8 };
        let total = 20 + transport_len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        if protocol == TCP {
            p[24..28].copy_from_slice(&1000u32.to_be_bytes());
            p[32] = 0x50; // data offset 5
            p[33] = 0x18; // PSH|ACK
            p[34..36].copy_from_slice(&65535u16.to_be_bytes());
        } else {
            p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        }
        p[20 + transport_len..].copy_from_slice(payload);
        let ip = reference_checksum(&p[..20]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&((transport_len + payload.len()) as u16).to_be_bytes());
        pseudo.extend_from_slice(&p[20..]);
        let mut l4 = reference_checksum(&pseudo);
        if protocol == UDP && l4 == 0 {
            l4 = 0xffff;
        }
        let at = if protocol == TCP { 36 } else { 26 };
        p[at..at + 2].copy_from_slice(&l4.to_be_bytes());
        p
    }

    /// Textbook checksum: one's-complement of the one's-complement sum, with u64 and a final fold.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for (i, b) in data.iter().enumerate() {
            sum += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::build;
    use super::*;

    #[test]
    fn built_packets_verify_and_corruption_is_detected() {
        for proto in [TCP, UDP] {
            let mut p = build(proto, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, b"hello, odd payload");
            assert_eq!(checksums_valid(&p), Ok(true));
            let last = p.len() - 1;
            p[last] ^= 0x01;
            assert_eq!(checksums_valid(&p), Ok(false));
        }
    }

    #[test]
    fn source_rewrite_with_port_keeps_checksums_valid() {
        for proto in [TCP, UDP] {
            let mut p = build(proto, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, b"payload!");
            rewrite_source(&mut p, Ipv4Addr::new(192, 168, 77, 254), Some(61000)).unwrap();
            let e = endpoints(&p).unwrap();
            assert_eq!((e.source, e.source_port), (Ipv4Addr::new(192, 168, 77, 254), Some(61000)));
            assert_eq!((e.destination, e.destination_port), (Ipv4Addr::new(10, 0, 0, 2), Some(443)));
            assert_eq!(checksums_valid(&p), Ok(true), "protocol {proto}");
            // Byte-identical to a packet built from scratch with the new endpoints.
            assert_eq!(p, build(proto, [192, 168, 77, 254], [10, 0, 0, 2], 61000, 443, b"payload!"));
        }
    }

    #[test]
    fn destination_rewrite_round_trips() {
        let original = build(UDP, [10, 0, 0, 2], [10, 0, 0, 9], 443, 61000, b"x");
        let mut p = original.clone();
        rewrite_destination(&mut p, Ipv4Addr::new(10, 0, 0, 1), Some(40000)).unwrap();
        assert_eq!(checksums_valid(&p), Ok(true));
        rewrite_destination(&mut p, Ipv4Addr::new(10, 0, 0, 9), Some(61000)).unwrap();
        assert_eq!(p, original);
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut p = build(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
        p[26..28].fill(0);
        rewrite_source(&mut p, Ipv4Addr::new(10, 9, 9, 9), Some(7)).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(checksums_valid(&p), Ok(true));
    }

    #[test]
    fn errors_leave_the_packet_alone() {
        let mut icmp = build(UDP, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, b"abc");
        icmp[9] = 1;
        let before = icmp.clone();
        assert_eq!(
            rewrite_source(&mut icmp, Ipv4Addr::LOCALHOST, Some(5)),
            Err(Ipv4Error::NoPorts { protocol: 1, fragment_offset: 0 })
        );
        assert_eq!(icmp, before);
        assert!(matches!(rewrite_source(&mut [0x45; 10], Ipv4Addr::LOCALHOST, None), Err(Ipv4Error::Truncated { .. })));
        let mut v6 = build(TCP, [1; 4], [2; 4], 1, 2, b"");
        v6[0] = 0x65;
        assert_eq!(rewrite_source(&mut v6, Ipv4Addr::LOCALHOST, None), Err(Ipv4Error::NotIpv4 { version: 6 }));
    }
}
