//! Persistent state in sled, one tree per entity: `bans`, `allow` (this module) and the request
//! log (`logs`). sled is the source of truth; the XDP maps are a cache rebuilt from it at start.
//!
//! Key layout of `bans` and `allow` ([`net_key`]): one byte address family (4 or 6), the network
//! address in network order (4 or 16 bytes), one byte prefix length. Values are JSON.
pub mod logs;

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::net::Net;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
/// Name of the request log tree (see `logs`).
pub const TREE_LOGS: &str = "logs";
/// Name of the allowlist tree.
pub const TREE_ALLOW: &str = "allow";
/// Name of the tree of repeat offenders (address → bans so far, last one), which lets the
/// engine escalate across restarts.
pub const TREE_OFFENCES: &str = "offences";

/// What the store remembers of an address the engine banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    /// Engine bans so far (within the engine's offender memory).
    pub count: u32,
    /// The last one, seconds since the Unix epoch.
    pub last: u64,
}

/// A ban as stored: what, why, since when, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned address or network.
    pub target: Net,
    /// Free text shown in `guard ban ls`.
    pub reason: String,
    /// Who made the ban: `cli`, `import`, `rate-limit`, `engine`.
    pub origin: String,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `None` = permanent.
    pub expires_at: Option<u64>,
    /// What led to the ban (rule, counts, sample paths), if a detector made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

impl BanRecord {
    /// True once the ban's deadline has passed at `now_ms`.
    #[must_use]
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_ms)
    }
}

/// An allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRecord {
    pub target: Net,
    pub reason: String,
    pub created_at: u64,
}

/// The key of a ban or allow entry (see the module doc).
#[must_use]
pub fn net_key(net: &Net) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    match net.addr() {
        std::net::IpAddr::V4(a) => {
            key.push(4);
            key.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            key.push(6);
            key.extend_from_slice(&a.octets());
        }
    }
    key.push(net.prefix());
    key
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    bans: sled::Tree,
    allow: sled::Tree,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.to_owned(),
                source,
            })?;
        Self::from_db(db)
    }

    /// A throw-away database for tests.
    pub fn temporary() -> Result<Self, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            bans: db.open_tree(TREE_BANS)?,
            allow: db.open_tree(TREE_ALLOW)?,
            db,
        })
    }

    /// The underlying database, for other modules' trees.
    #[must_use]
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Inserts or replaces a ban; returns the previous record.
    pub fn put_ban(&self, ban: &BanRecord) -> Result<Option<BanRecord>, StoreError> {
        let old = self.bans.insert(net_key(&ban.target), to_json(ban))?;
        old.map(|v| from_json(TREE_BANS, &v)).transpose()
    }

    /// Removes a ban; returns it if it existed.
    pub fn remove_ban(&self, target: &Net) -> Result<Option<BanRecord>, StoreError> {
        self.bans
            .remove(net_key(target))?
            .map(|v| from_json(TREE_BANS, &v))
            .transpose()
    }

    /// One ban.
    pub fn ban(&self, target: &Net) -> Result<Option<BanRecord>, StoreError> {
        self.bans
            .get(net_key(target))?
            .map(|v| from_json(TREE_BANS, &v))
            .transpose()
    }

    /// How many bans are stored. (Not `Tree::len`: after an I/O error sled's iterator can keep
    /// yielding the error, and counting items would never end; the first error ends this.)
    pub fn ban_count(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for key in self.bans.iter().keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// Every ban, ordered by family, address, prefix.
    pub fn bans(&self) -> Result<Vec<BanRecord>, StoreError> {
        self.bans
            .iter()
            .values()
            .map(|v| from_json(TREE_BANS, &v?))
            .collect()
    }

    /// Inserts or replaces an allowlist entry.
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
mod tests {
    use super::*;

    /// Opens `dir` again in this process: sled's flusher thread may hold the file lock for a
    /// moment after the previous handle is dropped (a new process, like a restarted daemon,
    /// never meets this).
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopening {}: {e}", dir.display()),
            }
        }
    }

    fn ban(t: &str, exp: Option<u64>) -> BanRecord {
        BanRecord {
            target: t.parse().unwrap(),
            reason: "test".into(),
            origin: "cli".into(),
            created_at: 1,
            expires_at: exp,
            evidence: None,
        }
    }

    #[test]
    fn offences_survive_reopen_and_old_ones_are_dropped() {
        let dir = std::env::temp_dir().join(format!("guard-offence-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (v4, v6, old): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.5".parse().unwrap(),
            "2001:db8::5".parse().unwrap(),
            "192.0.2.6".parse().unwrap(),
        );
        {
            let s = Store::open(&dir).unwrap();
            s.put_offence(
                v4,
                OffenceRecord {
                    count: 1,
                    last: 1_000,
                },
            )
            .unwrap();
            s.put_offence(
                v4,
                OffenceRecord {
                    count: 2,
                    last: 2_000,
                },
            )
            .unwrap();
            s.put_offence(
                v6,
                OffenceRecord {
                    count: 3,
                    last: 1_500,
                },
            )
            .unwrap();
            s.put_offence(old, OffenceRecord { count: 9, last: 10 })
                .unwrap();
            s.flush().unwrap();
        }
        let s = reopen(&dir);
        let mut got = s.offences(1_000).unwrap();
        got.sort_by_key(|(ip, _)| *ip);
        assert_eq!(
            got,
            vec![
                (
                    v4,
                    OffenceRecord {
                        count: 2,
                        last: 2_000
                    }
                ),
                (
                    v6,
                    OffenceRecord {
                        count: 3,
                        last: 1_500
                    }
                ),
            ]
        );
        assert_eq!(s.offences(0).unwrap().len(), 2, "the old one was removed");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bans_round_trip_and_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("guard-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            assert!(s.put_ban(&ban("10.0.0.1", None)).unwrap().is_none());
            s.put_ban(&ban("10.0.0.0/8", Some(5))).unwrap();
            s.put_ban(&ban("2001:db8::/32", None)).unwrap();
            assert!(s.put_ban(&ban("10.0.0.1", Some(9))).unwrap().is_some());
            s.flush().unwrap();
        }
        let s = reopen(&dir);
        let all = s.bans().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            s.ban(&"10.0.0.1".parse().unwrap())
                .unwrap()
                .unwrap()
                .expires_at,
            Some(9)
        );
        assert!(
            s.remove_ban(&"10.0.0.0/8".parse().unwrap())
                .unwrap()
                .is_some()
        );
        assert!(
            s.remove_ban(&"10.0.0.0/8".parse().unwrap())
                .unwrap()
                .is_none()
        );
        assert_eq!(s.bans().unwrap().len(), 2);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expiry() {
        assert!(ban("1.2.3.4", Some(10)).expired(10));
        assert!(!ban("1.2.3.4", Some(10)).expired(9));
        assert!(!ban("1.2.3.4", None).expired(u64::MAX));
    }

    #[test]
    fn allow_round_trip() {
        let s = Store::temporary().unwrap();
        let e = AllowRecord {
            target: "192.0.2.0/24".parse().unwrap(),
            reason: "office".into(),
            created_at: 3,
        };
        s.put_allow(&e).unwrap();
        assert_eq!(s.allows().unwrap(), vec![e.clone()]);
        assert_eq!(s.remove_allow(&e.target).unwrap(), Some(e));
        assert!(s.allows().unwrap().is_empty());
    }
}
