//! The request log's bounds: fields cut at a configured length (the cut marked with a trailing
//! [`CUT_MARK`] and the record's `truncated` flag), and the log database capped in bytes, oldest
//! records pruned first. The cap is kept with a running estimate of the bytes the live records
//! take ([`record_cost`]: key, value and sled's per-entry overhead), counted as the writer adds
//! records and as pruning removes them, and recounted by a scan when the log opens; sled's
//! `size_on_disk` (one `stat` of its file and its blob directory) is checked as well, since the
//! file may stay larger than the live records until sled reuses its freed segments.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{LogError, LogRecord, LogStore};

/// What marks the end of a cut field.
pub const CUT_MARK: &str = "…";
/// Header values (user agent, host, user id) are cut at this many bytes.
pub const MAX_HEADER_BYTES: usize = 1024;
/// sled's bytes per entry beyond its key and value (node and log headers), used in the estimate.
pub const ENTRY_OVERHEAD: u64 = 64;
/// When over its cap, the log is pruned to this share of it (in percent): the headroom keeps a
/// busy log from pruning after every batch.
pub const PRUNE_TO_PERCENT: u64 = 75;
/// The cap's share kept for live records: the rest is sled's space amplification.
pub const LIVE_SHARE: u64 = 16;
/// Records removed per sled batch when pruning.
const PRUNE_CHUNK: usize = 1024;

/// The bounds of the request log (from `[logs]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the log database may take; 0 = no cap.
    pub max_bytes: u64,
    /// Longest path kept, in bytes, mark included.
    pub max_path_bytes: usize,
    /// Longest query kept, in bytes, mark included.
    pub max_query_bytes: usize,
    /// Records older than this are pruned.
    pub retention: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_path_bytes: 4096,
            max_query_bytes: 4096,
            retention: Duration::from_hours(720),
        }
    }
}

impl Limits {
    /// The live bytes past which the oldest records are pruned: a share of the cap, since sled's
    /// files take several times the bytes of the records they hold (see [`LIVE_SHARE`]).
    #[must_use]
    pub fn live_cap(&self) -> u64 {
        self.max_bytes / LIVE_SHARE
    }

    /// The live bytes pruning brings an over-cap log back to.
    #[must_use]
    pub fn prune_target(&self) -> u64 {
        self.live_cap() / 100 * PRUNE_TO_PERCENT
    }
}

/// Cuts `s` to at most `max` bytes, mark included, on a character boundary; true if it was cut.
pub fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let keep = guard_core::text::truncate(s, max.saturating_sub(CUT_MARK.len())).len();
    s.truncate(keep);
    s.push_str(CUT_MARK);
    true
}

impl LogRecord {
    /// Cuts the path, the query and the header values to their bounds, and sets `truncated`
    /// when anything was cut; true if something was.
    pub fn cut(&mut self, limits: &Limits) -> bool {
        let mut cut_any = cut(&mut self.path, limits.max_path_bytes);
        for (field, max) in [
            (self.query.as_mut(), limits.max_query_bytes),
            (self.user_agent.as_mut(), MAX_HEADER_BYTES),
            (self.host.as_mut(), MAX_HEADER_BYTES),
            (self.user.as_mut(), MAX_HEADER_BYTES),
        ] {
            if let Some(f) = field {
                cut_any |= cut(f, max);
            }
        }
        self.truncated |= cut_any;
        cut_any
    }
}

/// The estimated bytes one stored entry takes.
#[must_use]
pub fn record_cost(key: usize, value: usize) -> u64 {
    (key + value) as u64 + ENTRY_OVERHEAD
}

/// The log's size accounting, shared by the store's clones.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Estimated bytes of the live records.
    pub live_bytes: AtomicU64,
    /// Records removed to keep the log under its cap (not those past their retention).
    pub pruned_records: AtomicU64,
    /// Records removed because they were older than the retention.
    pub expired_records: AtomicU64,
}

/// What one pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    pub bytes: u64,
}

impl LogStore {
    /// Recounts the live bytes by reading every record (at open); returns them.
    pub fn recount(&self) -> Result<u64, LogError> {
        let mut total = 0;
        for item in &self.tree {
            let (k, v) = item?;
            total += record_cost(k.len(), v.len());
        }
        self.acct.live_bytes.store(total, Ordering::Relaxed);
        Ok(total)
    }

    /// Estimated bytes of the live records.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.acct.live_bytes.load(Ordering::Relaxed)
    }

    /// Records pruned to keep the log under its cap since it opened.
    #[must_use]
    pub fn pruned_records(&self) -> u64 {
        self.acct.pruned_records.load(Ordering::Relaxed)
    }

    /// Records pruned past their retention since the log opened.
    #[must_use]
    pub fn expired_records(&self) -> u64 {
        self.acct.expired_records.load(Ordering::Relaxed)
    }

    /// The database's files as sled measures them (its log file's length and its blobs).
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Removes the oldest records until the live estimate is at most `target` bytes.
    pub fn prune_to(&self, target: u64) -> Result<Pruned, LogError> {
        let mut done = Pruned::default();
        while self.live_bytes() > target {
            let mut batch = sled::Batch::default();
            let (mut n, mut bytes) = (0u64, 0u64);
            let over = self.live_bytes() - target;
            for item in self.tree.iter().take(PRUNE_CHUNK) {
                let (k, v) = item?;
                bytes += record_cost(k.len(), v.len());
                n += 1;
                batch.remove(k);
                if bytes >= over {
                    break;
                }
            }
            if n == 0 {
                // Nothing left: the estimate was high.
                self.acct.live_bytes.store(0, Ordering::Relaxed);
                break;
            }
            self.tree.apply_batch(batch)?;
            self.forget(bytes);
            self.acct.pruned_records.fetch_add(n, Ordering::Relaxed);
            done.records += n;
            done.bytes += bytes;
        }
        Ok(done)
    }

    /// Keeps the log under `limits.max_bytes`: when the live records or the files on disk pass
    /// it, prunes the oldest records down to [`Limits::prune_target`] (and, if the files are
    /// still over the cap, the live records down to the target less that excess).
    pub fn enforce_cap(&self, limits: &Limits) -> Result<Pruned, LogError> {
        if limits.max_bytes == 0 {
            return Ok(Pruned::default());
        }
        let target = limits.prune_target();
        let mut done = Pruned::default();
        if self.live_bytes() > limits.live_cap() {
            done = self.prune_to(target)?;
        }
        Ok(done)
    }

    pub(super) fn add(&self, bytes: u64) {
        self.acct.live_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn forget(&self, bytes: u64) {
        // Saturating: the estimate never wraps below zero.
        let _ = self
            .acct
            .live_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(bytes))
            });
    }
}
