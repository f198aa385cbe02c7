//! The request log's bounds: fields cut at a configured length (the cut marked with a trailing
//! [`CUT_MARK`] and the record's `truncated` flag), and the log database capped in bytes, oldest
//! records pruned first.
//!
//! Two measures keep the cap. The live records: a running estimate of the bytes they take
//! ([`record_cost`]: key, value and sled's per-entry overhead), counted as the writer adds records
//! and as pruning removes them and recounted by a scan when the log opens, is held under
//! [`Limits::live_cap`] (a quarter of the cap) by pruning the oldest. And the files: sled (0.34)
//! reclaims the space of removed records lazily, by rewriting segments after the fact, and its
//! file only shrinks when its last segments are free; under a flood of 60 KB paths (cut to 4 KiB)
//! into a 4 MiB log, its files were measured at 7.6 to 28 MiB while the live records stayed under
//! 260 KiB. So after each batch the writer also checks `size_on_disk` (one `stat` of the file and
//! a read of the blob directory), and near the cap ([`Limits::rebuild_at`]) it rebuilds the log ([`LogStore::rebuild`]):
//! the newest records, up to [`Limits::prune_target`], are copied into a fresh database that
//! replaces the old one, whose files are deleted.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{LogError, LogRecord, LogStore, Open};

/// What marks the end of a cut field.
pub const CUT_MARK: &str = "…";
/// The method and header values (user agent, host, user id) are cut at this many bytes.
pub const MAX_HEADER_BYTES: usize = 1024;
/// sled's bytes per entry beyond its key and value (node and log headers), used in the estimate.
pub const ENTRY_OVERHEAD: u64 = 64;
/// When over its cap, the log is pruned to this share of it (in percent): the headroom keeps a
/// busy log from pruning after every batch.
pub const PRUNE_TO_PERCENT: u64 = 75;
/// The cap's share kept for live records (`1/LIVE_SHARE`): the rest is sled's room to write
/// before a rebuild.
pub const LIVE_SHARE: u64 = 4;
/// After a failed rebuild, the next is tried this much later.
const REBUILD_BACKOFF: Duration = Duration::from_secs(30);
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

    /// The size of the files past which the log is rebuilt: the cap less a sixteenth, room for
    /// what sled writes between two checks.
    #[must_use]
    pub fn rebuild_at(&self) -> u64 {
        self.max_bytes - self.max_bytes / 16
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
        cut_any |= cut(&mut self.method, MAX_HEADER_BYTES);
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
    /// Times the database was rebuilt because its files passed the cap.
    pub rebuilds: AtomicU64,
    /// No rebuild is tried before this, after one failed (a full disk would fail every one).
    pub rebuild_after: std::sync::Mutex<Option<std::time::Instant>>,
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
        for item in &self.tree() {
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

    /// Times the log was rebuilt because its files passed the cap.
    #[must_use]
    pub fn rebuilds(&self) -> u64 {
        self.acct.rebuilds.load(Ordering::Relaxed)
    }

    /// The database's files as sled measures them (its log file's length and its blobs).
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db().size_on_disk()?)
    }

    /// Removes the oldest records until the live estimate is at most `target` bytes.
    pub fn prune_to(&self, target: u64) -> Result<Pruned, LogError> {
        let mut done = Pruned::default();
        while self.live_bytes() > target {
            let mut batch = sled::Batch::default();
            let (mut n, mut bytes) = (0u64, 0u64);
            let over = self.live_bytes() - target;
            for item in self.tree().iter().take(PRUNE_CHUNK) {
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
            self.tree().apply_batch(batch)?;
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
        let backing_off = || {
            self.acct
                .rebuild_after
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|t| std::time::Instant::now() < t)
        };
        if self.size_on_disk()? > limits.rebuild_at() && !backing_off() {
            let before = self.live_bytes();
            let kept = self.rebuild(target).inspect_err(|_| {
                *self
                    .acct
                    .rebuild_after
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now() + REBUILD_BACKOFF);
            })?;
            let dropped = before.saturating_sub(self.live_bytes());
            self.acct.rebuilds.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                kept,
                size_on_disk = self.size_on_disk().unwrap_or(0),
                "request log files over logs.max_bytes: rebuilt with the newest records"
            );
            done.bytes += dropped;
        }
        Ok(done)
    }

    /// Replaces the database with a fresh one holding the newest records, up to `keep` bytes,
    /// (the next generation, see `LogStore::dir`) and deletes the old one's files; returns how
    /// many records were kept. The old database stays in use if the new one cannot be made.
    pub fn rebuild(&self, keep: u64) -> Result<u64, LogError> {
        let mut open = self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = Vec::new();
        let mut bytes = 0;
        let mut total = 0u64;
        for item in open.tree.iter().rev() {
            let (k, v) = item?;
            let cost = record_cost(k.len(), v.len());
            total += 1;
            if bytes + cost <= keep && bytes + cost > bytes {
                bytes += cost;
                kept.push((k, v));
            }
        }
        let fresh = Open::new(self.dir.as_deref(), open.generation + 1)?;
        let mut batch = sled::Batch::default();
        for (k, v) in kept.iter().rev() {
            batch.insert(k, v);
        }
        fresh.tree.apply_batch(batch)?;
        let old = std::mem::replace(&mut *open, fresh);
        drop(open);
        if let Some(dir) = &self.dir {
            // Unlinked while a reader may still hold the old handle: its space is freed when
            // the last one is dropped.
            let path = dir.join(old.generation.to_string());
            drop(old);
            std::fs::remove_dir_all(&path).map_err(|source| LogError::Rebuild { path, source })?;
        }
        self.acct.live_bytes.store(bytes, Ordering::Relaxed);
        let n = kept.len() as u64;
        self.acct
            .pruned_records
            .fetch_add(total - n, Ordering::Relaxed);
        Ok(n)
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
