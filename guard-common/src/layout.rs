//! The layout of the pinned maps: every map `xdp_guard` pins, with its type, key and value
//! sizes, capacity and flags, and a version string computed from them.
//!
//! A daemon reuses the maps an earlier instance pinned, so a build whose maps differ (a bigger
//! capacity, a new value field) must never read or write them as its own. The daemon stores
//! [`LAYOUT_VERSION`] next to the pins and refuses pins of another version. The table below is
//! built from the same constants and types the programs use, and the daemon's tests check it
//! against the map definitions of the compiled object, so it cannot drift from them.
use core::mem::size_of;

use crate::{
    ALLOW_CAPACITY, BANS_CAPACITY, BanEntry, CIDR_CAPACITY, DENSE_SLOTS, DENSE_V16_WORDS,
    DenseBlock, DenseHits, EVENTS_BYTES, HotBan, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4,
    MAP_BANS_V6, MAP_CIDR_V4, MAP_CIDR_V6, MAP_CONFIG, MAP_DENSE, MAP_DENSE_HITS, MAP_DENSE_INDEX,
    MAP_DENSE_V16, MAP_EVENTS, MAP_HOT, MAP_RATE_V4, MAP_RATE_V6, MAP_STATS, RATE_CAPACITY,
    RateBucket, STAT_COUNT, XdpConfig,
};

/// `BPF_MAP_TYPE_HASH`.
pub const TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const TYPE_LPM_TRIE: u32 = 11;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const TYPE_RINGBUF: u32 = 27;
/// `BPF_F_NO_PREALLOC`.
pub const F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`.
pub const F_MMAPABLE: u32 = 1 << 10;

/// Bumped by hand when the *meaning* of a pinned map's bytes changes without a change of size
/// (a flag bit reused, a field reordered): sizes alone cannot see that.
pub const LAYOUT_REVISION: u32 = 1;

/// One pinned map as the kernel creates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_*`.
    pub flags: u32,
}

const fn m(
    name: &'static str,
    map_type: u32,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
    flags: u32,
) -> MapLayout {
    MapLayout {
        name,
        map_type,
        key_size: key_size as u32,
        value_size: value_size as u32,
        max_entries,
        flags,
    }
}

/// Key size of an LPM trie over `T`: the prefix length (`u32`) and the data.
const fn lpm<T>() -> usize {
    4 + size_of::<T>()
}

/// Every map `xdp_guard` pins by name (`HOT_DENSE` and `TAP_PORTS` are not pinned). LPM tries
/// always carry `BPF_F_NO_PREALLOC` (the kernel requires it; aya-ebpf adds it).
#[rustfmt::skip]
pub const PINNED_MAPS: [MapLayout; 16] = [
    m(MAP_BANS_V4, TYPE_HASH, 4, size_of::<BanEntry>(), BANS_CAPACITY, F_NO_PREALLOC),
    m(MAP_BANS_V6, TYPE_HASH, 16, size_of::<BanEntry>(), BANS_CAPACITY, F_NO_PREALLOC),
    m(MAP_CIDR_V4, TYPE_LPM_TRIE, lpm::<u32>(), size_of::<BanEntry>(), CIDR_CAPACITY, F_NO_PREALLOC),
    m(MAP_CIDR_V6, TYPE_LPM_TRIE, lpm::<[u8; 16]>(), size_of::<BanEntry>(), CIDR_CAPACITY, F_NO_PREALLOC),
    m(MAP_ALLOW_V4, TYPE_LPM_TRIE, lpm::<u32>(), 4, ALLOW_CAPACITY, F_NO_PREALLOC),
    m(MAP_ALLOW_V6, TYPE_LPM_TRIE, lpm::<[u8; 16]>(), 4, ALLOW_CAPACITY, F_NO_PREALLOC),
    m(MAP_RATE_V4, TYPE_LRU_HASH, 4, size_of::<RateBucket>(), RATE_CAPACITY, 0),
    m(MAP_RATE_V6, TYPE_LRU_HASH, 16, size_of::<RateBucket>(), RATE_CAPACITY, 0),
    m(MAP_CONFIG, TYPE_ARRAY, 4, size_of::<XdpConfig>(), 1, 0),
    m(MAP_STATS, TYPE_PERCPU_ARRAY, 4, 8, STAT_COUNT, 0),
    m(MAP_EVENTS, TYPE_RINGBUF, 0, 0, EVENTS_BYTES, 0),
    m(MAP_HOT, TYPE_PERCPU_ARRAY, 4, size_of::<HotBan>(), 1, 0),
    m(MAP_DENSE_INDEX, TYPE_HASH, 4, 4, DENSE_SLOTS, F_NO_PREALLOC),
    m(MAP_DENSE, TYPE_ARRAY, 4, size_of::<DenseBlock>(), DENSE_SLOTS, F_MMAPABLE),
    m(MAP_DENSE_HITS, TYPE_ARRAY, 4, size_of::<DenseHits>(), DENSE_SLOTS, F_MMAPABLE),
    m(MAP_DENSE_V16, TYPE_ARRAY, 4, 8, DENSE_V16_WORDS, F_MMAPABLE),
];

/// FNV-1a, 64 bits, over `bytes`, continuing from `h`.
const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// A hash of [`LAYOUT_REVISION`] and every field of [`PINNED_MAPS`].
pub const LAYOUT_HASH: u64 = {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, &LAYOUT_REVISION.to_le_bytes());
    let mut i = 0;
    while i < PINNED_MAPS.len() {
        let l = &PINNED_MAPS[i];
        h = fnv(h, l.name.as_bytes());
        // A separator, so that no two tables hash their names into the same byte stream.
        h = fnv(h, &[0]);
        h = fnv(h, &l.map_type.to_le_bytes());
        h = fnv(h, &l.key_size.to_le_bytes());
        h = fnv(h, &l.value_size.to_le_bytes());
        h = fnv(h, &l.max_entries.to_le_bytes());
        h = fnv(h, &l.flags.to_le_bytes());
        i += 1;
    }
    h
};

const HEX: &[u8; 16] = b"0123456789abcdef";

const VERSION_BYTES: [u8; 22] = {
    let mut b = [0u8; 22];
    let prefix = b"guard-";
    let mut i = 0;
    while i < prefix.len() {
        b[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < 16 {
        b[6 + j] = HEX[((LAYOUT_HASH >> (60 - 4 * j)) & 0xf) as usize];
        j += 1;
    }
    b
};

/// The layout version written next to the pins: `guard-` and [`LAYOUT_HASH`] in hex.
pub const LAYOUT_VERSION: &str = match core::str::from_utf8(&VERSION_BYTES) {
    Ok(s) => s,
    Err(_) => panic!("the layout version is ASCII"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_hash_in_hex() {
        assert_eq!(LAYOUT_VERSION.len(), 22);
        assert!(LAYOUT_VERSION.starts_with("guard-"));
        let hex = &LAYOUT_VERSION[6..];
        assert_eq!(u64::from_str_radix(hex, 16), Ok(LAYOUT_HASH));
    }

    #[test]
    fn every_pinned_map_is_listed_once() {
        for (i, a) in PINNED_MAPS.iter().enumerate() {
            assert!(
                PINNED_MAPS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        for name in crate::XDP_MAPS {
            assert!(PINNED_MAPS.iter().any(|m| m.name == name), "{name} missing");
        }
    }
}
