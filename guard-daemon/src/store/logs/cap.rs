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
//! 260 KiB. So after each batch the writer flushes the database (sled writes its IO buffers from
//! its own threads, late on a busy machine, and a file's length only shows what is written) and
//! measures its files (every file of its directory), and near the cap
//! ([`Limits::should_rebuild`]) it rebuilds the log ([`LogStore::rebuild`]): the newest records,
//! up to [`Limits::prune_target`], are copied into a fresh database that replaces the old one,
//! whose files are then deleted. Until then both generations are on disk: the old one is held
//! within the cap and the new one within half of it (sled writes about 2.4 times the bytes of the
//! records copied; a rebuild keeps fewer records when the last new generation came out larger),
//! so the files stay within [`Limits::peak_bytes`], 1.5 times the cap, whatever the load, bar one
//! batch growing them much more than the one before (a batch holds at most an eighth of
//! [`Limits::live_cap`] of records, a 32nd of the cap).
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
/// Before the first rebuild, the files of a new generation are reckoned at this many times the
/// bytes of the records it keeps (sled's headers and node rewrites: about 2.4 measured for 4 KiB
/// records).
pub const FRESH_FACTOR: u64 = 3;
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

    /// The most the log's files take, while a rebuild has both generations on disk: the cap and
    /// a half.
    #[must_use]
    pub fn peak_bytes(&self) -> u64 {
        self.max_bytes.saturating_add(self.max_bytes / 2)
    }

    /// Whether the log is rebuilt now, its files at `files` bytes, `margin` the growth allowed
    /// for one more batch, the last rebuild having made a generation of `fresh` bytes (0 before
    /// the first, then reckoned at [`FRESH_FACTOR`] times the records it keeps). A rebuild
    /// writes the new generation before it deletes the old one: the log is rebuilt while, after
    /// one more batch, the old one is still within the cap and both within
    /// [`Limits::peak_bytes`].
    #[must_use]
    pub fn should_rebuild(&self, files: u64, margin: u64, fresh: u64) -> bool {
        let fresh = if fresh == 0 {
            self.prune_target().saturating_mul(FRESH_FACTOR)
        } else {
            fresh
        };
        let after = files.saturating_add(margin);
        after > self.max_bytes || after.saturating_add(fresh) > self.peak_bytes()
    }

    /// The live bytes a rebuild keeps: [`Limits::prune_target`], or fewer when the last rebuild
    /// kept `kept` bytes of records in `fresh` bytes of files, so that the new generation takes
    /// at most half the cap.
    #[must_use]
    pub fn rebuild_keep(&self, kept: u64, fresh: u64) -> u64 {
        let half = self.max_bytes / 2;
        if kept == 0 || fresh <= half {
            return self.prune_target();
        }
        let scaled = u128::from(kept) * u128::from(half) / u128::from(fresh);
        self.prune_target()
            .min(u64::try_from(scaled).unwrap_or(u64::MAX))
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
    /// The log's files at the last check (after the writer's last batch).
    pub files: AtomicU64,
    /// The files of the generation the last rebuild made, before the old one was deleted; 0
    /// before the first.
    pub fresh_files: AtomicU64,
    /// The live bytes the last rebuild kept.
    pub fresh_kept: AtomicU64,
    /// No rebuild is tried before this, after one failed (a full disk would fail every one).
    pub rebuild_after: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What one pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    pub bytes: u64,
}

/// The bytes of the files under `dir`, recursively. A file removed while it is read (sled
/// deletes blobs lazily) counts as nothing; a missing `dir` as 0.
fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0;
    for entry in entries {
        let entry = entry?;
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path())?,
            Ok(m) => total += m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
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

    /// The bytes of the log's files on disk: every file under its directory, every generation
    /// (sled's database file, its snapshots and config, its blobs); for a temporary log, sled's
    /// own measure. Only what sled has written counts: see [`LogStore::enforce_cap`].
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        match &self.dir {
            Some(dir) => dir_bytes(dir).map_err(|source| LogError::Rebuild {
                path: dir.clone(),
                source,
            }),
            None => Ok(self.db().size_on_disk()?),
        }
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

    /// Keeps the log under `limits.max_bytes`: prunes the oldest records when the live records
    /// pass [`Limits::live_cap`], and rebuilds the log when its files would otherwise pass the
    /// cap (see [`Limits::should_rebuild`]).
    ///
    /// sled writes its full IO buffers from its own threads, late on a busy machine, and a file's
    /// length only shows what is written: under load the files were measured 2 to 4 MiB past
    /// what the last check had seen. So the database is flushed first (sled's write of every
    /// buffer), and the files themselves are measured.
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
        self.flush()?;
        let files = self.size_on_disk()?;
        let growth = files.saturating_sub(self.acct.files.swap(files, Ordering::Relaxed));
        // sled's file grows a segment at a time; batches differ: twice the last growth, at
        // least a segment.
        let margin = growth.saturating_mul(2).max(super::SEGMENT_SIZE as u64);
        let fresh = self.acct.fresh_files.load(Ordering::Relaxed);
        if limits.should_rebuild(files, margin, fresh) && !backing_off() {
            let before = self.live_bytes();
            let old = self.size_on_disk().unwrap_or(files);
            let keep = limits.rebuild_keep(
                self.acct.fresh_kept.load(Ordering::Relaxed),
                self.acct.fresh_files.load(Ordering::Relaxed),
            );
            let kept = self.rebuild(keep).inspect_err(|_| {
                *self
                    .acct
                    .rebuild_after
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now() + REBUILD_BACKOFF);
            })?;
            let dropped = before.saturating_sub(self.live_bytes());
            self.acct.rebuilds.fetch_add(1, Ordering::Relaxed);
            let now = self.size_on_disk().unwrap_or(0);
            self.acct.files.store(now, Ordering::Relaxed);
            tracing::info!(
                kept,
                old_files = old,
                new_files = now,
                "request log files near logs.max_bytes: rebuilt with the newest records"
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
        fresh.db.flush()?;
        // Both generations are on disk until the old one is deleted below: what the next rebuild
        // must leave room for under the cap.
        if let Some(dir) = &self.dir {
            let path = dir.join(fresh.generation.to_string());
            let made = dir_bytes(&path).map_err(|source| LogError::Rebuild { path, source })?;
            self.acct.fresh_files.store(made, Ordering::Relaxed);
            self.acct.fresh_kept.store(bytes, Ordering::Relaxed);
        }
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
