//! `xdp_guard`: drops packets from banned sources (exact IPv4/IPv6, CIDR) unless they are
//! allowlisted, and limits each source's packet rate with a token bucket.
//!
//! Order of checks, cheapest first and each skipped when its map is empty (flags in `CONFIG`):
//! exact ban (hash) ▸ CIDR ban (LPM) ▸ per-source token bucket (LRU). The allowlist is only
//! consulted when a packet would be dropped, so the pass path never pays for it.
//!
//! Rare events are logged with aya-log (`guard run --ebpf-log LEVEL`): malformed frames
//! (debug), the first over-rate packet of a source (info), a failed insert or a full event
//! ring (warn). The level is a read-only global the loader sets (`AYA_LOG_LEVEL`, off unless
//! asked for): the verifier knows its value and removes every disabled call, so logging off
//! costs nothing, and no log call sits on the ban-drop path.
// The programs only run in the kernel (`--target bpfel-unknown-none`, built by `cargo xtask
// build`). On the host the crate still compiles as an ordinary binary with an empty `main`, so
// `cargo check --workspace` and `cargo clippy --workspace` cover it with stable Rust alone.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![expect(
    clippy::inline_always,
    reason = "BPF programs are verified as one function: every helper is inlined on purpose"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand the context over by value"
)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_map_lookup_elem},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::{debug, info, warn};
use guard_common::{
    ALLOW_CAPACITY, BAN_CHECK_ALLOW, BANS_CAPACITY, BanEntry, CFG_HAVE_ALLOW_V4, CFG_HAVE_ALLOW_V6,
    CFG_HAVE_CIDR_V4, CFG_HAVE_CIDR_V6, CFG_HAVE_DENSE_V4, CIDR_CAPACITY, DENSE_SLOTS,
    DENSE_V16_WORDS, DenseBlock, DenseHits, EVENTS_BYTES, FAMILY_V4, FAMILY_V6, HOT_FLUSH, HotBan,
    HotDense, RATE_CAPACITY, RateBucket, RateEvent, STAT_ALLOWLISTED, STAT_COUNT,
    STAT_DROP_BAN_CIDR, STAT_DROP_BAN_EXACT, STAT_DROP_RATE, STAT_EVENTS_LOST, STAT_MALFORMED,
    STAT_NON_IP, STAT_PASSED, XdpConfig,
};
use guard_ebpf::net::{ETH_P_IP, ETH_P_IPV6, ipv4_source, ipv6_source, l3};

mod tap;

// Every map is pinned by name so that a restarted daemon reuses them: bans stay enforced
// while it is down. Ban maps are plain hashes (an LRU would let a flood evict bans) and
// allocate on insert, so an empty map costs no memory.
#[map]
static BANS_V4: HashMap<u32, BanEntry> = HashMap::pinned(BANS_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static BANS_V6: HashMap<[u8; 16], BanEntry> = HashMap::pinned(BANS_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
static CIDR_V4: LpmTrie<u32, BanEntry> = LpmTrie::pinned(CIDR_CAPACITY, 0);
#[map]
static CIDR_V6: LpmTrie<[u8; 16], BanEntry> = LpmTrie::pinned(CIDR_CAPACITY, 0);
#[map]
static ALLOW_V4: LpmTrie<u32, u32> = LpmTrie::pinned(ALLOW_CAPACITY, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(ALLOW_CAPACITY, 0);
#[map]
static RATE_V4: LruHashMap<u32, RateBucket> = LruHashMap::pinned(RATE_CAPACITY, 0);
#[map]
static RATE_V6: LruHashMap<[u8; 16], RateBucket> = LruHashMap::pinned(RATE_CAPACITY, 0);
#[map]
static CONFIG: Array<XdpConfig> = Array::pinned(1, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);
#[map]
static HOT: PerCpuArray<HotBan> = PerCpuArray::pinned(1, 0);
// The dense IPv4 tier (see `guard_common::MAP_DENSE_INDEX`).
#[map]
static DENSE_INDEX: HashMap<u32, u32> = HashMap::pinned(DENSE_SLOTS, BPF_F_NO_PREALLOC);
#[map]
static DENSE: Array<DenseBlock> = Array::pinned(DENSE_SLOTS, BPF_F_MMAPABLE);
#[map]
static DENSE_HITS: Array<DenseHits> = Array::pinned(DENSE_SLOTS, BPF_F_MMAPABLE);
#[map]
static DENSE_V16: Array<u64> = Array::pinned(DENSE_V16_WORDS, BPF_F_MMAPABLE);
#[map]
static HOT_DENSE: PerCpuArray<HotDense> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn xdp_guard(ctx: XdpContext) -> u32 {
    // Any internal failure (a missing map slot, a verifier-visible impossibility) passes the
    // packet: guard must never black-hole traffic because of its own fault.
    try_guard(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn count(stat: u32) {
    if let Some(slot) = STATS.get_ptr_mut(stat) {
        // SAFETY: a non-null pointer to this CPU's slot of a per-CPU array, valid for the run;
        // the program runs with migration off, so nothing else on this CPU touches it meanwhile.
        unsafe { *slot += 1 };
    }
}

/// `bpf_map_lookup_elem` on an LPM trie, as a raw pointer: aya-ebpf's `LpmTrie::get` only lends
/// `&V`, and the CIDR ban counters are written.
#[inline(always)]
fn lpm_get_ptr_mut<K, V>(map: &LpmTrie<K, V>, key: &Key<K>) -> Option<*mut V> {
    // SAFETY: `map` is a map definition (an `UnsafeCell` in aya-ebpf, so handing the helper a
    // mutable pointer to it is allowed) that the loader relocates to the map; `key` is a live
    // value of the map's key type. The helper returns null or a pointer to the value, valid for
    // this program run.
    let value = unsafe {
        bpf_map_lookup_elem(
            core::ptr::from_ref(map).cast_mut().cast(),
            core::ptr::from_ref(key).cast(),
        )
    };
    (!value.is_null()).then_some(value.cast())
}

#[inline(always)]
#[expect(
    clippy::unnecessary_wraps,
    reason = "ends the `Option` chains of `try_guard`: `return verdict(..)`"
)]
fn verdict(stat: u32, action: u32) -> Option<u32> {
    count(stat);
    Some(action)
}

/// Adds a dropped packet to a ban's counters. Plain adds: core has no atomic read-modify-write
/// for the BPF target, so two CPUs hitting the same ban at the same instant may lose a count —
/// the counters are statistics, the drop itself is exact.
#[inline(always)]
fn charge(ban: *mut BanEntry, len: u64, now: u64) {
    // SAFETY: `ban` came from a map lookup in this run, so it points to a live entry (the kernel
    // frees deleted entries only after an RCU grace period); no reference to it exists, and a
    // racing CPU can only lose a count (see above).
    unsafe {
        (*ban).packets += 1;
        (*ban).bytes += len;
        (*ban).last_hit_ns = now;
    }
}

#[inline(always)]
fn live(expires: u64, now: u64) -> bool {
    let expires = expires & !BAN_CHECK_ALLOW;
    expires == 0 || expires > now
}

/// A frame too short for its headers, or with a bad IP version/IHL: counted, logged, passed
/// (the kernel's own parsing drops it if it is really broken).
#[inline(always)]
fn malformed(ctx: &XdpContext) -> Option<u32> {
    debug!(
        ctx,
        "malformed frame: {} bytes",
        (ctx.data_end() - ctx.data()) as u64
    );
    verdict(STAT_MALFORMED, xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_guard(ctx: &XdpContext) -> Option<u32> {
    let Some((proto, l3)) = l3(ctx) else {
        return malformed(ctx);
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    if proto == ETH_P_IP {
        let Some(src) = ipv4_source(ctx, l3) else {
            return malformed(ctx);
        };
        let cfg = CONFIG.get(0)?;
        if let Some(action) = hot_v4(cfg, src, len) {
            return Some(action);
        }
        if cfg.flags & CFG_HAVE_DENSE_V4 != 0
            && let Some(action) = dense_v4(cfg, src, len)
        {
            return Some(action);
        }
        guard_v4(ctx, cfg, src, len)
    } else if proto == ETH_P_IPV6 {
        let Some(src) = ipv6_source(ctx, l3) else {
            return malformed(ctx);
        };
        guard_v6(ctx, CONFIG.get(0)?, src, len)
    } else {
        verdict(STAT_NON_IP, xdp_action::XDP_PASS)
    }
}

/// The per-CPU hot-ban cache: drops a packet from the CPU's cached banned source without a
/// hash lookup. `None`: not cached (or stale) — take the full path.
#[inline(always)]
fn hot_v4(cfg: &XdpConfig, addr: u32, len: u64) -> Option<u32> {
    let hot = HOT.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, valid for the run; the program runs with
    // migration off, and nothing called while `h` lives (`clock`, `flush_hot`) looks `HOT` up
    // again, so `h` is the only reference to it.
    let h = unsafe { &mut *hot };
    if h.valid == 0 || h.addr != addr {
        return None;
    }
    if h.generation != cfg.generation || (h.expires_ns != 0 && clock() >= h.expires_ns) {
        // Stale: the counts so far still belong to the ban, if it is there.
        flush_hot(h, clock());
        h.valid = 0;
        return None;
    }
    // Counted in the global statistics at the flush too: one per-CPU update per packet less.
    h.pending_packets += 1;
    h.pending_bytes += len;
    if h.pending_packets >= HOT_FLUSH {
        flush_hot(h, clock());
    }
    Some(xdp_action::XDP_DROP)
}

/// The dense tier: drops a source whose /24 block is in the tier with the source's bit set
/// (and no deadline of the block passed). `None`: not decided here — take the exact path.
#[inline(always)]
fn dense_v4(cfg: &XdpConfig, addr: u32, len: u64) -> Option<u32> {
    let host = u32::from_be(addr);
    let number = host >> 8;
    let tag = number + 1;
    let idx = (host & 0xff) as usize;
    let cache = HOT_DENSE.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU array, valid for the run; the program runs with
    // migration off, and nothing called while `cache` lives looks `HOT_DENSE` up again (the
    // clock is read through `cache` itself, and `cache_v4` is handed the time), so `cache` is
    // the only reference to it.
    let cache = unsafe { &mut *cache };
    let slot = if cache.tag == tag {
        cache.slot
    } else {
        // Most sources come from a /16 without any dense block: one cached bit says so.
        let block16 = host >> 16;
        let word = DENSE_V16.get_ptr(block16 >> 6)?;
        // SAFETY: a pointer to an element of the array, valid for the run; the daemon writes
        // the array through a memory mapping, hence a volatile read and no reference.
        let word = unsafe { word.read_volatile() };
        if (word >> (block16 & 63)) & 1 == 0 {
            return None;
        }
        let slot = DENSE_INDEX.get_ptr(number)?;
        // SAFETY: a pointer to a live hash value (freed only after an RCU grace period), read
        // once; the daemon replaces values whole through the map syscalls.
        let slot = unsafe { slot.read() };
        cache.tag = tag;
        cache.slot = slot;
        slot
    };
    let block = DENSE.get_ptr(slot)?;
    // The daemon writes the block while this runs; a slot is only reused for another block
    // a second after it was freed, so a matching tag means the bits are this block's.
    // SAFETY: a pointer to an element of the array, valid for the run; the daemon writes it
    // through a memory mapping, hence volatile reads of single fields and no reference.
    if unsafe { (&raw const (*block).tag).read_volatile() } != tag {
        cache.tag = 0;
        return None;
    }
    // SAFETY: as above; `idx >> 6` < 4, the length of `bits`.
    let word = unsafe { (&raw const (*block).bits[idx >> 6]).read_volatile() };
    if (word >> (idx & 63)) & 1 == 0 {
        return None;
    }
    let now = coarse_now(cache);
    // SAFETY: as above.
    let min = unsafe { (&raw const (*block).min_expires_ns).read_volatile() };
    if min != 0 && now >= min {
        return None;
    }
    let hits = DENSE_HITS.get_ptr_mut(slot)?;
    // SAFETY: a pointer to an element of the array, valid for the run (`idx` < 256, the length
    // of `hits`); the daemon reads it through a memory mapping and other CPUs may count the
    // same address, so it is written through the pointer, never a reference (a racing CPU can
    // only lose a count).
    unsafe {
        let hit = &raw mut (*hits).hits[idx];
        (*hit).packets += 1;
        (*hit).bytes += len;
        (*hit).last_hit_ns = now;
    }
    if cache.last == host {
        // The block's earliest deadline bounds this ban's; the cache honours it.
        cache_v4(cfg, addr, min, now);
    }
    cache.last = host;
    verdict(STAT_DROP_BAN_EXACT, xdp_action::XDP_DROP)
}

/// The coarse monotonic clock, read through the CPU's cache: the clock only moves at a tick, and
/// `bpf_jiffies64` (a plain load once the verifier inlines it) says whether one has passed. The
/// value can lag by the moment between the tick's `jiffies` and clock updates, never by more
/// than a tick — the coarse clock's own resolution.
#[inline(always)]
fn coarse_now(hot: &mut HotDense) -> u64 {
    // SAFETY: a helper without arguments, callable from any program type.
    let jiffies = unsafe { bpf_jiffies64() };
    if jiffies != hot.jiffies || hot.now_ns == 0 {
        hot.jiffies = jiffies;
        // SAFETY: as above.
        hot.now_ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
    hot.now_ns
}

/// [`coarse_now`] through this CPU's `HOT_DENSE` entry (the helper itself if it is missing).
/// Never called while a reference to that entry lives (`dense_v4` holds one and reads the clock
/// through it).
#[inline(always)]
fn clock() -> u64 {
    match HOT_DENSE.get_ptr_mut(0) {
        // SAFETY: this CPU's entry of a per-CPU array, valid for the run; the program runs with
        // migration off and no caller holds a reference to the entry, so this one is unique.
        Some(hot) => coarse_now(unsafe { &mut *hot }),
        // SAFETY: a helper without arguments, callable from any program type.
        None => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

/// Adds a CPU's pending hot-ban counts to the ban entry (if it still exists); `now` is the
/// caller's coarse clock (this reads no clock, so a caller may hold the `HOT_DENSE` entry).
#[inline(always)]
fn flush_hot(h: &mut HotBan, now: u64) {
    if h.pending_packets == 0 {
        return;
    }
    if let Some(ban) = BANS_V4.get_ptr_mut(h.addr) {
        // SAFETY: as in `charge`: a live entry from a lookup in this run, no reference to it.
        unsafe {
            (*ban).packets += h.pending_packets;
            (*ban).bytes += h.pending_bytes;
            (*ban).last_hit_ns = now;
        }
    }
    if let Some(slot) = STATS.get_ptr_mut(STAT_DROP_BAN_EXACT) {
        // SAFETY: as in `count`: this CPU's slot of a per-CPU array.
        unsafe { *slot += h.pending_packets };
    }
    h.pending_packets = 0;
    h.pending_bytes = 0;
}

/// Remembers a just-dropped exact IPv4 ban in this CPU's cache (not flagged ones: their
/// verdict depends on the allowlist). `now`: the caller's coarse clock.
#[inline(always)]
fn cache_v4(cfg: &XdpConfig, addr: u32, expires: u64, now: u64) {
    if expires & BAN_CHECK_ALLOW != 0 {
        return;
    }
    if let Some(hot) = HOT.get_ptr_mut(0) {
        // SAFETY: this CPU's entry of a per-CPU array, valid for the run; the program runs with
        // migration off, and no caller holds a reference to `HOT` (`hot_v4` has returned), so
        // `h` is the only one.
        let h = unsafe { &mut *hot };
        if h.valid != 0 {
            flush_hot(h, now);
        }
        *h = HotBan {
            addr,
            valid: 1,
            generation: cfg.generation,
            expires_ns: expires,
            pending_packets: 0,
            pending_bytes: 0,
        };
    }
}

#[inline(always)]
fn cache_v6(_cfg: &XdpConfig, _addr: [u8; 16], _expires: u64, _now: u64) {}

/// Expands to the per-family decision; the two families differ only in key type and maps.
macro_rules! guard_family {
    ($name:ident, $key:ty, $bans:ident, $cidr:ident, $allow:ident, $rate:ident,
     $have_cidr:ident, $have_allow:ident, $family:ident, $to_bytes:expr, $bits:literal,
     $cache:ident, $to_log:expr) => {
        #[inline(always)]
        fn $name(ctx: &XdpContext, cfg: &XdpConfig, addr: $key, len: u64) -> Option<u32> {
            let allowed =
                || cfg.flags & $have_allow != 0 && $allow.get(Key::new($bits, addr)).is_some();
            if let Some(ban) = $bans.get_ptr_mut(addr) {
                let now = clock();
                // SAFETY: a live entry from this lookup (see `charge`); one field read.
                let expires = unsafe { (*ban).expires_ns };
                if live(expires, now) {
                    // Only bans that overlap the allowlist carry the flag (set by the daemon).
                    if expires & BAN_CHECK_ALLOW != 0 && allowed() {
                        return verdict(STAT_ALLOWLISTED, xdp_action::XDP_PASS);
                    }
                    charge(ban, len, now);
                    $cache(cfg, addr, expires, now);
                    return verdict(STAT_DROP_BAN_EXACT, xdp_action::XDP_DROP);
                }
            }
            if cfg.flags & $have_cidr != 0 {
                if let Some(ban) = lpm_get_ptr_mut(&$cidr, &Key::new($bits, addr)) {
                    let now = clock();
                    // SAFETY: a live entry from this lookup (see `charge`); one field read.
                    let expires = unsafe { (*ban).expires_ns };
                    if live(expires, now) {
                        if expires & BAN_CHECK_ALLOW != 0 && allowed() {
                            return verdict(STAT_ALLOWLISTED, xdp_action::XDP_PASS);
                        }
                        charge(ban, len, now);
                        return verdict(STAT_DROP_BAN_CIDR, xdp_action::XDP_DROP);
                    }
                }
            }
            if cfg.cost_ns != 0 {
                // SAFETY: a helper without arguments, callable from any program type.
                let now = unsafe { bpf_ktime_get_ns() };
                if let Some(bucket) = $rate.get_ptr_mut(addr) {
                    // SAFETY: a live LRU entry from this lookup, valid for the run (freed only
                    // after an RCU grace period), with no other reference in this program. Two
                    // CPUs may update one source's bucket at once; the bucket then lets a packet
                    // more or less through, which a rate limit tolerates (core has no atomic
                    // read-modify-write for the BPF target).
                    let b = unsafe { &mut *bucket };
                    let mut credit = b.credit_ns + now.saturating_sub(b.last_ns);
                    if credit > cfg.cap_ns {
                        credit = cfg.cap_ns;
                    }
                    b.last_ns = now;
                    if credit >= cfg.cost_ns {
                        b.credit_ns = credit - cfg.cost_ns;
                    } else {
                        b.credit_ns = credit;
                        if allowed() {
                            return verdict(STAT_ALLOWLISTED, xdp_action::XDP_PASS);
                        }
                        b.dropped += 1;
                        if b.dropped == 1 {
                            info!(ctx, "rate limit: first drop from {:i}", $to_log(addr));
                        }
                        if now.saturating_sub(b.last_event_ns) >= cfg.event_window_ns
                            || b.last_event_ns == 0
                        {
                            b.last_event_ns = now;
                            let event = RateEvent {
                                addr: $to_bytes(addr),
                                family: $family,
                                pad: 0,
                                ts_ns: now,
                                dropped: b.dropped,
                            };
                            if EVENTS.output::<RateEvent>(&event, 0).is_err() {
                                count(STAT_EVENTS_LOST);
                                warn!(
                                    ctx,
                                    "rate event ring full: event for {:i} lost",
                                    $to_log(addr)
                                );
                            }
                        }
                        return verdict(STAT_DROP_RATE, xdp_action::XDP_DROP);
                    }
                } else {
                    // A new source starts with a full bucket, minus this packet.
                    let fresh = RateBucket {
                        credit_ns: cfg.cap_ns.saturating_sub(cfg.cost_ns),
                        last_ns: now,
                        last_event_ns: 0,
                        dropped: 0,
                    };
                    // Failure to insert (map busy) only means this packet is not counted.
                    if let Err(e) = $rate.insert(addr, fresh, 0) {
                        warn!(ctx, "rate map insert for {:i} failed: {}", $to_log(addr), e);
                    }
                }
            }
            verdict(STAT_PASSED, xdp_action::XDP_PASS)
        }
    };
}

guard_family!(
    guard_v4,
    u32,
    BANS_V4,
    CIDR_V4,
    ALLOW_V4,
    RATE_V4,
    CFG_HAVE_CIDR_V4,
    CFG_HAVE_ALLOW_V4,
    FAMILY_V4,
    v4_bytes,
    32,
    cache_v4,
    u32::to_ne_bytes
);
guard_family!(
    guard_v6,
    [u8; 16],
    BANS_V6,
    CIDR_V6,
    ALLOW_V6,
    RATE_V6,
    CFG_HAVE_CIDR_V6,
    CFG_HAVE_ALLOW_V6,
    FAMILY_V6,
    v6_bytes,
    128,
    cache_v6,
    v6_bytes
);

#[inline(always)]
fn v4_bytes(addr: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&addr.to_ne_bytes());
    out
}

#[inline(always)]
fn v6_bytes(addr: [u8; 16]) -> [u8; 16] {
    addr
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("guard's eBPF programs run in the kernel: build them with `cargo xtask build`");
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
