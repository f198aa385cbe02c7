//! Persistent state in sled, one tree per entity: `bans`, `allow`, `offences` (this module) in
//! the state database, and the request log (`logs`) in a database of its own so that traffic can
//! never fill the state database. sled is the source of truth; the XDP maps are a cache rebuilt
//! from it at start.
//!
//! Key layout of `bans` and `allow` ([`net_key`]): one byte address family (4 or 6), the network
//! address in network order (4 or 16 bytes), one byte prefix length. Values are JSON.
pub mod logs;

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::Evidence;
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
/// Name of the tree that held the request log inside the state database before it moved to a
/// database of its own (see [`Store::drop_old_logs`]).
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

/// Who made a ban. Stored and sent as the lower-case names `cli`, `import`, `rate-limit` and
/// `engine`, as ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `guard ban add`.
    Cli,
    /// `guard ban import`.
    Import,
    /// The XDP packet-rate limit (`xdp.rate_ban`).
    RateLimit,
    /// The behaviour engine.
    Engine,
    /// A stored origin this version does not know: the record still loads (shown as
    /// `unknown`), so that its ban is kept.
    #[serde(other)]
    Unknown,
}

impl Origin {
    /// The origins a ban can be made with (not `Unknown`), for filters and messages.
    pub const KNOWN: [Origin; 4] = [Self::Cli, Self::Import, Self::RateLimit, Self::Engine];

    /// The name as stored, shown and typed after `--origin`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Import => "import",
            Self::RateLimit => "rate-limit",
            Self::Engine => "engine",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An origin name that is none of [`Origin::KNOWN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown origin `{given}`: expected one of cli, import, rate-limit, engine")]
pub struct UnknownOrigin {
    pub given: String,
}

impl std::str::FromStr for Origin {
    type Err = UnknownOrigin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::KNOWN
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| UnknownOrigin {
                given: s.to_owned(),
            })
    }
}

/// A ban as stored: what, why, since when, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned address or network.
    pub target: Net,
    /// Free text shown in `guard ban ls`.
    pub reason: String,
    /// Who made the ban.
    pub origin: Origin,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `None` = permanent.
    pub expires_at: Option<u64>,
    /// What led to the ban (rule, offence, counts, sample paths), if a detector made it.
    /// Evidence an earlier version stored in another shape still loads (see
    /// [`Evidence::from_stored`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::engine::deserialize_stored"
    )]
    pub evidence: Option<Evidence>,
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
            origin: Origin::Cli,
            created_at: 1,
            expires_at: exp,
            evidence: None,
        }
    }

    #[test]
    fn the_old_log_tree_is_dropped_once() {
        let s = Store::temporary().unwrap();
        assert_eq!(s.drop_old_logs().unwrap(), None);
        let old = s.db().open_tree(TREE_LOGS).unwrap();
        old.insert(b"k1", b"v").unwrap();
        old.insert(b"k2", b"v").unwrap();
        s.put_ban(&ban("10.0.0.1", None)).unwrap();
        assert_eq!(s.drop_old_logs().unwrap(), Some(2));
        assert_eq!(s.drop_old_logs().unwrap(), None);
        assert!(!s.db().tree_names().iter().any(|n| n.as_ref() == b"logs"));
        assert_eq!(s.ban_count().unwrap(), 1, "bans are untouched");
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

    /// Records written by earlier versions (origin strings, evidence built with `json!` or of
    /// any other shape) load, so a restart keeps every ban.
    #[test]
    fn records_of_earlier_versions_still_load() {
        let s = Store::temporary().unwrap();
        let old = [
            r#"{"target":"192.0.2.7","reason":"backdoor: 2 hits","origin":"engine","created_at":5,"expires_at":null,"evidence":{"rule":"backdoor","client":"192.0.2.7","user":null,"offence":3,"ttl_secs":57600,"shadow":false,"counts":{"requests_10s":2},"sample_paths":["/shell.php"],"hits":2,"leak_secs":60}}"#,
            r#"{"target":"198.51.100.0/24","reason":"packet rate over 1000/s","origin":"rate-limit","created_at":6,"expires_at":99,"evidence":{"rule":"xdp-rate","limit_pps":1000,"dropped":12}}"#,
            r#"{"target":"203.0.113.9","reason":"odd","origin":"crowdsec","created_at":7,"expires_at":null,"evidence":"a note, not an object"}"#,
            r#"{"target":"2001:db8::1","reason":"manual","origin":"cli","created_at":8,"expires_at":null}"#,
        ];
        for json in old {
            let target: Net = serde_json::from_str::<serde_json::Value>(json).unwrap()["target"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            s.bans.insert(net_key(&target), json.as_bytes()).unwrap();
        }
        let bans = s.bans().unwrap();
        assert_eq!(bans.len(), 4);
        let by = |t: &str| {
            let t: Net = t.parse().unwrap();
            bans.iter().find(|b| b.target == t).unwrap().clone()
        };
        let engine = by("192.0.2.7");
        assert_eq!(engine.origin, Origin::Engine);
        let ev = engine.evidence.unwrap();
        assert_eq!((ev.rule.as_str(), ev.offence), ("backdoor", Some(3)));
        assert_eq!(ev.details.hits, Some(2));
        let rate = by("198.51.100.0/24");
        assert_eq!(rate.origin, Origin::RateLimit);
        assert_eq!(rate.evidence.unwrap().details.dropped, Some(12));
        let odd = by("203.0.113.9");
        assert_eq!(odd.origin, Origin::Unknown);
        assert_eq!(
            odd.evidence.unwrap().extra.get("value"),
            Some(&serde_json::json!("a note, not an object"))
        );
        let cli = by("2001:db8::1");
        assert_eq!((cli.origin, cli.evidence), (Origin::Cli, None));
        // Written back, a record reads the same.
        s.put_ban(&engine_record()).unwrap();
        assert_eq!(
            s.ban(&"192.0.2.8".parse().unwrap()).unwrap(),
            Some(engine_record())
        );
    }

    fn engine_record() -> BanRecord {
        BanRecord {
            target: "192.0.2.8".parse().unwrap(),
            reason: "probing".into(),
            origin: Origin::Engine,
            created_at: 1,
            expires_at: Some(2),
            evidence: Some(Evidence {
                rule: "probing".into(),
                offence: Some(1),
                sample_paths: vec!["/a".into()],
                ..Evidence::default()
            }),
        }
    }

    /// Origins are stored, sent and typed as the same lower-case names as before.
    #[test]
    fn origins_round_trip_by_their_old_names() {
        for (origin, name) in
            Origin::KNOWN
                .into_iter()
                .zip(["cli", "import", "rate-limit", "engine"])
        {
            assert_eq!(origin.to_string(), name);
            assert_eq!(name.parse::<Origin>(), Ok(origin));
            let json = serde_json::to_string(&origin).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), origin);
        }
        let err = "ratelimit".parse::<Origin>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown origin `ratelimit`: expected one of cli, import, rate-limit, engine"
        );
        assert!(
            "unknown".parse::<Origin>().is_err(),
            "not an origin to filter by"
        );
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
