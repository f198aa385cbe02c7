//! The in-memory quota counters: one entry per (partition key, rule), one counter per window,
//! in [`SHARDS`] mutex-guarded hash tables of cache-line slots. [`QuotaTable::check`] checks and charges all the
//! windows of a rule under one shard lock, so it is atomic: an admitted request charges every
//! window, a refused one none, and concurrent requests never overshoot a limit.
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::slots::Slots;
use super::{PartitionKey, Rule, WINDOWS, Window};

/// Shards of the table; a power of two. Each is locked only for one entry's check.
pub const SHARDS: usize = 64;

/// One window's counter: the epoch it counts for and the requests charged in it. A counter
/// whose epoch is not the current window's counts as 0 (the window has reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counter {
    epoch: u32,
    count: u32,
}

/// One (partition key, rule)'s counters, indexed by [`Window::index`]: 48 bytes.
pub(super) type Entry = [Counter; 6];

/// The map key: the partition key with the rule id in bits 104..120 (a user's 120-bit hash
/// keeps 104 bits; addresses use at most the low 64). 16 bytes.
fn table_key(key: PartitionKey, rule: u16) -> u128 {
    (key.to_bits() & !(0xffff << 104)) | (u128::from(rule) << 104)
}

/// A keyed multiply-fold hasher (the seed is secret, so clients cannot aim keys at one bucket).
#[derive(Debug, Clone, Copy)]
pub(super) struct Seeded(u64);

impl Seeded {
    /// The hash of a table key.
    pub(super) fn hash(self, k: u128) -> u64 {
        self.hash_one(k)
    }
}

pub(super) struct Mix(u64);

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xff51_afd7_ed55_8ccd;

fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = fold(self.0 ^ v, K1);
    }

    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        fold(self.0, K2)
    }
}

impl BuildHasher for Seeded {
    type Hasher = Mix;
    fn build_hasher(&self) -> Mix {
        Mix(self.0)
    }
}

/// One window's state after a decision: enough for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    pub window: Window,
    pub limit: u32,
    /// Requests left in the window after this decision.
    pub remaining: u32,
    /// Seconds until the window resets (at least 1); `None` for lifetime.
    pub reset: Option<u64>,
    /// The window's length in seconds (this month's for a month); `None` for lifetime.
    pub length: Option<u64>,
    /// This window refused the request.
    pub exceeded: bool,
}

/// The outcome of a check: admitted or not, and every limited window's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    pub admitted: bool,
    /// The rule's id.
    pub rule: u16,
    len: u8,
    states: [WindowState; 6],
}

impl QuotaDecision {
    /// The rule's limited windows, shortest first.
    #[must_use]
    pub fn windows(&self) -> &[WindowState] {
        &self.states[..usize::from(self.len)]
    }

    /// The windows that refused the request (none if admitted).
    pub fn exceeded(&self) -> impl Iterator<Item = &WindowState> {
        self.windows().iter().filter(|w| w.exceeded)
    }

    /// Seconds until a refused request could be admitted: the latest reset among the exceeded
    /// windows; `None` if admitted or if a lifetime limit is spent (never).
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        if self.admitted {
            return None;
        }
        self.exceeded()
            .map(|w| w.reset)
            .try_fold(0, |acc, r| r.map(|r| acc.max(r)))
    }
}

/// The counters of every (partition key, rule).
#[derive(Debug)]
pub struct QuotaTable {
    shards: Box<[Mutex<Slots>]>,
    hasher: Seeded,
}

impl QuotaTable {
    /// An empty table; `seed` keys its hash (pass a random value).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let hasher = Seeded(seed);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Slots::new(hasher)))
                .collect(),
            hasher,
        }
    }

    fn shard(&self, k: u128) -> MutexGuard<'_, Slots> {
        let h = self.hasher.hash(k);
        self.shards[(h >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks one request of `key` against `rule` at `now_s` (seconds since the epoch, UTC) and,
    /// if every window has room, charges every window. A refused request charges nothing.
    #[must_use]
    pub fn check(&self, key: PartitionKey, rule: &Rule, now_s: u64) -> QuotaDecision {
        let k = table_key(key, rule.id);
        let mut shard = self.shard(k);
        if let Some(entry) = shard.get_mut(k) {
            return evaluate(entry, rule, now_s, true);
        }
        let mut entry = Entry::default();
        let d = evaluate(&mut entry, rule, now_s, true);
        if d.admitted {
            shard.insert(k, entry);
        }
        d
    }

    /// The state of `key`'s windows under `rule`, charging nothing (`admitted` says whether one
    /// more request would be).
    #[must_use]
    pub fn peek(&self, key: PartitionKey, rule: &Rule, now_s: u64) -> QuotaDecision {
        let k = table_key(key, rule.id);
        let mut entry = self.shard(k).get_mut(k).copied().unwrap_or_default();
        let mut d = evaluate(&mut entry, rule, now_s, false);
        for w in &mut d.states[..usize::from(d.len)] {
            w.exceeded = false;
        }
        d
    }

    /// Forgets `key`'s counters under the rule `rule_id`; whether there were any.
    #[must_use = "whether there were counters"]
    pub fn reset(&self, key: PartitionKey, rule_id: u16) -> bool {
        let k = table_key(key, rule_id);
        self.shard(k).remove(k)
    }

    /// `key`'s counters under the rule `rule_id`, as (epoch, count) per window in
    /// [`Window::index`] order (for persisting them); `None` when it has none.
    #[must_use]
    pub fn counters(&self, key: PartitionKey, rule_id: u16) -> Option<[(u32, u32); 6]> {
        let k = table_key(key, rule_id);
        let entry = self.shard(k).get_mut(k).copied()?;
        Some(entry.map(|c| (c.epoch, c.count)))
    }

    /// Sets `key`'s counters under the rule `rule_id` (read back from a store): each window's
    /// count is raised to the stored one when they count for the same epoch, and replaced when
    /// the stored epoch is later.
    pub fn restore(&self, key: PartitionKey, rule_id: u16, counters: [(u32, u32); 6]) {
        let k = table_key(key, rule_id);
        let mut shard = self.shard(k);
        let merge = |entry: &mut Entry| {
            for (c, (epoch, count)) in entry.iter_mut().zip(counters) {
                if epoch > c.epoch {
                    *c = Counter { epoch, count };
                } else if epoch == c.epoch {
                    c.count = c.count.max(count);
                }
            }
        };
        if let Some(entry) = shard.get_mut(k) {
            merge(entry);
        } else {
            let mut entry = Entry::default();
            merge(&mut entry);
            shard.insert(k, entry);
        }
    }

    /// Drops the entries with nothing left to count at `now_s` (every counter's window has
    /// passed and none is a lifetime counter); how many were dropped. Locks one shard at a time.
    pub fn sweep(&self, now_s: u64) -> usize {
        let epochs = WINDOWS.map(|w| w.epoch(now_s));
        let mut dropped = 0;
        for shard in &*self.shards {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            dropped += s.retain(|e| {
                e.iter()
                    .zip(WINDOWS)
                    .zip(epochs)
                    .any(|((c, w), now)| c.count > 0 && (w == Window::Lifetime || c.epoch == now))
            });
        }
        dropped
    }

    /// Entries (partition key × rule) held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the table holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of one entry: its key and counters in one 64-byte slot (the tables are kept at
    /// most 3/4 full, so a table holds 64 to 171 bytes per entry).
    #[must_use]
    pub const fn entry_bytes() -> usize {
        size_of::<super::slots::Slot>()
    }

    /// Bytes allocated for the tables' slots.
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes())
            .sum()
    }
}

/// Checks `entry` against `rule` at `now_s`; charges it if admitted and `charge`.
fn evaluate(entry: &mut Entry, rule: &Rule, now_s: u64, charge: bool) -> QuotaDecision {
    let mut d = QuotaDecision {
        admitted: true,
        rule: rule.id,
        len: 0,
        states: [WindowState::default(); 6],
    };
    let mut used = [0u32; 6];
    for (window, limit) in rule.limits.iter() {
        let i = window.index();
        let epoch = window.epoch(now_s);
        let c = entry[i];
        used[i] = if c.epoch == epoch { c.count } else { 0 };
        let exceeded = used[i] >= limit;
        d.admitted &= !exceeded;
        let bounds = window.bounds(now_s);
        d.states[usize::from(d.len)] = WindowState {
            window,
            limit,
            remaining: limit.saturating_sub(used[i]),
            reset: bounds.map(|(_, end)| end - now_s),
            length: bounds.map(|(start, end)| end - start),
            exceeded,
        };
        d.len += 1;
    }
    if d.admitted && charge {
        for s in &mut d.states[..usize::from(d.len)] {
            let i = s.window.index();
            entry[i] = Counter {
                epoch: s.window.epoch(now_s),
                count: used[i] + 1,
            };
            s.remaining -= 1;
        }
    }
    d
}
