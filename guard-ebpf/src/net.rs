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
/// Ethertype of an 802.1ad (`QinQ`) service tag, network order.
pub const ETH_P_8021AD: u16 = 0x88A8_u16.to_be();

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None` if the packet is
/// too short. The only way this crate reads packet memory.
#[inline(always)]
#[must_use]
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
#[must_use]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(<*const T>::cast_mut)
}

/// Parses Ethernet and up to two VLAN tags. Returns the ethertype (network order) and the
/// offset of the layer-3 header; `None` if the frame is truncated.
#[inline(always)]
#[must_use]
pub fn l3(ctx: &XdpContext) -> Option<(u16, usize)> {
    let ethertype = ptr_at::<u16>(ctx, 12)?;
    // SAFETY: `ptr_at` checked that the two bytes lie inside the packet,
    // which stays mapped for the whole run; read unaligned, as a frame may start anywhere.
    let mut proto: u16 = unsafe { ethertype.read_unaligned() };
    let mut l3 = ETH_HLEN;
    // Two tags at most (QinQ); unrolled so the verifier sees constant offsets.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let inner = ptr_at::<u16>(ctx, ETH_HLEN + 2)?;
        // SAFETY: as above.
        proto = unsafe { inner.read_unaligned() };
        l3 = ETH_HLEN + VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let inner = ptr_at::<u16>(ctx, ETH_HLEN + VLAN_HLEN + 2)?;
            // SAFETY: as above.
            proto = unsafe { inner.read_unaligned() };
            l3 = ETH_HLEN + 2 * VLAN_HLEN;
        }
    }
    Some((proto, l3))
}

/// The IPv4 source address (a `u32` whose memory is in network order) of the header at `l3`;
/// `None` if truncated or not a valid IPv4 header.
#[inline(always)]
#[must_use]
pub fn ipv4_source(ctx: &XdpContext, l3: usize) -> Option<u32> {
    // One bounds check covers the version/IHL byte and the source at offset 12.
    let hdr = ptr_at::<[u32; 5]>(ctx, l3)?.cast::<u32>();
    // SAFETY: `ptr_at` checked that the 20 bytes lie inside the packet, which stays
    // mapped for the whole run; the source is its 4th word. Unaligned reads: see `l3`.
    let first = unsafe { hdr.read_unaligned() }.to_ne_bytes()[0];
    if first >> 4 != 4 || first & 0x0f < 5 {
        return None;
    }
    // SAFETY: see above.
    Some(unsafe { hdr.add(3).read_unaligned() })
}

/// The IPv6 source address of the header at `l3`; `None` if truncated or not IPv6.
#[inline(always)]
#[must_use]
pub fn ipv6_source(ctx: &XdpContext, l3: usize) -> Option<[u8; 16]> {
    let hdr = ptr_at::<[u8; 40]>(ctx, l3)?.cast::<u8>();
    // SAFETY: `ptr_at` checked that the 40 bytes of the header lie inside the packet,
    // which stays mapped for the whole run; the source is bytes 8..24.
    if unsafe { hdr.read() } >> 4 != 6 {
        return None;
    }
    // SAFETY: see above.
    Some(unsafe { hdr.add(8).cast::<[u8; 16]>().read_unaligned() })
}
