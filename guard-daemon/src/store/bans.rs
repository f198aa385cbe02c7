//! The `bans` tree: writes (one or a batch), reads, lazy iteration in key order, a kept count,
//! and undecodable records skipped instead of failing the caller.
use std::sync::atomic::Ordering;

use tracing::warn;

use super::codec::{self, ban_deadline, decode_ban, encode_ban};
use super::{BanRecord, Origin, Store, StoreError, key_net, net_key};
use crate::net::Net;

/// A stored ban's key in hex, for messages about it.
fn hex(key: &[u8]) -> String {
    use std::fmt::Write as _;
    key.iter()
        .fold(String::with_capacity(key.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Store {
    /// Inserts or replaces a ban; returns the previous record (`None` also when the previous
    /// record was undecodable: it is replaced, and said so in the log).
    pub fn put_ban(&self, ban: &BanRecord) -> Result<Option<BanRecord>, StoreError> {
        let key = net_key(&ban.target);
        self.counts.ban_writes.fetch_add(1, Ordering::Relaxed);
        let value = encode_ban(ban);
        let kind = codec::ban_kind(&key, &value);
        let old = self.bans.insert(&key, value)?;
        self.add_kind(kind, 1);
        match &old {
            None => {
                self.counts.bans.fetch_add(1, Ordering::Relaxed);
            }
            Some(v) => self.count_kind(&key, v, -1),
        }
        Ok(old.and_then(|v| self.decode_or_forget(&key, &v)))
    }

    /// Inserts or replaces many bans, in key order. Returns, for each, the deadline of the
    /// record it replaced, if it replaced one with a deadline. A target given twice is written
    /// as its last record. On an error, the bans before it (in key order) are written.
    pub fn put_bans(&self, bans: &[BanRecord]) -> Result<Vec<Option<u64>>, StoreError> {
        // In key order (stable: a target given twice keeps its lines' order): sled then walks
        // its leaves once, front to back, instead of paging a random leaf in for every ban —
        // with a small page cache, that was most of an import's time. One insert a ban (which
        // returns the old value) is faster than a sled batch, which needs a lookup first.
        let mut order: Vec<usize> = (0..bans.len()).collect();
        order.sort_by_key(|&i| bans[i].target);
        let mut out = vec![None; bans.len()];
        self.counts.ban_writes.fetch_add(1, Ordering::Relaxed);
        for i in order {
            let ban = &bans[i];
            let key = net_key(&ban.target);
            let value = encode_ban(ban);
            let kind = codec::ban_kind(&key, &value);
            let old = self.bans.insert(&key, value)?;
            self.add_kind(kind, 1);
            match old {
                None => {
                    self.counts.bans.fetch_add(1, Ordering::Relaxed);
                }
                Some(v) => {
                    self.count_kind(&key, &v, -1);
                    out[i] = ban_deadline(&v).unwrap_or_else(|e| {
                        self.forget_bad(&key, &e);
                        None
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes a ban; returns it if it existed (an undecodable record is removed too, and
    /// returned with only its target, origin `unknown`).
    pub fn remove_ban(&self, target: &Net) -> Result<Option<BanRecord>, StoreError> {
        let key = net_key(target);
        self.counts.ban_writes.fetch_add(1, Ordering::Relaxed);
        let Some(old) = self.bans.remove(&key)? else {
            return Ok(None);
        };
        self.counts.bans.fetch_sub(1, Ordering::Relaxed);
        self.count_kind(&key, &old, -1);
        Ok(Some(self.decode_or_forget(&key, &old).unwrap_or_else(
            || BanRecord {
                target: *target,
                reason: "(undecodable record)".into(),
                origin: Origin::Unknown,
                created_at: 0,
                expires_at: None,
                evidence: None,
            },
        )))
    }

    /// One ban.
    pub fn ban(&self, target: &Net) -> Result<Option<BanRecord>, StoreError> {
        let key = net_key(target);
        let Some(value) = self.bans.get(&key)? else {
            return Ok(None);
        };
        decode_ban(&key, &value)
            .map(Some)
            .map_err(|source| StoreError::BadBan {
                key: hex(&key),
                source,
            })
    }

    /// How many ban records are stored (undecodable ones included). Kept as bans are written,
    /// so this is O(1) once a full scan (or a first count) has run. (Not `Tree::len`: after an
    /// I/O error sled's iterator can keep yielding the error, and counting would never end; the
    /// first error ends this.)
    pub fn ban_count(&self) -> Result<usize, StoreError> {
        if self.counts.bans_known.load(Ordering::Acquire) {
            return Ok(self.counts.bans.load(Ordering::Relaxed));
        }
        let writes = self.counts.ban_writes.load(Ordering::Acquire);
        let mut n = 0;
        let mut kinds = [0i64; codec::BAN_KINDS];
        for entry in &self.bans {
            let (key, value) = entry?;
            n += 1;
            if let Some(k) = codec::ban_kind(&key, &value) {
                kinds[k] += 1;
            }
        }
        self.learn_count(writes, n, &kinds);
        Ok(n)
    }

    /// Readable bans by kind, indexed as [`codec::ban_kind`] says (see [`codec::BAN_SCOPES`]
    /// and [`codec::BAN_KIND_ORIGINS`]). Kept as bans are written, so this is O(1) once a full
    /// scan has run (the start's rebuild is one); before that, it scans once.
    pub fn ban_kinds(&self) -> Result<[u64; codec::BAN_KINDS], StoreError> {
        if !self.counts.bans_known.load(Ordering::Acquire) {
            self.ban_count()?;
        }
        Ok(std::array::from_fn(|i| {
            u64::try_from(self.counts.kinds[i].load(Ordering::Relaxed)).unwrap_or(0)
        }))
    }

    /// Adds `delta` to the count of the kind of the record `value` at `key`.
    fn count_kind(&self, key: &[u8], value: &[u8], delta: i64) {
        self.add_kind(codec::ban_kind(key, value), delta);
    }

    fn add_kind(&self, kind: Option<usize>, delta: i64) {
        if let Some(k) = kind {
            self.counts.kinds[k].fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Every ban, ordered by family, address, prefix (undecodable records skipped).
    pub fn bans(&self) -> Result<Vec<BanRecord>, StoreError> {
        self.ban_iter().collect()
    }

    /// The bans in key order (family, address, prefix), decoded one at a time as the caller
    /// goes: a caller that stops after ten decodes ten. Undecodable records are skipped (see
    /// [`Store::bad_records`]); a storage error is yielded once and ends the iteration.
    #[must_use]
    pub fn ban_iter(&self) -> BanIter {
        BanIter {
            inner: self.bans.iter(),
            store: self.clone(),
            writes_at_start: self.counts.ban_writes.load(Ordering::Acquire),
            seen: 0,
            kinds: [0; codec::BAN_KINDS],
            whole_tree: true,
            done: false,
            decode: decode_ban,
        }
    }

    /// Every ban's target and stored end (`None`: permanent), as [`Store::ban_iter`] but
    /// decoding only the record's head: a start reads a million of them.
    #[must_use]
    pub fn ban_ends(&self) -> BanIter<(Net, Option<u64>)> {
        BanIter {
            inner: self.bans.iter(),
            store: self.clone(),
            writes_at_start: self.counts.ban_writes.load(Ordering::Acquire),
            seen: 0,
            kinds: [0; codec::BAN_KINDS],
            whole_tree: true,
            done: false,
            decode: |key, value| {
                let target = key_net(key).ok_or(codec::DecodeError::Key)?;
                Ok((target, codec::ban_deadline(value)?))
            },
        }
    }

    /// The bans inside `range` (its own ban included), in key order, lazily as [`Store::ban_iter`].
    #[must_use]
    pub fn bans_within(&self, range: &Net) -> BanIter {
        // From the range's own key to the key of its last address as a host: addresses are
        // stored with their host bits cleared, so every key between is inside the range.
        let start = net_key(range);
        let end = net_key(&Net::host(last_address(range)));
        BanIter {
            inner: self.bans.range(start..=end),
            store: self.clone(),
            writes_at_start: 0,
            seen: 0,
            kinds: [0; codec::BAN_KINDS],
            whole_tree: false,
            done: false,
            decode: decode_ban,
        }
    }

    /// Ban records that could not be decoded (distinct keys met so far; each is logged once
    /// with its key). They are left in the store and never enforced.
    #[must_use]
    pub fn bad_records(&self) -> u64 {
        self.counts.bad.load(Ordering::Relaxed)
    }

    fn learn_count(&self, writes_at_start: u64, n: usize, kinds: &[i64; codec::BAN_KINDS]) {
        // Only if nothing was written meanwhile: otherwise `n` may be off by those writes.
        if self.counts.ban_writes.load(Ordering::Acquire) == writes_at_start {
            self.counts.bans.store(n, Ordering::Relaxed);
            for (slot, k) in self.counts.kinds.iter().zip(kinds) {
                slot.store(*k, Ordering::Relaxed);
            }
            self.counts.bans_known.store(true, Ordering::Release);
        }
    }

    fn decode_or_forget(&self, key: &[u8], value: &[u8]) -> Option<BanRecord> {
        match decode_ban(key, value) {
            Ok(r) => Some(r),
            Err(e) => {
                self.forget_bad(key, &e);
                None
            }
        }
    }

    /// An undecodable record was overwritten or removed: it no longer counts.
    fn forget_bad(&self, key: &[u8], e: &codec::DecodeError) {
        warn!(key = %hex(key), "replacing an undecodable ban record: {e}");
        let mut bad = self
            .counts
            .bad_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bad.remove(key) {
            self.counts.bad.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts and logs (once per key) a record that cannot be decoded.
    fn met_bad(&self, key: &[u8], e: &codec::DecodeError) {
        let mut bad = self
            .counts
            .bad_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bad.insert(key.to_vec()) {
            self.counts.bad.fetch_add(1, Ordering::Relaxed);
            let target = key_net(key).map_or_else(|| "?".to_owned(), |n| n.to_string());
            warn!(key = %hex(key), %target, "skipping an undecodable ban record (it stays stored, not enforced): {e}");
        }
    }
}

/// The last address of a network.
fn last_address(net: &Net) -> std::net::IpAddr {
    match net.addr() {
        std::net::IpAddr::V4(a) => {
            let host_bits = 32 - u32::from(net.prefix());
            let mask = if host_bits == 0 {
                0
            } else {
                u32::MAX >> (32 - host_bits)
            };
            std::net::IpAddr::V4((u32::from(a) | mask).into())
        }
        std::net::IpAddr::V6(a) => {
            let host_bits = 128 - u32::from(net.prefix());
            let mask = if host_bits == 0 {
                0
            } else {
                u128::MAX >> (128 - host_bits)
            };
            std::net::IpAddr::V6((u128::from(a) | mask).into())
        }
    }
}

/// Bans in key order, decoded lazily (see [`Store::ban_iter`]).
pub struct BanIter<T = BanRecord> {
    inner: sled::Iter,
    store: Store,
    writes_at_start: u64,
    /// Records met so far, decodable or not.
    seen: usize,
    /// Readable records met so far, by kind (learnt with the count at the end of a full walk).
    kinds: [i64; codec::BAN_KINDS],
    /// Whether this walks the whole tree (then, at its end, the count is learnt).
    whole_tree: bool,
    done: bool,
    /// How much of each record is decoded.
    decode: fn(&[u8], &[u8]) -> Result<T, codec::DecodeError>,
}

impl<T> Iterator for BanIter<T> {
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.inner.next() {
                None => {
                    self.done = true;
                    if self.whole_tree {
                        self.store
                            .learn_count(self.writes_at_start, self.seen, &self.kinds);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
                Some(Ok((key, value))) => {
                    self.seen += 1;
                    if self.whole_tree
                        && let Some(k) = codec::ban_kind(&key, &value)
                    {
                        self.kinds[k] += 1;
                    }
                    match (self.decode)(&key, &value) {
                        Ok(r) => return Some(Ok(r)),
                        Err(e) => self.store.met_bad(&key, &e),
                    }
                }
            }
        }
        None
    }
}
