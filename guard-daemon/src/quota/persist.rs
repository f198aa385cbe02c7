//! The day, month and lifetime counters kept in the state database (tree [`TREE_QUOTA`]), so
//! they survive a restart and a `kill -9`; second, minute and hour counters live in memory only.
//!
//! **Off the request path, in batches.** A request that charges a rule with a day, month or
//! lifetime limit only marks its (partition key, rule) dirty in memory. Every
//! [`PERSIST_EVERY`] a thread of its own writes the marked entries' current counters in one
//! sled batch and flushes the tree; at a clean stop the last ones are written too. **What a
//! crash can lose:** the charges of the last [`PERSIST_EVERY`] plus one write (a client may
//! then get that many more requests than its day, month or lifetime limit after the restart).
//! At most [`MAX_DIRTY`] entries wait between two writes; marks beyond it are dropped and
//! counted (`quotas.persist_dropped`: those charges would be lost by a crash before the
//! entry is charged again).
//!
//! **Stable rule keys.** The table's rule ids are positions in the configuration, which an
//! edit shifts; a stored record is keyed by the partition key (16 bytes) and a rule key of 8
//! bytes: the first 8 bytes of SHA-256 over `plan name NUL rule index NUL path NUL method`.
//! A rule whose plan, position, path or method changes starts from zero (its old records
//! stay, unused); changing only its limits keeps its counts.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use guard_core::quota::{PartitionKey, PlanSet, QuotaTable, Window};

use crate::config::QuotasConfig;

/// The tree of the quota counters in the state database.
pub const TREE_QUOTA: &str = "quota";
/// How often marked counters are written.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Entries waiting to be written, at most.
pub const MAX_DIRTY: usize = 1 << 20;
/// The windows kept in the store, in record order.
const PERSISTED: [Window; 3] = [Window::Day, Window::Month, Window::Lifetime];

/// The stable key of rule `index` of plan `plan` (see the module doc).
#[must_use]
pub fn rule_key(plan: &str, index: usize, path: &str, method: Option<&str>) -> [u8; 8] {
    let text = format!("{plan}\0{index}\0{path}\0{}", method.unwrap_or(""));
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest.as_ref()[..8]);
    out
}

/// Counters of the persistence.
#[derive(Debug, Default, serde::Serialize)]
pub struct PersistStats {
    /// Records read back at start.
    pub loaded: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Writes that failed (the counters stay in memory and are written again when charged).
    pub errors: AtomicU64,
    /// Marks dropped because [`MAX_DIRTY`] entries were waiting.
    pub dropped: AtomicU64,
}

/// The store of a [`super::QuotaCheck`]'s day, month and lifetime counters.
pub struct Persist {
    tree: sled::Tree,
    /// Table rule id → stable key, for the rules with a persisted window.
    keys: HashMap<u16, [u8; 8]>,
    dirty: Mutex<HashSet<(u128, u16)>>,
    /// When a write failure was last logged (seconds since the epoch).
    warned_s: AtomicU64,
    /// The last write failed (cleared by the next one that succeeds).
    failing: AtomicBool,
    pub stats: PersistStats,
}

impl Persist {
    /// For the plans of `cfg` (`plans` built from it).
    #[must_use]
    pub fn new(tree: sled::Tree, cfg: &QuotasConfig, plans: &PlanSet) -> Self {
        let mut keys = HashMap::new();
        for plan in plans.plans() {
            let Some(pc) = cfg.plans.get(&plan.name) else {
                continue;
            };
            for (i, (rule, rc)) in plan.rules.iter().zip(&pc.rules).enumerate() {
                if PERSISTED.iter().any(|w| rule.limits.get(*w).is_some()) {
                    keys.insert(
                        rule.id,
                        rule_key(&plan.name, i, &rc.path, rule.method.as_deref()),
                    );
                }
            }
        }
        Self {
            tree,
            keys,
            dirty: Mutex::new(HashSet::new()),
            warned_s: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            stats: PersistStats::default(),
        }
    }

    /// Reads the stored counters of the current rules into `table`; how many were restored.
    ///
    /// # Errors
    /// The tree cannot be read.
    pub fn load(&self, table: &QuotaTable) -> Result<usize, sled::Error> {
        let by_key: HashMap<[u8; 8], u16> = self.keys.iter().map(|(id, k)| (*k, *id)).collect();
        let mut n = 0;
        for item in &self.tree {
            let (k, v) = item?;
            let (Ok(key), Ok(rule), Ok(v)) = (
                <[u8; 16]>::try_from(&k[..16.min(k.len())]),
                <[u8; 8]>::try_from(&k[16.min(k.len())..]),
                <[u8; 24]>::try_from(&v[..]),
            ) else {
                continue;
            };
            let Some(&rule_id) = by_key.get(&rule) else {
                continue;
            };
            let mut counters = [(0u32, 0u32); 6];
            for (j, w) in PERSISTED.iter().enumerate() {
                let at = |o: usize| u32::from_be_bytes(v[o..o + 4].try_into().unwrap_or([0; 4]));
                counters[w.index()] = (at(j * 8), at(j * 8 + 4));
            }
            table.restore(
                PartitionKey::from_bits(u128::from_be_bytes(key)),
                rule_id,
                counters,
            );
            n += 1;
        }
        self.stats.loaded.store(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Whether the last write failed (and none has succeeded since): the store is failing.
    #[must_use]
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Whether the rule `rule_id` has a window kept in the store.
    #[must_use]
    pub fn persists(&self, rule_id: u16) -> bool {
        self.keys.contains_key(&rule_id)
    }

    /// Marks `key`'s counters under `rule_id` to be written (nothing for a rule without a
    /// persisted window).
    pub fn mark(&self, key: PartitionKey, rule_id: u16) {
        if !self.keys.contains_key(&rule_id) {
            return;
        }
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        if dirty.len() >= MAX_DIRTY {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        dirty.insert((key.to_bits(), rule_id));
    }

    /// Drops `key`'s stored counters under `rule_id` (`guard quota reset`, after the table's);
    /// whether there was a record. A failed removal is logged: the record would come back at
    /// the next start.
    pub fn forget(&self, key: PartitionKey, rule_id: u16) -> bool {
        let Some(rule) = self.keys.get(&rule_id) else {
            return false;
        };
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(key.to_bits(), rule_id));
        let mut k = [0u8; 24];
        k[..16].copy_from_slice(&key.to_bits().to_be_bytes());
        k[16..].copy_from_slice(rule);
        match self
            .tree
            .remove(&k[..])
            .and_then(|old| self.tree.flush().map(|_| old))
        {
            Ok(old) => old.is_some(),
            Err(e) => {
                tracing::warn!("removing reset quota counters from the store failed: {e}");
                false
            }
        }
    }

    /// Writes the marked entries' counters from `table` in one batch and flushes; how many.
    /// A failure is logged at most once a minute; the entries are marked again.
    pub fn write(&self, table: &QuotaTable) -> usize {
        let marked =
            std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        if marked.is_empty() {
            return 0;
        }
        let mut batch = sled::Batch::default();
        for &(bits, rule_id) in &marked {
            let (Some(rule), Some(c)) = (
                self.keys.get(&rule_id),
                table.counters(PartitionKey::from_bits(bits), rule_id),
            ) else {
                continue;
            };
            let mut k = [0u8; 24];
            k[..16].copy_from_slice(&bits.to_be_bytes());
            k[16..].copy_from_slice(rule);
            let mut v = [0u8; 24];
            for (j, w) in PERSISTED.iter().enumerate() {
                let (epoch, count) = c[w.index()];
                v[j * 8..j * 8 + 4].copy_from_slice(&epoch.to_be_bytes());
                v[j * 8 + 4..j * 8 + 8].copy_from_slice(&count.to_be_bytes());
            }
            batch.insert(&k[..], &v[..]);
        }
        match self
            .tree
            .apply_batch(batch)
            .and_then(|()| self.tree.flush().map(drop))
        {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                self.stats
                    .written
                    .fetch_add(marked.len() as u64, Ordering::Relaxed);
                marked.len()
            }
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let now_s = crate::clock::now_ms() / 1000;
                if now_s >= self.warned_s.load(Ordering::Relaxed) + 60 {
                    self.warned_s.store(now_s, Ordering::Relaxed);
                    tracing::warn!(
                        entries = marked.len(),
                        "writing the quota counters failed (kept in memory, retried): {e}"
                    );
                }
                let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
                dirty.extend(marked);
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaCheck;
    use crate::quota::tests::{config, event};

    const PLANS: &str = r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/m"
per_minute = 100
[[quotas.plans.anonymous.rules]]
path = "/life"
per_minute = 100
lifetime = 3
"#;

    fn check(cfg: &QuotasConfig, tree: &sled::Tree) -> (QuotaCheck, usize) {
        QuotaCheck::new(cfg, Vec::new(), b"salt".to_vec(), 1)
            .unwrap()
            .with_store(tree.clone(), cfg)
            .unwrap()
    }

    fn admitted(q: &QuotaCheck, path: &str, t: u64) -> bool {
        let ev = event("198.51.100.1", path, &[], t);
        q.check_event(None, &ev).decision.unwrap().admitted
    }

    #[test]
    fn lifetime_counts_survive_a_new_check_on_the_same_tree_minutes_do_not() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(TREE_QUOTA).unwrap();
        let cfg = config(PLANS);
        let t = 1_800_000_000;
        let (q, restored) = check(&cfg, &tree);
        assert_eq!(restored, 0);
        assert!(admitted(&q, "/life", t));
        assert!(admitted(&q, "/life", t));
        for _ in 0..5 {
            assert!(admitted(&q, "/m", t));
        }
        // Only the rule with a persisted window is written.
        assert_eq!(q.persist_now(), 1);
        assert_eq!(q.persist_now(), 0, "nothing marked since");
        assert!(admitted(&q, "/life", t));
        // Dropped (a clean stop): the third charge is written too.
        drop(q);
        let (q, restored) = check(&cfg, &tree);
        assert_eq!(restored, 1);
        assert!(
            !admitted(&q, "/life", t + 1),
            "lifetime 3 spent before the restart"
        );
        assert_eq!(q.stats_json()["persist"]["loaded"], 1);
        // The minute counters were in memory only.
        drop(q);
        let minute_only = config(
            r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/m"
per_minute = 5
"#,
        );
        let (q, _) = check(&minute_only, &tree);
        assert!(admitted(&q, "/m", t + 1));
    }

    #[test]
    fn rule_keys_are_stable_and_name_plan_position_path_and_method() {
        let k = rule_key("free", 0, "/api/*", None);
        assert_eq!(k, rule_key("free", 0, "/api/*", None));
        for other in [
            rule_key("pro", 0, "/api/*", None),
            rule_key("free", 1, "/api/*", None),
            rule_key("free", 0, "/api/v1/*", None),
            rule_key("free", 0, "/api/*", Some("POST")),
        ] {
            assert_ne!(k, other);
        }
        // A changed limit keeps the key: the rule's counts carry over.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(TREE_QUOTA).unwrap();
        let t = 1_800_000_000;
        let (q, _) = check(&config(PLANS), &tree);
        assert!(admitted(&q, "/life", t));
        drop(q);
        let raised = PLANS.replace("lifetime = 3", "lifetime = 2");
        let (q, restored) = check(&config(&raised), &tree);
        assert_eq!(restored, 1);
        assert!(admitted(&q, "/life", t));
        assert!(!admitted(&q, "/life", t));
    }

    /// Figures, not a check: `cargo test --release -p guard-daemon --lib persist::tests::cost
    /// -- --ignored --nocapture`. Admitted requests per second on one thread through
    /// `check_event` under a lifetime rule with persistence marking, and the time of the write of
    /// the marked entries to a temporary sled.
    #[test]
    #[ignore = "a measurement; run in release"]
    fn cost_of_marking_and_writing() {
        const USERS: u64 = 100_000;
        const CHECKS: u64 = 1_000_000;
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(TREE_QUOTA).unwrap();
        let cfg = config(
            r#"
[quotas]
default_plan = "anonymous"
[[quotas.plans.anonymous.rules]]
path = "/api/*"
per_day = 1000000
lifetime = 1000000
"#,
        );
        let (q, _) = check(&cfg, &tree);
        let t = 1_800_000_000;
        let events: Vec<_> = (0..USERS)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap());
                event(&ip.to_string(), "/api/items", &[], t)
            })
            .collect();
        let start = std::time::Instant::now();
        for i in 0..CHECKS {
            let ev = &events[usize::try_from((i * 7919) % USERS).unwrap()];
            assert!(q.check_event(None, ev).decision.unwrap().admitted);
        }
        let took = start.elapsed();
        let start = std::time::Instant::now();
        let written = q.persist_now();
        let write = start.elapsed();
        println!(
            "MEASURED {CHECKS} admitted check_event calls (lifetime rule, marking) over {USERS} \
             clients: {:.0}/s on one thread; writing {written} marked entries: {write:?}",
            CHECKS as f64 / took.as_secs_f64()
        );
        assert_eq!(written, usize::try_from(USERS).unwrap());
    }
}
