//! Types shared by the eBPF programs (`guard-ebpf`) and the daemon (`guard-daemon`).
//!
//! Everything that crosses the kernel/user boundary lives here: map names and capacities,
//! `#[repr(C)]` keys and values without implicit padding (checked by a size assertion next to
//! each), statistic indices and configuration flags. With the `user` feature the map types
//! implement `aya::Pod`.
//!
//! Byte order: every IPv4 address is a `u32` whose *memory* holds the address in network order
//! (`u32::from_ne_bytes(ip.octets())` in userspace, a plain load from the packet in the kernel);
//! every IPv6 address is a `[u8; 16]` in network order. Times are `CLOCK_MONOTONIC` nanoseconds
//! (what `bpf_ktime_get_ns` returns), not wall-clock time.
#![no_std]

use core::mem::size_of;

/// Exact IPv4 bans: `HashMap<u32, BanEntry>`. A plain hash, not LRU: a flood must never evict a ban.
pub const MAP_BANS_V4: &str = "BANS_V4";
/// Exact IPv6 bans: `HashMap<[u8; 16], BanEntry>`.
pub const MAP_BANS_V6: &str = "BANS_V6";
/// IPv4 CIDR bans: `LpmTrie<u32, BanEntry>`.
pub const MAP_CIDR_V4: &str = "CIDR_V4";
/// IPv6 CIDR bans: `LpmTrie<[u8; 16], BanEntry>`.
pub const MAP_CIDR_V6: &str = "CIDR_V6";
/// IPv4 allowlist: `LpmTrie<u32, u32>` (the value is unused, 1).
pub const MAP_ALLOW_V4: &str = "ALLOW_V4";
/// IPv6 allowlist: `LpmTrie<[u8; 16], u32>`.
pub const MAP_ALLOW_V6: &str = "ALLOW_V6";
/// Per-source token buckets for IPv4: `LruHashMap<u32, RateBucket>`.
pub const MAP_RATE_V4: &str = "RATE_V4";
/// Per-source token buckets for IPv6: `LruHashMap<[u8; 16], RateBucket>`.
pub const MAP_RATE_V6: &str = "RATE_V6";
/// One-entry `Array<XdpConfig>` written by the daemon.
pub const MAP_CONFIG: &str = "CONFIG";
/// Global counters: `PerCpuArray<u64>` indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "STATS";
/// Ring buffer of `RateEvent`s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Every map the XDP program declares, in the order the daemon opens them.
pub const XDP_MAPS: [&str; 15] = [
    MAP_BANS_V4,
    MAP_BANS_V6,
    MAP_CIDR_V4,
    MAP_CIDR_V6,
    MAP_ALLOW_V4,
    MAP_ALLOW_V6,
    MAP_RATE_V4,
    MAP_RATE_V6,
    MAP_CONFIG,
    MAP_STATS,
    MAP_EVENTS,
    MAP_DENSE_INDEX,
    MAP_DENSE,
    MAP_DENSE_HITS,
    MAP_DENSE_V16,
];

/// Name of the socket filter of the HTTP capture socket.
pub const PROG_HTTP_TAP: &str = "http_tap";
/// Protected HTTP ports: `Array<u8>` indexed by port, non-zero = captured. Not pinned: it
/// belongs to one capture socket's life.
pub const MAP_TAP_PORTS: &str = "TAP_PORTS";
/// Entries of `TAP_PORTS`: one per TCP port.
pub const TAP_PORTS_LEN: u32 = 65_536;

/// Name of the XDP program in the object file.
pub const PROG_XDP_GUARD: &str = "xdp_guard";

/// Capacity of each exact-ban map (IPv4 and IPv6 separately).
pub const BANS_CAPACITY: u32 = 1 << 21;
/// Capacity of each CIDR-ban trie.
pub const CIDR_CAPACITY: u32 = 1 << 17;
/// Capacity of each allowlist trie.
pub const ALLOW_CAPACITY: u32 = 1 << 14;
/// Capacity of each per-source rate map (LRU: the least recently seen source is evicted).
pub const RATE_CAPACITY: u32 = 1 << 18;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 18;

/// Bit of `BanEntry::expires_ns`: this ban overlaps an allowlist entry, so the program must
/// consult the allowlist before dropping. Bans without it skip that lookup. (No deadline reaches
/// 2^63 ns of uptime, so the bit is free.)
pub const BAN_CHECK_ALLOW: u64 = 1 << 63;

/// A ban as the XDP program sees it (value of the exact and CIDR ban maps).
///
/// The daemon writes `expires_ns` and zeroed counters; the program only adds to the counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEntry {
    /// When the ban stops applying, `CLOCK_MONOTONIC` ns; 0 = never; plus the `BAN_CHECK_ALLOW`
    /// flag bit. Expired entries are ignored by the program and removed by the daemon.
    pub expires_ns: u64,
    /// Packets dropped by this ban.
    pub packets: u64,
    /// Bytes dropped by this ban (frame length, from the Ethernet header on).
    pub bytes: u64,
    /// Last drop, `CLOCK_MONOTONIC` ns (coarse clock); 0 = never hit.
    pub last_hit_ns: u64,
}
const _: () = assert!(size_of::<BanEntry>() == 32);

/// Per-source token bucket state (value of the rate maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    /// Accumulated credit in ns; a packet costs `XdpConfig::cost_ns`.
    pub credit_ns: u64,
    /// Last refill, `CLOCK_MONOTONIC` ns.
    pub last_ns: u64,
    /// When the last `RateEvent` for this source was emitted; 0 = never.
    pub last_event_ns: u64,
    /// Packets of this source dropped for exceeding the rate (ever, while in the map).
    pub dropped: u64,
}
const _: () = assert!(size_of::<RateBucket>() == 32);

/// Flag in `XdpConfig::flags`: the IPv4 CIDR trie has entries (skip the lookup otherwise).
pub const CFG_HAVE_CIDR_V4: u64 = 1 << 0;
/// Flag: the IPv6 CIDR trie has entries.
pub const CFG_HAVE_CIDR_V6: u64 = 1 << 1;
/// Flag: the IPv4 allowlist has entries.
pub const CFG_HAVE_ALLOW_V4: u64 = 1 << 2;
/// Flag: the IPv6 allowlist has entries.
pub const CFG_HAVE_ALLOW_V6: u64 = 1 << 3;

/// Run-time settings of the XDP program (index 0 of the config array).
///
/// All divisions are done by the daemon so the program only adds and compares.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// `CFG_*` bits.
    pub flags: u64,
    /// Cost of one packet in ns of credit: `1e9 / rate_pps`; 0 = rate limiting off.
    pub cost_ns: u64,
    /// Credit cap in ns: `burst * cost_ns`.
    pub cap_ns: u64,
    /// Minimum ns between two `RateEvent`s of one source.
    pub event_window_ns: u64,
    /// Bumped by the daemon whenever a ban is removed or changed; invalidates every CPU's
    /// `HotBan` cache.
    pub generation: u64,
}
const _: () = assert!(size_of::<XdpConfig>() == 40);

/// Per-CPU cache of the last banned IPv4 source (value of `HOT`): a flood from one source is
/// dropped without a hash lookup per packet; its counters reach the ban, and the
/// `STAT_DROP_BAN_EXACT` statistic, every `HOT_FLUSH` packets (and when another source takes
/// the slot). Readers add the pending counts of valid slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotBan {
    /// The cached source (network-order memory); valid only with `generation` current.
    pub addr: u32,
    /// 1 = the slot holds a ban.
    pub valid: u32,
    /// `XdpConfig::generation` when cached.
    pub generation: u64,
    /// The ban's deadline (`BanEntry::expires_ns`, flag-free: flagged bans are never cached).
    pub expires_ns: u64,
    /// Packets and bytes dropped since the last flush into the ban entry.
    pub pending_packets: u64,
    pub pending_bytes: u64,
}
const _: () = assert!(size_of::<HotBan>() == 40);

/// Packets a CPU drops from its cached source before adding them to the ban's counters.
pub const HOT_FLUSH: u64 = 64;
/// The per-CPU hot-ban cache: `PerCpuArray<HotBan>`, one slot. Pinned, so that drops counted
/// in it survive a restart of the daemon.
pub const MAP_HOT: &str = "HOT";

/// Flag: the dense IPv4 tier has blocks (skip its lookup otherwise).
pub const CFG_HAVE_DENSE_V4: u64 = 1 << 4;

/// Dense IPv4 tier: the /24 blocks that hold many exact bans get a 256-bit map of their
/// banned addresses, looked up by block number instead of hashing each address. A million
/// sources spread over a few thousand /24s then cost the program a cached block per packet
/// instead of two cache misses in a two-million-bucket hash. The exact ban map stays the
/// source of truth: a set bit is a shortcut to a drop, a clear bit falls through to it.
///
/// `HashMap<u32, u32>`: block number (the host-order address shifted right by 8) → slot.
pub const MAP_DENSE_INDEX: &str = "DENSE_INDEX";
/// `Array<DenseBlock>` of `DENSE_SLOTS`, memory-mapped by the daemon (`BPF_F_MMAPABLE`).
pub const MAP_DENSE: &str = "DENSE";
/// `Array<DenseHits>` of `DENSE_SLOTS`, memory-mapped: the drop counters of a block's
/// addresses while it is in the tier.
pub const MAP_DENSE_HITS: &str = "DENSE_HITS";
/// `Array<u64>` of `DENSE_V16_WORDS`, memory-mapped: bit `n` set while /16 number `n` (the
/// host-order address shifted right by 16) has a block in the tier. Sources from any other /16
/// skip the index lookup.
pub const MAP_DENSE_V16: &str = "DENSE_V16";
/// Words of `DENSE_V16`: one bit per /16.
pub const DENSE_V16_WORDS: u32 = 1 << 10;
/// Per-CPU cache of the last block looked up: `PerCpuArray<HotDense>`, one slot. Not pinned.
pub const MAP_HOT_DENSE: &str = "HOT_DENSE";
/// Blocks the dense tier can hold (4096 × 256 = 1,048,576 addresses).
pub const DENSE_SLOTS: u32 = 4096;
/// A /24 joins the tier when it holds this many exact IPv4 bans...
pub const DENSE_MIN: u32 = 16;
/// ...and leaves it when it falls below this many.
pub const DENSE_KEEP: u32 = 8;

/// One /24 block of the dense tier (value of `DENSE`). Written only by the daemon, through
/// its memory mapping, one aligned word at a time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenseBlock {
    /// Block number + 1 while the slot is in use; 0 = free. The program compares it with the
    /// block it looked up, so a slot that was freed (and, at least a second later, reused)
    /// never answers for another block.
    pub tag: u32,
    /// Explicit padding; always 0.
    pub pad: u32,
    /// The earliest deadline among the block's set bits, `CLOCK_MONOTONIC` ns; 0 = none
    /// expires. From then on the program ignores the bits and asks the exact map, which
    /// checks each ban's own deadline, until the daemon has swept the expired ban.
    pub min_expires_ns: u64,
    /// Bit `i` set: `block.i` has a live exact ban that does not overlap the allowlist.
    pub bits: [u64; 4],
}
const _: () = assert!(size_of::<DenseBlock>() == 48);

/// Drop counters of one address of a dense block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenseHit {
    pub packets: u64,
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` ns (coarse clock); 0 = never.
    pub last_hit_ns: u64,
}
const _: () = assert!(size_of::<DenseHit>() == 24);

/// Drop counters of a dense block's 256 addresses (value of `DENSE_HITS`). Added to the
/// exact ban's own counters when read, and folded into them when the block leaves the tier.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseHits {
    pub hits: [DenseHit; 256],
}
const _: () = assert!(size_of::<DenseHits>() == 24 * 256);

impl Default for DenseHits {
    fn default() -> Self {
        Self {
            hits: [DenseHit::default(); 256],
        }
    }
}

/// Per-CPU cache of the dense block last looked up (value of `HOT_DENSE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotDense {
    /// `DenseBlock::tag` of the cached block; 0 = empty.
    pub tag: u32,
    /// Its slot.
    pub slot: u32,
    /// The source (host order) of the last drop through the tier: a second drop in a row from
    /// the same source moves it into the `HotBan` cache, so a one-source flood from a dense
    /// block skips the tier as well.
    pub last: u32,
    /// Explicit padding; always 0.
    pub pad: u32,
    /// `jiffies` when `now_ns` was read.
    pub jiffies: u64,
    /// The coarse monotonic clock read at `jiffies`: that clock only moves at a tick, so while
    /// `jiffies` has not changed the program reuses it instead of calling the helper per packet.
    pub now_ns: u64,
}
const _: () = assert!(size_of::<HotDense>() == 32);

/// Address family tag in `RateEvent::family`.
pub const FAMILY_V4: u32 = 4;
/// Address family tag in `RateEvent::family`.
pub const FAMILY_V6: u32 = 6;

/// Sent on the ring buffer when a source first exceeds its packet rate in a window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEvent {
    /// Source address: IPv4 in the first four bytes, network order.
    pub addr: [u8; 16],
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u32,
    /// Explicit padding; always 0.
    pub pad: u32,
    /// `CLOCK_MONOTONIC` ns of the packet that triggered the event.
    pub ts_ns: u64,
    /// The source's over-rate drops so far.
    pub dropped: u64,
}
const _: () = assert!(size_of::<RateEvent>() == 40);

/// Packets passed to the stack.
pub const STAT_PASSED: u32 = 0;
/// Packets dropped by an exact ban.
pub const STAT_DROP_BAN_EXACT: u32 = 1;
/// Packets dropped by a CIDR ban.
pub const STAT_DROP_BAN_CIDR: u32 = 2;
/// Packets dropped by the per-source rate limit.
pub const STAT_DROP_RATE: u32 = 3;
/// Truncated or malformed frames (passed: the program fails open).
pub const STAT_MALFORMED: u32 = 4;
/// Frames that are not IPv4/IPv6 (passed).
pub const STAT_NON_IP: u32 = 5;
/// Banned or over-rate packets let through because the source is allowlisted.
pub const STAT_ALLOWLISTED: u32 = 6;
/// Rate events lost because the ring buffer was full.
pub const STAT_EVENTS_LOST: u32 = 7;
/// Number of statistic slots.
pub const STAT_COUNT: u32 = 8;
/// Names of the statistic slots, indexed by `STAT_*`.
pub const STAT_NAMES: [&str; STAT_COUNT as usize] = [
    "passed",
    "dropped_ban_exact",
    "dropped_ban_cidr",
    "dropped_rate",
    "malformed",
    "non_ip",
    "allowlisted",
    "events_lost",
];

#[cfg(feature = "user")]
mod pod {
    // Each type is #[repr(C)] and Copy, made only of integers (and arrays of them), with no
    // implicit padding: its size is asserted next to its definition. Any bit pattern is valid.
    // SAFETY: integers only, no padding (see above and the size assertion of BanEntry).
    unsafe impl aya::Pod for super::BanEntry {}
    // SAFETY: integers only, no padding (see above and the size assertion of RateBucket).
    unsafe impl aya::Pod for super::RateBucket {}
    // SAFETY: integers only, no padding (see above and the size assertion of XdpConfig).
    unsafe impl aya::Pod for super::XdpConfig {}
    // SAFETY: integers only, no padding (see above and the size assertion of RateEvent).
    unsafe impl aya::Pod for super::RateEvent {}
    // SAFETY: integers only, no padding (see above and the size assertion of HotBan).
    unsafe impl aya::Pod for super::HotBan {}
    // SAFETY: integers only, no padding (see above and the size assertion of DenseBlock).
    unsafe impl aya::Pod for super::DenseBlock {}
    // SAFETY: integers only, no padding (see above and the size assertion of DenseHits).
    unsafe impl aya::Pod for super::DenseHits {}
    // SAFETY: integers only, no padding (see above and the size assertion of HotDense).
    unsafe impl aya::Pod for super::HotDense {}
}

#[cfg(feature = "user")]
pub mod dense;

pub mod layout;
