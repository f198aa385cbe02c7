//! Userspace side of the dense IPv4 tier (see [`MAP_DENSE_INDEX`](crate::MAP_DENSE_INDEX)):
//! which /24 blocks are in it, and their bits and deadlines, written through a memory mapping
//! of the `DENSE` array. The drop counters (`DENSE_HITS`, 24 MiB) are read and cleared through
//! the bpf syscall instead: a mapping of an array counts all its pages in the daemon's RSS at
//! once, and the counters are read rarely (a listing, a block leaving the tier).
//!
//! The exact ban map stays the source of truth, so every change keeps one rule: a bit is set
//! only while its exact ban is in the map and does not overlap the allowlist. Callers report
//! each exact IPv4 ban *after* inserting it ([`DenseTier::added`]) and *before* removing it
//! ([`DenseTier::removing`]); [`DenseTier::rebuild`] recomputes the whole tier from a list of
//! bans (at start, after the maps were reconciled, and after bulk loads).
extern crate std;

use std::boxed::Box;
use std::collections::{HashMap as StdHashMap, VecDeque};
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::vec::Vec;

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::unistd::{SysconfVar, sysconf};

use crate::{
    BAN_CHECK_ALLOW, BanEntry, DENSE_KEEP, DENSE_MIN, DENSE_SLOTS, DENSE_V16_WORDS, DenseBlock,
    DenseHit, DenseHits,
};

/// A slot that left the tier is reused for another block only after this long: every
/// program run that could still hold its old tag has long finished.
const COOL: Duration = Duration::from_secs(1);
/// Deadline of an address without a (tier-eligible) ban.
const NONE: u64 = u64::MAX;

/// Why the tier could not be opened or changed.
#[derive(Debug)]
pub enum DenseError {
    /// A map was missing or of the wrong type.
    MapType(&'static str),
    /// A map operation failed.
    Map(&'static str, MapError),
    /// Mapping an array into memory failed.
    Mmap(&'static str, std::io::Error),
}

impl core::fmt::Display for DenseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MapType(name) => {
                write!(f, "dense tier map {name} is missing or not an array/hash")
            }
            Self::Map(op, e) => write!(f, "dense tier: {op}: {e}"),
            Self::Mmap(name, e) => write!(f, "dense tier: cannot map {name} into memory: {e}"),
        }
    }
}

impl std::error::Error for DenseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MapType(_) => None,
            Self::Map(_, e) => Some(e),
            Self::Mmap(_, e) => Some(e),
        }
    }
}

/// A `BPF_F_MMAPABLE` array mapped shared and writable.
struct Mapped<T> {
    ptr: NonNull<T>,
    entries: u32,
    bytes: usize,
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory; every write goes through atomics or happens
// while the program cannot read the slot (its tag is 0).
unsafe impl<T> Send for Mapped<T> {}
// SAFETY: as above; `&self` methods only read.
unsafe impl<T> Sync for Mapped<T> {}

impl<T> Mapped<T> {
    fn new(map: Map, name: &'static str, entries: u32) -> Result<Self, DenseError> {
        let Map::Array(map) = map else {
            return Err(DenseError::MapType(name));
        };
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        let bytes = (entries as usize * size_of::<T>()).div_ceil(page) * page;
        let len = NonZeroUsize::new(bytes).ok_or(DenseError::MapType(name))?;
        // SAFETY: a fresh shared mapping of the map's own pages (the kernel refuses a length
        // beyond the map); no Rust reference aliases it, every access goes through raw pointers
        // (volatile or atomic), and it is unmapped once, in Drop, with the same length.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(|e| DenseError::Mmap(name, e.into()))?;
        let ptr = ptr.cast::<T>();
        Ok(Self {
            ptr,
            entries,
            bytes,
            _map: map,
        })
    }

    /// Pointer to entry `i` (the mapping holds them all).
    fn at(&self, i: u32) -> *mut T {
        assert!(i < self.entries, "dense tier entry {i} out of range");
        // SAFETY: in bounds of the mapping.
        unsafe { self.ptr.as_ptr().add(i as usize) }
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping (same address, same length), unmapped once; no pointer into it
        // outlives `self`. An error leaves nothing to undo.
        let _ = unsafe { munmap(self.ptr.cast(), self.bytes) };
    }
}

/// A block in the tier.
struct Block {
    slot: u32,
    /// Each address's ban deadline (0 = never), `NONE` without an eligible ban.
    deadlines: Box<[u64; 256]>,
}

/// Splits a network-order IPv4 key into its block number and the index in the block.
#[must_use]
pub fn split(addr: u32) -> (u32, usize) {
    let host = u32::from_be_bytes(addr.to_ne_bytes());
    (host >> 8, (host & 0xff) as usize)
}

/// The network-order key of address `idx` of block `number`.
#[must_use]
pub fn join(number: u32, idx: usize) -> u32 {
    u32::from_ne_bytes(((number << 8) | idx as u32).to_be_bytes())
}

/// The earlier of two deadlines, 0 meaning never.
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// Bits and earliest deadline of a block's deadlines.
fn summarize(deadlines: &[u64; 256]) -> ([u64; 4], u64) {
    let mut bits = [0u64; 4];
    let mut min = 0;
    let mut first = true;
    for (i, &d) in deadlines.iter().enumerate() {
        if d == NONE {
            continue;
        }
        bits[i >> 6] |= 1 << (i & 63);
        min = if first { d } else { earliest(min, d) };
        first = false;
    }
    (bits, min)
}

/// Whether an exact ban with these `expires_ns` (flag included) belongs in the tier.
fn eligible(expires: u64) -> bool {
    expires & BAN_CHECK_ALLOW == 0
}

/// The dense tier's maps and the daemon's view of them.
pub struct DenseTier {
    index: HashMap<MapData, u32, u32>,
    blocks: Mapped<DenseBlock>,
    hits: Array<MapData, DenseHits>,
    /// One bit per /16 with a block in the tier.
    v16: Mapped<u64>,
    /// Blocks in the tier per /16 number.
    per_v16: StdHashMap<u32, u32>,
    /// Eligible exact bans per block number, for every block with at least one.
    counts: StdHashMap<u32, u32>,
    /// Blocks in the tier, by number.
    dense: StdHashMap<u32, Block>,
    free: Vec<u32>,
    cooling: VecDeque<(Instant, u32)>,
    /// Blocks that qualified but found no free slot (since start).
    full: u64,
}

impl DenseTier {
    /// Opens the tier on the program's `DENSE_INDEX`, `DENSE`, `DENSE_HITS` and `DENSE_V16` maps, adopting
    /// the blocks an earlier instance left in pinned maps (their deadlines are taken as the
    /// block's earliest one until [`rebuild`](Self::rebuild) sets the real ones).
    pub fn open(index: Map, blocks: Map, hits: Map, v16: Map) -> Result<Self, DenseError> {
        let index: HashMap<MapData, u32, u32> = index
            .try_into()
            .map_err(|_| DenseError::MapType(crate::MAP_DENSE_INDEX))?;
        let blocks = Mapped::<DenseBlock>::new(blocks, crate::MAP_DENSE, DENSE_SLOTS)?;
        let hits: Array<MapData, DenseHits> = hits
            .try_into()
            .map_err(|_| DenseError::MapType(crate::MAP_DENSE_HITS))?;
        let v16 = Mapped::<u64>::new(v16, crate::MAP_DENSE_V16, DENSE_V16_WORDS)?;
        let mut tier = Self {
            index,
            blocks,
            hits,
            v16,
            per_v16: StdHashMap::new(),
            counts: StdHashMap::new(),
            dense: StdHashMap::new(),
            free: Vec::new(),
            cooling: VecDeque::new(),
            full: 0,
        };
        let entries: Vec<(u32, u32)> = tier
            .index
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| DenseError::Map("read the index", e))?;
        let mut used = [false; DENSE_SLOTS as usize];
        for (number, slot) in entries {
            // SAFETY: reads of the mapping; a stale or foreign entry is dropped below.
            let block =
                (slot < DENSE_SLOTS).then(|| unsafe { tier.blocks.at(slot).read_volatile() });
            match block {
                Some(b) if b.tag == number.wrapping_add(1) && !used[slot as usize] => {
                    used[slot as usize] = true;
                    let mut deadlines = Box::new([NONE; 256]);
                    for (i, d) in deadlines.iter_mut().enumerate() {
                        if b.bits[i >> 6] >> (i & 63) & 1 == 1 {
                            *d = b.min_expires_ns;
                        }
                    }
                    tier.counts.insert(
                        number,
                        deadlines.iter().filter(|&&d| d != NONE).count() as u32,
                    );
                    tier.dense.insert(number, Block { slot, deadlines });
                }
                _ => {
                    let _ = tier.index.remove(&number);
                }
            }
        }
        let mut words = [0u64; DENSE_V16_WORDS as usize];
        for &number in tier.dense.keys() {
            let n16 = number >> 8;
            *tier.per_v16.entry(n16).or_insert(0) += 1;
            words[(n16 >> 6) as usize] |= 1 << (n16 & 63);
        }
        for (i, &w) in words.iter().enumerate() {
            tier.v16_word(i as u32).store(w, Ordering::Release);
        }
        for slot in (0..DENSE_SLOTS).rev() {
            if !used[slot as usize] {
                // SAFETY: a slot no index entry leads to; the program cannot be reading it.
                unsafe { tier.blocks.at(slot).write_volatile(DenseBlock::default()) };
                tier.free.push(slot);
            }
        }
        Ok(tier)
    }

    /// Whether any block is in the tier (the program skips it otherwise).
    #[must_use]
    pub fn active(&self) -> bool {
        !self.dense.is_empty()
    }

    /// Blocks in the tier.
    #[must_use]
    pub fn blocks(&self) -> usize {
        self.dense.len()
    }

    /// Times a block qualified while every slot was taken (it stays on the exact path).
    #[must_use]
    pub fn full(&self) -> u64 {
        self.full
    }

    /// Drops counted by the tier for `addr` (network-order key) while its block is in it.
    #[must_use]
    pub fn hits(&self, addr: u32) -> Option<DenseHit> {
        let (number, idx) = split(addr);
        let block = self.dense.get(&number)?;
        Some(self.hits.get(&block.slot, 0).ok()?.hits[idx])
    }

    /// Reports an exact IPv4 ban just inserted or updated in `exact` (`expires` with its
    /// flag; `old`: the entry's previous `expires_ns`, if it existed).
    pub fn added(
        &mut self,
        exact: &mut HashMap<MapData, u32, BanEntry>,
        addr: u32,
        expires: u64,
        old: Option<u64>,
    ) -> Result<(), DenseError> {
        let (number, idx) = split(addr);
        let was = old.is_some_and(eligible);
        let now = eligible(expires);
        let count = self.counts.entry(number).or_insert(0);
        match (was, now) {
            (false, true) => *count += 1,
            (true, false) => *count = count.saturating_sub(1),
            _ => {}
        }
        let count = *count;
        if count == 0 {
            self.counts.remove(&number);
        }
        if let Some(block) = self.dense.get_mut(&number) {
            block.deadlines[idx] = if now { expires } else { NONE };
            let slot = block.slot;
            if !now {
                self.clear_hit(slot, idx);
            }
            self.store(number);
            if count < DENSE_KEEP {
                self.demote(exact, number)?;
            }
        } else if count >= DENSE_MIN && self.slot_available() {
            let mut deadlines = Box::new([NONE; 256]);
            for (i, d) in deadlines.iter_mut().enumerate() {
                if let Ok(e) = exact.get(&join(number, i), 0)
                    && eligible(e.expires_ns)
                {
                    *d = e.expires_ns;
                }
            }
            self.promote(number, deadlines)?;
        }
        Ok(())
    }

    /// Reports an exact IPv4 ban about to be removed from `exact` (`old`: its `expires_ns`,
    /// if it is there). Its bit is cleared before this returns.
    pub fn removing(
        &mut self,
        exact: &mut HashMap<MapData, u32, BanEntry>,
        addr: u32,
        old: Option<u64>,
    ) -> Result<(), DenseError> {
        let (number, idx) = split(addr);
        let mut count = self.counts.get(&number).copied().unwrap_or(0);
        if old.is_some_and(eligible) {
            count = count.saturating_sub(1);
        }
        if count == 0 {
            self.counts.remove(&number);
        } else {
            self.counts.insert(number, count);
        }
        if let Some(block) = self.dense.get_mut(&number) {
            block.deadlines[idx] = NONE;
            let slot = block.slot;
            self.store(number);
            self.clear_hit(slot, idx);
            if count < DENSE_KEEP {
                self.demote(exact, number)?;
            }
        }
        Ok(())
    }

    /// Recomputes the tier from every exact IPv4 ban in `exact`, given as (network-order key,
    /// `expires_ns` with flag): blocks that no longer qualify leave, blocks that do join, and
    /// the blocks that stay get their real deadlines. Counters of staying blocks are kept.
    pub fn rebuild(
        &mut self,
        exact: &mut HashMap<MapData, u32, BanEntry>,
        bans: impl IntoIterator<Item = (u32, u64)> + Clone,
    ) -> Result<(), DenseError> {
        self.counts.clear();
        for (addr, expires) in bans.clone() {
            if eligible(expires) {
                *self.counts.entry(split(addr).0).or_insert(0) += 1;
            }
        }
        let leaving: Vec<u32> = self
            .dense
            .keys()
            .filter(|n| self.counts.get(n).copied().unwrap_or(0) < DENSE_KEEP)
            .copied()
            .collect();
        for number in leaving {
            self.demote(exact, number)?;
        }
        let mut wanted: StdHashMap<u32, Box<[u64; 256]>> = self
            .counts
            .iter()
            .filter(|&(n, &c)| self.dense.contains_key(n) || c >= DENSE_MIN)
            .map(|(&n, _)| (n, Box::new([NONE; 256])))
            .collect();
        for (addr, expires) in bans {
            let (number, idx) = split(addr);
            if let Some(d) = wanted.get_mut(&number)
                && eligible(expires)
            {
                d[idx] = expires;
            }
        }
        let mut numbers: Vec<u32> = wanted.keys().copied().collect();
        numbers.sort_unstable();
        for number in numbers {
            let Some(deadlines) = wanted.remove(&number) else {
                continue;
            };
            if let Some(block) = self.dense.get_mut(&number) {
                let gone: Vec<usize> = (0..256)
                    .filter(|&i| deadlines[i] == NONE && block.deadlines[i] != NONE)
                    .collect();
                block.deadlines = deadlines;
                let slot = block.slot;
                self.store(number);
                for i in gone {
                    self.clear_hit(slot, i);
                }
            } else {
                self.promote(number, deadlines)?;
            }
        }
        Ok(())
    }

    /// Writes a block's bits and earliest deadline so that no reader ever sees a set bit
    /// with a deadline later than that ban's: the earlier of the old and new deadlines
    /// first, then the bits, then the new deadline.
    fn store(&self, number: u32) {
        let Some(block) = self.dense.get(&number) else {
            return;
        };
        let (bits, min) = summarize(&block.deadlines);
        let b = self.blocks.at(block.slot);
        // SAFETY: aligned words of the mapping; the daemon is the only writer.
        unsafe {
            let min_word = AtomicU64::from_ptr(&raw mut (*b).min_expires_ns);
            let old = min_word.load(Ordering::Relaxed);
            min_word.store(earliest(old, min), Ordering::Release);
            for (w, &word) in bits.iter().enumerate() {
                AtomicU64::from_ptr(&raw mut (*b).bits[w]).store(word, Ordering::Release);
            }
            min_word.store(min, Ordering::Release);
        }
    }

    /// Word `i` of the /16 filter.
    fn v16_word(&self, i: u32) -> &AtomicU64 {
        // SAFETY: an aligned word of the mapping, alive as long as `self`.
        unsafe { AtomicU64::from_ptr(self.v16.at(i)) }
    }

    /// Counts a block in (`joined`) or out of its /16, setting or clearing the /16's bit.
    fn track_v16(&mut self, number: u32, joined: bool) {
        let n16 = number >> 8;
        let count = self.per_v16.entry(n16).or_insert(0);
        if joined {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        let bit = 1u64 << (n16 & 63);
        let empty = *count == 0;
        if empty {
            self.per_v16.remove(&n16);
        }
        let word = self.v16_word(n16 >> 6);
        if empty {
            word.fetch_and(!bit, Ordering::Release);
        } else {
            word.fetch_or(bit, Ordering::Release);
        }
    }

    fn clear_hit(&mut self, slot: u32, idx: usize) {
        // A read-modify-write of the slot's counters: a drop the program counts for another
        // address of the block in between is lost, a statistic only.
        if let Ok(mut all) = self.hits.get(&slot, 0) {
            all.hits[idx] = DenseHit::default();
            let _ = self.hits.set(slot, all, 0);
        }
    }

    fn slot_available(&self) -> bool {
        !self.free.is_empty()
            || self
                .cooling
                .front()
                .is_some_and(|(since, _)| since.elapsed() >= COOL)
    }

    fn take_slot(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        match self.cooling.front() {
            Some(&(since, slot)) if since.elapsed() >= COOL => {
                self.cooling.pop_front();
                Some(slot)
            }
            _ => None,
        }
    }

    fn promote(&mut self, number: u32, deadlines: Box<[u64; 256]>) -> Result<(), DenseError> {
        let Some(slot) = self.take_slot() else {
            self.full += 1;
            return Ok(());
        };
        let (bits, min) = summarize(&deadlines);
        let b = self.blocks.at(slot);
        // The slot's tag is 0, so the program ignores it until the tag is stored last.
        let _ = self.hits.set(slot, DenseHits::default(), 0);
        // SAFETY: as above.
        unsafe {
            b.write_volatile(DenseBlock {
                tag: 0,
                pad: 0,
                min_expires_ns: min,
                bits,
            });
            AtomicU32::from_ptr(&raw mut (*b).tag).store(number + 1, Ordering::Release);
        }
        self.track_v16(number, true);
        if let Err(e) = self.index.insert(number, slot, 0) {
            self.track_v16(number, false);
            // SAFETY: as above.
            unsafe { AtomicU32::from_ptr(&raw mut (*b).tag).store(0, Ordering::Release) };
            self.cooling.push_back((Instant::now(), slot));
            return Err(DenseError::Map("insert into the index", e));
        }
        self.dense.insert(number, Block { slot, deadlines });
        Ok(())
    }

    /// Takes a block out of the tier, adding its counters to the exact bans.
    fn demote(
        &mut self,
        exact: &mut HashMap<MapData, u32, BanEntry>,
        number: u32,
    ) -> Result<(), DenseError> {
        let Some(block) = self.dense.remove(&number) else {
            return Ok(());
        };
        let b = self.blocks.at(block.slot);
        // SAFETY: an aligned word of the mapping.
        unsafe { AtomicU32::from_ptr(&raw mut (*b).tag).store(0, Ordering::Release) };
        let _ = self.index.remove(&number);
        self.track_v16(number, false);
        self.cooling.push_back((Instant::now(), block.slot));
        // The program no longer counts into this slot.
        let hits = self
            .hits
            .get(&block.slot, 0)
            .map_err(|e| DenseError::Map("read a block's counters", e))?;
        for (idx, hit) in hits.hits.iter().enumerate() {
            if hit.packets == 0 {
                continue;
            }
            let key = join(number, idx);
            if let Ok(mut e) = exact.get(&key, 0) {
                e.packets += hit.packets;
                e.bytes += hit.bytes;
                e.last_hit_ns = e.last_hit_ns.max(hit.last_hit_ns);
                exact
                    .insert(key, e, 0)
                    .map_err(|e| DenseError::Map("fold counters into an exact ban", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join_round_trip() {
        let key = u32::from_ne_bytes([10, 1, 2, 3]);
        let (number, idx) = split(key);
        assert_eq!(number, (10 << 16) | (1 << 8) | 2);
        assert_eq!(idx, 3);
        assert_eq!(join(number, idx), key);
    }

    #[test]
    fn summary_of_deadlines() {
        let mut d = [NONE; 256];
        assert_eq!(summarize(&d), ([0; 4], 0));
        d[0] = 0;
        d[70] = 500;
        d[255] = 300;
        let (bits, min) = summarize(&d);
        assert_eq!(bits, [1, 1 << 6, 0, 1 << 63]);
        assert_eq!(min, 300);
        d[70] = NONE;
        d[255] = NONE;
        assert_eq!(summarize(&d).1, 0, "only a never-expiring ban left");
        assert_eq!(earliest(0, 7), 7);
        assert_eq!(earliest(9, 7), 7);
        assert_eq!(earliest(0, 0), 0);
    }
}
