//! `http_tap`: a socket filter for guard's `AF_PACKET` capture socket. It keeps only TCP segments
//! to or from a protected HTTP port (the `TAP_PORTS` array, written by the daemon at run time)
//! that carry payload, open the connection (SYN: the reassembler learns the initial sequence
//! number, so even a reordered first data segment is placed right) or close it (FIN/RST, which
//! end HTTP/1.0 responses and flows); pure ACKs and everything else never reach userspace.
//!
//! Ethernet with up to two VLAN tags (802.1Q / 802.1ad, as the XDP parser reads them) and IPv6
//! extension headers (walked, bounded, as the userspace parser does) are followed, so that
//! nothing userspace can parse is hidden from it by an extra header.
//!
//! It also keeps the direction honest: a segment to a protected port is kept only when it comes
//! in, a segment from one only when it goes out. A "server" segment arriving from the wire is
//! forged (with it an off-path sender could invent the server's initial sequence number and
//! fake the handshake proof the tap relies on); a client segment leaving is the host's own
//! client traffic, not a request to the protected server.
use aya_ebpf::{
    macros::{map, socket_filter},
    maps::Array,
    programs::SkBuffContext,
};
use guard_common::TAP_PORTS_LEN;

use guard_ebpf::net::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, VLAN_HLEN};

/// Indexed by TCP port (host order): non-zero = protected HTTP port.
#[map]
static TAP_PORTS: Array<u8> = Array::with_max_entries(TAP_PORTS_LEN, 0);

const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
/// `skb->pkt_type` of a packet the host sends (`PACKET_OUTGOING` in `linux/if_packet.h`).
const PACKET_OUTGOING: u32 = 4;

#[socket_filter]
pub fn http_tap(ctx: SkBuffContext) -> i64 {
    // On any parse failure the segment is not ours: keep nothing (the capture only ever sees
    // what it asked for; the data path is unaffected either way).
    try_tap(&ctx).unwrap_or(0)
}

#[inline(always)]
fn port_watched(port: u16) -> bool {
    TAP_PORTS.get(u32::from(port)).is_some_and(|v| *v != 0)
}

/// IPv6 extension headers walked before giving up (as the userspace parser does).
const MAX_IPV6_EXT: usize = 8;

/// The layer-3 offset and ethertype (network order) after up to two VLAN tags (802.1Q or
/// 802.1ad), as the XDP parser reads them.
#[inline(always)]
fn l3(ctx: &SkBuffContext) -> Option<(u16, usize)> {
    let mut proto: u16 = ctx.load(12).ok()?;
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = ctx.load(ETH_HLEN + 2).ok()?;
        l3 = ETH_HLEN + VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = ctx.load(ETH_HLEN + VLAN_HLEN + 2).ok()?;
            l3 = ETH_HLEN + 2 * VLAN_HLEN;
        }
    }
    Some((proto, l3))
}

/// The offset of the TCP header after the IPv6 header at `l3` and its extension headers
/// (hop-by-hop, routing, destination options, authentication, and the fragment header of a
/// first fragment), at most [`MAX_IPV6_EXT`] of them; `None` when the packet carries no TCP
/// header (another protocol, a later fragment, too many headers, truncated).
#[inline(always)]
fn ipv6_tcp(ctx: &SkBuffContext, l3: usize) -> Option<usize> {
    let mut next: u8 = ctx.load(l3 + 6).ok()?;
    let mut at = l3 + 40;
    for _ in 0..MAX_IPV6_EXT {
        let len = match next {
            IPPROTO_TCP => return Some(at),
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => (usize::from(ctx.load::<u8>(at + 1).ok()?) + 1) * 8,
            // Authentication header: (len + 2) * 4 bytes.
            51 => (usize::from(ctx.load::<u8>(at + 1).ok()?) + 2) * 4,
            // Fragment header: only the first fragment carries the TCP header.
            44 => {
                let off: u16 = u16::from_be(ctx.load(at + 2).ok()?);
                if off & 0xfff8 != 0 {
                    return None;
                }
                8
            }
            _ => return None,
        };
        next = ctx.load(at).ok()?;
        at += len;
    }
    (next == IPPROTO_TCP).then_some(at)
}

#[inline(always)]
fn try_tap(ctx: &SkBuffContext) -> Option<i64> {
    let (proto, l3) = l3(ctx)?;
    let (l4, payload_end) = if proto == ETH_P_IP {
        let ver_ihl: u8 = ctx.load(l3).ok()?;
        let ihl = usize::from(ver_ihl & 0x0f) * 4;
        let ip_proto: u8 = ctx.load(l3 + 9).ok()?;
        let frag: u16 = u16::from_be(ctx.load(l3 + 6).ok()?);
        // Only first fragments carry the TCP header (userspace counts them against the flow);
        // later ones are not worth the bytes.
        if ip_proto != IPPROTO_TCP || ihl < 20 || frag & 0x1fff != 0 {
            return Some(0);
        }
        let total = usize::from(u16::from_be(ctx.load(l3 + 2).ok()?));
        (l3 + ihl, l3 + total)
    } else if proto == ETH_P_IPV6 {
        let Some(l4) = ipv6_tcp(ctx, l3) else {
            return Some(0);
        };
        let plen = usize::from(u16::from_be(ctx.load(l3 + 4).ok()?));
        (l4, l3 + 40 + plen)
    } else {
        return Some(0);
    };
    let sport = u16::from_be(ctx.load(l4).ok()?);
    let dport = u16::from_be(ctx.load(l4 + 2).ok()?);
    let to_server = port_watched(dport);
    if !to_server && !port_watched(sport) {
        return Some(0);
    }
    // SAFETY: `skb` points to the `__sk_buff` the kernel passed this program; `pkt_type` is a
    // field socket filters may read.
    let outgoing = unsafe { (*ctx.skb.skb).pkt_type } == PACKET_OUTGOING;
    if to_server == outgoing {
        return Some(0);
    }
    let doff: u8 = ctx.load(l4 + 12).ok()?;
    let flags: u8 = ctx.load(l4 + 13).ok()?;
    let data = l4 + usize::from(doff >> 4) * 4;
    if payload_end > data || flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        Some(i64::from(ctx.len()))
    } else {
        Some(0)
    }
}
