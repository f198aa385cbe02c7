//! Persistent state in sled, one tree per entity: `bans`, `allow`, `offences` (this module),
//! `user_bans` ([`users`]) in the state database, and the request log (`logs`) in a database of
//! its own so that traffic can never fill the state database. sled is the source of truth; the XDP maps are a cache rebuilt
//! from it at start.
//!
//! Key layout of `bans` and `allow` ([`net_key`]): one byte address family (4 or 6), the network
//! address in network order (4 or 16 bytes), one byte prefix length. Values of `bans` start with
//! a schema version byte (see [`codec`]): the compact version 1 is written, the JSON of earlier
//! versions still reads. `allow` and `offences` values are JSON (a handful of records).
//!
//! A ban record that cannot be decoded never stops the daemon: it is skipped, logged with its
//! key in hex and counted ([`Store::bad_records`]); it stays in the tree for a later version (or
//! an operator) to read.
mod bans;
pub mod codec;
mod lock;
pub mod logs;
mod records;
mod users;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use serde::{Deserialize, Serialize};

use crate::net::Net;
pub use bans::BanIter;
pub use records::{AllowRecord, BanRecord, OffenceRecord, Origin, UnknownOrigin, key_net, net_key};
pub use users::{TREE_USER_BANS, UserBanRecord, decode_user_ban, encode_user_ban};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (another guard) has the database open.
    #[error(
        "another guard{} is using state directory {}: stop it first, or give this one another \
         state directory (--state-dir or daemon.state_dir)",
        .holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        .path.display()
    )]
    Locked {
        path: std::path::PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot open the database in {path}: {}", sled_message(.source))]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("database error: {}", sled_message(.0))]
    Sled(#[from] sled::Error),
    #[error("corrupt record in tree {tree}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("corrupt ban record (key {key})")]
    BadBan {
        /// The key, in hex.
        key: String,
        #[source]
        source: codec::DecodeError,
    },
}

/// sled's message, with I/O errors as the OS words them ("No space left on device (os error
/// 28)") rather than sled's debug form.
fn sled_message(e: &sled::Error) -> String {
    let sled::Error::Io(io) = e else {
        return e.to_string();
    };
    // sled wraps the OS error, sometimes as its debug text: find the OS error number.
    let inner = io
        .get_ref()
        .and_then(|i| i.downcast_ref::<std::io::Error>())
        .unwrap_or(io);
    let code = inner.raw_os_error().or_else(|| {
        let text = inner.to_string();
        let rest = text.split("code: ").nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    match code {
        Some(code) => format!("I/O error: {}", std::io::Error::from_raw_os_error(code)),
        None => format!("I/O error: {inner}"),
    }
}

/// Name of the bans tree.
pub const TREE_BANS: &str = "bans";
/// Name of the tree that held the request log inside the state database before it moved to a
/// database of its own (see [`Store::drop_old_logs`]).
pub const TREE_LOGS: &str = "logs";
/// Name of the allowlist tree.
pub const TREE_ALLOW: &str = "allow";
/// Name of the tree of repeat offenders (address → bans so far, last one), which lets the
/// engine escalate across restarts.
pub const TREE_OFFENCES: &str = "offences";

/// The state database's page cache when the config does not say (`daemon.store_cache_mb`).
pub const DEFAULT_CACHE_MB: u64 = 16;

/// Counters shared by every handle of one open store.
#[derive(Default)]
struct Counts {
    /// Keys in the bans tree, once known (see [`Store::ban_count`]).
    bans: AtomicUsize,
    bans_known: AtomicBool,
    /// Writes to the bans tree so far: a full scan sets `bans` only if none happened during it.
    ban_writes: AtomicU64,
    /// Readable bans by kind (`codec::ban_kind`), kept as bans are written and set with
    /// `bans` by a full scan; meaningful once `bans_known`. Signed: a removal before the first
    /// scan may take one below zero for a while.
    kinds: [std::sync::atomic::AtomicI64; codec::BAN_KINDS],
    /// Undecodable ban records met (distinct keys, see `bad_keys`).
    bad: AtomicU64,
    bad_keys: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    bans: sled::Tree,
    allow: sled::Tree,
    /// User bans (see [`users`]).
    users: sled::Tree,
    counts: Arc<Counts>,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_MB)
    }

    /// Opens the database in `dir` with a page cache of `cache_mb` MiB (sled's own default,
    /// 1 GiB, would let a million bans take hundreds of MB of memory).
    pub fn open_with_cache(dir: &Path, cache_mb: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb.saturating_mul(1024 * 1024))
            .open()
            .map_err(|source| {
                if lock::is_locked(&source) {
                    StoreError::Locked {
                        path: dir.to_owned(),
                        holder: lock::holder(dir),
                    }
                } else {
                    StoreError::Open {
                        path: dir.to_owned(),
                        source,
                    }
                }
            })?;
        Self::from_db(db)
    }

    /// A throw-away database for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(
            sled::Config::new()
                .temporary(true)
                .cache_capacity(DEFAULT_CACHE_MB * 1024 * 1024)
                .open()?,
        )
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            bans: db.open_tree(TREE_BANS)?,
            allow: db.open_tree(TREE_ALLOW)?,
            users: db.open_tree(TREE_USER_BANS)?,
            db,
            counts: Arc::default(),
        })
    }

    /// The underlying database, for other modules' trees.
    #[must_use]
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Removes the request log tree an earlier version kept in the state database; returns how
    /// many records it held, or `None` if there was none. Its records are dropped, not copied
    /// into the new log database: they would take the new log's room for old traffic.
    pub fn drop_old_logs(&self) -> Result<Option<usize>, StoreError> {
        let name = TREE_LOGS.as_bytes();
        if !self.db.tree_names().iter().any(|n| n.as_ref() == name) {
            return Ok(None);
        }
        let records = self
            .db
            .open_tree(TREE_LOGS)?
            .iter()
            .keys()
            .take_while(Result::is_ok)
            .count();
        self.db.drop_tree(TREE_LOGS)?;
        Ok(Some(records))
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Inserts or updates an allowlist entry.
    pub fn put_allow(&self, entry: &AllowRecord) -> Result<(), StoreError> {
        self.allow.insert(net_key(&entry.target), to_json(entry))?;
        Ok(())
    }

    /// Removes an allowlist entry; returns it if it existed.
    pub fn remove_allow(&self, target: &Net) -> Result<Option<AllowRecord>, StoreError> {
        self.allow
            .remove(net_key(target))?
            .map(|v| from_json(TREE_ALLOW, &v))
            .transpose()
    }

    /// Records that the engine banned `ip` for the `count`th time at `last` (Unix seconds).
    pub fn put_offence(&self, ip: IpAddr, record: OffenceRecord) -> Result<(), StoreError> {
        self.db
            .open_tree(TREE_OFFENCES)?
            .insert(net_key(&Net::host(ip)), to_json(&record))?;
        Ok(())
    }

    /// Forgets the last stored ban of `ip` (the operator lifted it): its count goes down by
    /// one, and the record goes when none is left.
    pub fn forget_offence(&self, ip: IpAddr) -> Result<(), StoreError> {
        let tree = self.db.open_tree(TREE_OFFENCES)?;
        let key = net_key(&Net::host(ip));
        let Some(value) = tree.get(&key)? else {
            return Ok(());
        };
        let mut record: OffenceRecord = from_json(TREE_OFFENCES, &value)?;
        record.count = record.count.saturating_sub(1);
        if record.count == 0 {
            tree.remove(key)?;
        } else {
            tree.insert(key, to_json(&record))?;
        }
        Ok(())
    }

    /// Repeat offenders whose last ban is at or after `since` (Unix seconds); older ones are
    /// removed.
    pub fn offences(&self, since: u64) -> Result<Vec<(IpAddr, OffenceRecord)>, StoreError> {
        let tree = self.db.open_tree(TREE_OFFENCES)?;
        let mut out = Vec::new();
        for entry in &tree {
            let (key, value) = entry?;
            let record: OffenceRecord = from_json(TREE_OFFENCES, &value)?;
            let ip = match key.as_ref() {
                [4, a @ ..] if a.len() >= 4 => IpAddr::from([a[0], a[1], a[2], a[3]]),
                [6, a @ ..] if a.len() >= 16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[..16]);
                    IpAddr::from(b)
                }
                _ => {
                    tree.remove(key)?;
                    continue;
                }
            };
            if record.last < since {
                tree.remove(key)?;
            } else {
                out.push((ip, record));
            }
        }
        Ok(out)
    }

    /// Every allowlist entry.
    pub fn allows(&self) -> Result<Vec<AllowRecord>, StoreError> {
        self.allow
            .iter()
            .values()
            .map(|v| from_json(TREE_ALLOW, &v?))
            .collect()
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn from_json<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

#[cfg(test)]
mod tests;

/// Key in the meta tree of `guard mode`'s override: JSON [`ModeOverride`].
const MODE_OVERRIDE_KEY: &[u8] = b"mode_override";

/// The engine mode the operator chose with `guard mode`, and the `engine.mode` of the
/// configuration in effect then: the override lasts until a start or reload sees a
/// configuration whose mode differs from that one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModeOverride {
    /// `enforce` or `shadow`.
    pub mode: String,
    /// `engine.mode` of the configuration when the override was set.
    pub config_mode: String,
}

impl Store {
    /// `guard mode`'s override, if one is recorded.
    pub fn mode_override(&self) -> Result<Option<ModeOverride>, StoreError> {
        self.db
            .open_tree(crate::bans::TREE_META)?
            .get(MODE_OVERRIDE_KEY)?
            .map(|v| from_json(crate::bans::TREE_META, &v))
            .transpose()
    }

    /// Records (`Some`) or forgets (`None`) `guard mode`'s override, flushed.
    pub fn set_mode_override(&self, value: Option<&ModeOverride>) -> Result<(), StoreError> {
        let meta = self.db.open_tree(crate::bans::TREE_META)?;
        match value {
            Some(v) => meta.insert(MODE_OVERRIDE_KEY, to_json(v))?,
            None => meta.remove(MODE_OVERRIDE_KEY)?,
        };
        self.db.flush()?;
        Ok(())
    }
}
