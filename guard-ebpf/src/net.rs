//! Ethernet (with up to two VLAN tags), IPv4 and IPv6 header parsing for XDP.
use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// Ethernet header length (no tags).
pub const ETH_HLEN: usize = 14;
/// Length of one 802.1Q / 802.1ad tag.
pub const VLAN_HLEN: usize = 4;
/// Ethertype of IPv4, in network order as read from the frame.
pub const ETH_P_IP: u16 = 0x0800_u16.to_be();
/// Ethertype of IPv6, network order.
pub const ETH_P_IPV6: u16 = 0x86DD_u16.to_be();
/// Ethertype of an 802.1Q VLAN tag, network order.
pub const ETH_P_8021Q: u16 = 0x8100_u16.to_be();
/// Ethertype of an 802.1ad (QinQ) service tag, network order.
pub const ETH_P_8021AD: u16 = 0x88A8_u16.to_be();

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None` if the packet is
/// too short. The only way this crate reads packet memory.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Mutable variant of [`ptr_at`].
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p.cast_mut())
}

/// The source of an IP packet.
pub enum Source {
    /// IPv4 address as a `u32` whose memory is in network order.
    V4(u32),
    /// IPv6 address, network order.
    V6([u8; 16]),
}

/// What the parser found in a frame.
pub enum Parsed {
    /// An IP packet from this source.
    Ip(Source),
    /// A well-formed frame that is not IP (ARP, LLDP, …).
    NotIp,
}

/// Parses Ethernet, up to two VLAN tags and the IP header far enough to read the source
/// address. `None`: the frame is truncated or its IP header is malformed.
#[inline(always)]
pub fn parse_source(ctx: &XdpContext) -> Option<Parsed> {
    let mut proto: u16 = unsafe { *ptr_at::<u16>(ctx, 12)? };
    let mut l3 = ETH_HLEN;
    // Two tags at most (QinQ); unrolled so the verifier sees constant offsets.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = unsafe { *ptr_at::<u16>(ctx, ETH_HLEN + 2)? };
        l3 = ETH_HLEN + VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = unsafe { *ptr_at::<u16>(ctx, ETH_HLEN + VLAN_HLEN + 2)? };
            l3 = ETH_HLEN + 2 * VLAN_HLEN;
        }
    }
    if proto == ETH_P_IP {
        // Version/IHL byte, then the source at offset 12 of a header of at least 20 bytes.
        let ver_ihl: u8 = unsafe { *ptr_at::<u8>(ctx, l3)? };
        if ver_ihl >> 4 != 4 || ver_ihl & 0x0f < 5 {
            return None;
        }
        let src = unsafe {
            ptr_at::<[u8; 20]>(ctx, l3)?
                .cast::<u8>()
                .add(12)
                .cast::<u32>()
        };
        Some(Parsed::Ip(Source::V4(unsafe { src.read_unaligned() })))
    } else if proto == ETH_P_IPV6 {
        let first: u8 = unsafe { *ptr_at::<u8>(ctx, l3)? };
        if first >> 4 != 6 {
            return None;
        }
        let src = unsafe {
            ptr_at::<[u8; 40]>(ctx, l3)?
                .cast::<u8>()
                .add(8)
                .cast::<[u8; 16]>()
        };
        Some(Parsed::Ip(Source::V6(unsafe { src.read_unaligned() })))
    } else {
        Some(Parsed::NotIp)
    }
}
