//! Raw packet → TCP [`Segment`]: Ethernet (up to two VLAN tags), IPv4 (with options) or IPv6
//! (extension headers walked, bounded), then the TCP header.
//!
//! Everything is bounds-checked: a malformed packet is a [`PacketError`], never a panic. IP
//! fragments are not reassembled (real HTTP traffic is not fragmented; a fragmented TCP segment
//! is an evasion sign): they are reported as [`PacketError::Fragment`], with the segment's
//! addresses when the fragment is the first one (it carries the TCP ports), so the caller can
//! count them against the flow. An IPv6 atomic fragment (offset 0, no more fragments) is a whole
//! packet and parsed as one.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

const ETH_HEADER: usize = 14;
const VLAN_TAG: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 2;
const IPV6_HEADER: usize = 40;
/// More extension headers than this in one packet is treated as malformed (a `DoS` vector otherwise).
const MAX_IPV6_EXT_HEADERS: usize = 8;
const PROTO_TCP: u8 = 6;
const TCP_MIN_HEADER: usize = 20;

/// Why a packet did not yield a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The packet ends before the header of `layer` does.
    #[error("{layer} header truncated: need {need} bytes, have {have}")]
    Truncated {
        layer: &'static str,
        need: usize,
        have: usize,
    },
    /// An Ethernet frame that carries neither IPv4 nor IPv6 (after VLAN tags).
    #[error("not an ip packet: ethertype {ethertype:#06x}")]
    NotIp { ethertype: u16 },
    /// More VLAN tags than we accept.
    #[error("more than {MAX_VLAN_TAGS} vlan tags")]
    TooManyVlanTags,
    /// The IP version nibble is neither 4 nor 6.
    #[error("bad ip version {version}")]
    BadIpVersion { version: u8 },
    /// A length field of `layer` is inconsistent with the packet.
    #[error("bad {layer} length field {value}")]
    BadLength { layer: &'static str, value: usize },
    /// Part of a fragmented IP datagram: not reassembled. `flow` is the (source, destination)
    /// of the TCP segment when this is the first fragment and carries the ports.
    #[error("ip fragment")]
    Fragment {
        flow: Option<(SocketAddr, SocketAddr)>,
    },
    /// An IP packet that does not carry TCP.
    #[error("not tcp: protocol {protocol}")]
    NotTcp { protocol: u8 },
    /// Too many IPv6 extension headers.
    #[error("more than {MAX_IPV6_EXT_HEADERS} ipv6 extension headers")]
    TooManyExtHeaders,
}

impl PacketError {
    /// True when the packet is broken (as opposed to well-formed but not for us: a fragment,
    /// another protocol).
    #[must_use]
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            Self::Fragment { .. } | Self::NotTcp { .. } | Self::NotIp { .. }
        )
    }
}

/// The TCP flags guard cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    #[must_use]
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    #[must_use]
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    #[must_use]
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    #[must_use]
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// One TCP segment, borrowed from the packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    /// TCP payload (IP padding already cut off by the IP length fields).
    pub payload: &'a [u8],
    /// Capture time, wall clock, since the Unix epoch.
    pub ts: Duration,
}

fn need(buf: &[u8], n: usize, layer: &'static str) -> Result<(), PacketError> {
    if buf.len() < n {
        return Err(PacketError::Truncated {
            layer,
            need: n,
            have: buf.len(),
        });
    }
    Ok(())
}

fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Parses an Ethernet frame (optionally 802.1Q / 802.1ad tagged, at most two tags).
pub fn parse_ethernet(ts: Duration, frame: &[u8]) -> Result<Segment<'_>, PacketError> {
    need(frame, ETH_HEADER, "ethernet")?;
    let mut ethertype = be16(frame, 12);
    let mut at = ETH_HEADER;
    let mut tags = 0;
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(PacketError::TooManyVlanTags);
        }
        need(frame, at + VLAN_TAG, "vlan")?;
        ethertype = be16(frame, at + 2);
        at += VLAN_TAG;
        tags += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => parse_ip(ts, &frame[at..]),
        other => Err(PacketError::NotIp { ethertype: other }),
    }
}

/// Parses an IPv4 or IPv6 packet starting at the IP header.
pub fn parse_ip(ts: Duration, packet: &[u8]) -> Result<Segment<'_>, PacketError> {
    need(packet, 1, "ip")?;
    match packet[0] >> 4 {
        4 => parse_ipv4(ts, packet),
        6 => parse_ipv6(ts, packet),
        version => Err(PacketError::BadIpVersion { version }),
    }
}

fn parse_ipv4(ts: Duration, p: &[u8]) -> Result<Segment<'_>, PacketError> {
    need(p, 20, "ipv4")?;
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::BadLength {
            layer: "ipv4 ihl",
            value: ihl,
        });
    }
    need(p, ihl, "ipv4 options")?;
    let total = usize::from(be16(p, 2));
    if total < ihl || total > p.len() {
        return Err(PacketError::BadLength {
            layer: "ipv4 total",
            value: total,
        });
    }
    let frag = be16(p, 6);
    if p[9] != PROTO_TCP {
        return Err(PacketError::NotTcp { protocol: p[9] });
    }
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    // More-fragments flag or a non-zero offset: part of a fragmented datagram.
    if frag & 0x1fff != 0 {
        return Err(PacketError::Fragment { flow: None });
    }
    if frag & 0x2000 != 0 {
        return Err(first_fragment(src, dst, &p[ihl..total]));
    }
    parse_tcp(ts, src, dst, &p[ihl..total])
}

fn parse_ipv6(ts: Duration, p: &[u8]) -> Result<Segment<'_>, PacketError> {
    need(p, IPV6_HEADER, "ipv6")?;
    let payload_len = usize::from(be16(p, 4));
    // A zero payload length means a jumbogram; not something HTTP traffic uses.
    if payload_len == 0 || IPV6_HEADER + payload_len > p.len() {
        return Err(PacketError::BadLength {
            layer: "ipv6 payload",
            value: payload_len,
        });
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    let body = &p[IPV6_HEADER..IPV6_HEADER + payload_len];
    let (src, dst) = (
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
    );
    let mut next = p[6];
    let mut at = 0;
    let mut fragmented = false;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        match next {
            PROTO_TCP if fragmented => return Err(first_fragment(src, dst, &body[at..])),
            PROTO_TCP => return parse_tcp(ts, src, dst, &body[at..]),
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                need(&body[at..], 2, "ipv6 extension")?;
                let len = (usize::from(body[at + 1]) + 1) * 8;
                need(&body[at..], len, "ipv6 extension")?;
                next = body[at];
                at += len;
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                need(&body[at..], 2, "ipv6 ah")?;
                let len = (usize::from(body[at + 1]) + 2) * 4;
                need(&body[at..], len, "ipv6 ah")?;
                next = body[at];
                at += len;
            }
            // Fragment header: 8 bytes; offset in the top 13 bits of bytes 2-3, M flag in bit 0.
            44 => {
                need(&body[at..], 8, "ipv6 fragment")?;
                let off = be16(body, at + 2);
                if off & 0xfff8 != 0 {
                    return Err(PacketError::Fragment { flow: None });
                }
                // Offset 0 and more to come: a first fragment. Without more (an atomic fragment,
                // RFC 6946) the packet is whole and the receiver processes it as such.
                fragmented |= off & 1 != 0;
                next = body[at];
                at += 8;
            }
            protocol => return Err(PacketError::NotTcp { protocol }),
        }
    }
    Err(PacketError::TooManyExtHeaders)
}

/// The [`PacketError::Fragment`] of a first fragment whose payload `t` starts with the TCP header.
fn first_fragment(src: IpAddr, dst: IpAddr, t: &[u8]) -> PacketError {
    let flow = (t.len() >= 4).then(|| {
        (
            SocketAddr::new(src, be16(t, 0)),
            SocketAddr::new(dst, be16(t, 2)),
        )
    });
    PacketError::Fragment { flow }
}

fn parse_tcp(ts: Duration, src: IpAddr, dst: IpAddr, t: &[u8]) -> Result<Segment<'_>, PacketError> {
    need(t, TCP_MIN_HEADER, "tcp")?;
    let offset = usize::from(t[12] >> 4) * 4;
    if offset < TCP_MIN_HEADER || offset > t.len() {
        return Err(PacketError::BadLength {
            layer: "tcp data offset",
            value: offset,
        });
    }
    Ok(Segment {
        src: SocketAddr::new(src, be16(t, 0)),
        dst: SocketAddr::new(dst, be16(t, 2)),
        seq: be32(t, 4),
        ack: be32(t, 8),
        flags: TcpFlags(t[13]),
        payload: &t[offset..],
        ts,
    })
}
