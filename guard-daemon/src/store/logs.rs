//! The request log: one record per request in the sled tree [`TREE`] of a database of its own
//! ([`LogStore::open_dir`], `<state_dir>/logs/`), apart from the state database, so that traffic
//! filling the log can never stop bans being saved. Records are keyed so that time ranges and
//! retention are range scans ([`key`]). Writes from the request path go through [`LogWriter`], a
//! bounded queue drained by one thread in `sled::Batch`es: `try_log` never blocks, cuts long
//! fields first ([`Limits`]), and what does not fit is dropped and counted; the same thread keeps
//! the database under its byte cap (`cap`) and prunes records past their retention, unless the
//! wall clock jumped (`retention`). `guard logs` reads a page with [`LogStore::query_page`] and
//! prints [`LogRecord::to_json_line`] or [`format_table`].
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tap::{RequestEvent, Trust};

pub mod cap;
pub mod format;
mod page;
pub mod retention;
#[cfg(test)]
mod tests;
mod writer;

pub use cap::{CUT_MARK, Limits, Pruned};
pub use format::{format_table, rfc3339};
pub use page::{LogPage, MORE_SCAN};
pub use retention::Retention;
pub use writer::{LogWriter, WriterCounters};

/// The log database's page cache.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Name of the sled tree holding the log.
pub const TREE: &str = "logs";
/// Key layout: 8 bytes big-endian Unix time in nanoseconds, then 4 bytes big-endian sequence
/// (records of the same nanosecond). Byte order = time order.
pub const KEY_LEN: usize = 12;
/// Keys removed per batch when pruning (bounds memory on a large log).
const PRUNE_CHUNK: usize = 10_000;
/// sled's segment size for the log database: 256 KiB rather than sled's 512 KiB default, so
/// that freed space is found and reused in smaller steps under a small cap.
const SEGMENT_SIZE: usize = 256 * 1024;

/// Errors of the request log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log storage failed")]
    Storage {
        #[source]
        source: sled::Error,
    },
    #[error("log record at key {key:02x?} does not decode")]
    Decode {
        key: Vec<u8>,
        #[source]
        source: serde_json::Error,
    },
    #[error("log record does not encode")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot open the request log database in {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot manage the request log's files in {path}")]
    Rebuild {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the log writer thread")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
}

impl From<sled::Error> for LogError {
    fn from(source: sled::Error) -> Self {
        Self::Storage { source }
    }
}

/// How guard saw a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Watched on the wire by the tap (guard is not in the request path).
    #[default]
    Tap,
    /// Judged in the request path: the reverse proxy or the forward-auth endpoint, which
    /// answered (or, in shadow mode, would have answered) before the upstream saw anything.
    Inline,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Time of the request, since the Unix epoch.
    pub time: Duration,
    pub client: IpAddr,
    /// How far the request can be held against `client`; only `verified` ones were judged.
    /// Records written before the field existed were all judged: they read as verified.
    #[serde(default)]
    pub trust: Trust,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `None` when no response was seen.
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub user_agent: Option<String>,
    pub host: Option<String>,
    pub blocked: bool,
    pub reason: Option<String>,
    /// True when a field (path, query, a header value) was cut at its bound; the cut field
    /// ends in [`CUT_MARK`].
    #[serde(default)]
    pub truncated: bool,
    /// Tap or inline; records written before the field existed were tapped.
    #[serde(default)]
    pub mode: Mode,
    /// The inline mode's request id, also in the answer (the page and `X-Request-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl LogRecord {
    /// The record of a tap event, with the engine's verdict.
    #[must_use]
    pub fn from_event(e: &RequestEvent, blocked: bool, reason: Option<String>) -> Self {
        Self {
            time: e.ts,
            client: e.client,
            trust: e.trust,
            user: e.user.as_ref().map(|u| u.id.clone()),
            method: e.method.clone(),
            path: e.path.clone(),
            query: e.query.clone(),
            status: e.status,
            latency_ms: e.latency.map(|l| l.as_secs_f64() * 1000.0),
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            user_agent: e.headers.user_agent.clone(),
            host: e.headers.host.clone(),
            blocked,
            reason,
            truncated: false,
            mode: Mode::Tap,
            request_id: None,
        }
    }

    /// Roughly the bytes the record takes stored (its variable fields and a fixed part).
    #[must_use]
    pub fn approx_bytes(&self) -> u64 {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        (self.path.len()
            + opt(&self.query)
            + opt(&self.user)
            + opt(&self.user_agent)
            + opt(&self.host)
            + opt(&self.reason)
            + opt(&self.request_id)
            + self.method.len()
            + 256) as u64
    }

    /// The `guard logs --json` line: exactly `ts` (RFC 3339 UTC), `client`, `trust`
    /// (`verified`, `unverified` or `no_client`), `user`, `method`,
    /// `path`, `query`, `status`, `latency_ms`, `bytes_in`, `bytes_out`, `user_agent`, `blocked`,
    /// `reason`, `truncated`, `mode` (`tap` or `inline`) and `request_id` (inline only, else
    /// null).
    #[must_use]
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            ts: String,
            client: IpAddr,
            trust: Trust,
            user: Option<&'a str>,
            method: &'a str,
            path: &'a str,
            query: Option<&'a str>,
            status: Option<u16>,
            latency_ms: Option<f64>,
            bytes_in: u64,
            bytes_out: u64,
            user_agent: Option<&'a str>,
            blocked: bool,
            reason: Option<&'a str>,
            truncated: bool,
            mode: Mode,
            request_id: Option<&'a str>,
        }
        let line = Line {
            ts: rfc3339(self.time),
            client: self.client,
            trust: self.trust,
            user: self.user.as_deref(),
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            status: self.status,
            latency_ms: self.latency_ms,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            user_agent: self.user_agent.as_deref(),
            blocked: self.blocked,
            reason: self.reason.as_deref(),
            truncated: self.truncated,
            mode: self.mode,
            request_id: self.request_id.as_deref(),
        };
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// The key of a record at `time` with sequence `seq`.
#[must_use]
pub fn key(time: Duration, seq: u32) -> [u8; KEY_LEN] {
    let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&nanos.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Which statuses a query keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// `5xx`: the hundreds digit.
    Class(u16),
    /// `404`: one status.
    Exact(u16),
}

/// Why a status filter did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad status filter {text:?}: expected e.g. 404 or 5xx")]
pub struct StatusFilterError {
    text: String,
}

impl FromStr for StatusFilter {
    type Err = StatusFilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || StatusFilterError { text: s.to_owned() };
        let b = s.as_bytes();
        if b.len() == 3 && b[1..].eq_ignore_ascii_case(b"xx") && (b'1'..=b'5').contains(&b[0]) {
            return Ok(Self::Class(u16::from(b[0] - b'0')));
        }
        match s.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(Self::Exact(n)),
            _ => Err(err()),
        }
    }
}

impl StatusFilter {
    fn matches(self, status: Option<u16>) -> bool {
        match (self, status) {
            (Self::Class(c), Some(s)) => s / 100 == c,
            (Self::Exact(e), Some(s)) => s == e,
            (_, None) => false,
        }
    }
}

/// Filters of `guard logs`. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Records at or after this time.
    pub since: Option<Duration>,
    /// Records before this time.
    pub until: Option<Duration>,
    /// Records of clients in this network (an address is a network of one).
    pub ip: Option<crate::net::Net>,
    pub path_prefix: Option<String>,
    pub status: Option<StatusFilter>,
    pub blocked: Option<bool>,
    /// At most this many records: the newest ones.
    pub limit: Option<usize>,
}

impl LogQuery {
    fn matches(&self, r: &LogRecord) -> bool {
        self.ip.is_none_or(|net| net.contains(r.client))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| r.path.starts_with(p))
            && self.status.is_none_or(|s| s.matches(r.status))
            && self.blocked.is_none_or(|b| b == r.blocked)
    }
}

/// The request log database.
#[derive(Debug, Clone)]
pub struct LogStore {
    /// The open database; replaced when the log is rebuilt ([`LogStore::rebuild`]).
    open: Arc<std::sync::RwLock<Open>>,
    /// Its directory, holding one database per generation (`0/`, `1/`, …: a rebuild makes the
    /// next and deletes the last); `None` for a temporary database.
    dir: Option<std::path::PathBuf>,
    /// Sequence for records of the same nanosecond; shared by clones.
    seq: Arc<AtomicU32>,
    /// Live bytes and pruning counters; shared by clones.
    acct: Arc<cap::Accounting>,
}

impl LogStore {
    /// Opens (creating if needed) the log database in `dir` and counts its live bytes.
    pub fn open_dir(dir: &std::path::Path) -> Result<Self, LogError> {
        let io = |source| LogError::Rebuild {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut generations: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        generations.sort_unstable();
        // The newest generation is the log; an older one is what a rebuild left behind when it
        // was interrupted.
        let generation = generations.pop().unwrap_or(0);
        for old in generations {
            let _ = std::fs::remove_dir_all(dir.join(old.to_string()));
        }
        let store = Self {
            open: Arc::new(std::sync::RwLock::new(Open::new(Some(dir), generation)?)),
            dir: Some(dir.to_owned()),
            seq: Arc::new(AtomicU32::new(0)),
            acct: Arc::default(),
        };
        store.recount()?;
        Ok(store)
    }

    /// A throw-away log database (tests).
    pub fn temporary() -> Result<Self, LogError> {
        Ok(Self {
            open: Arc::new(std::sync::RwLock::new(Open::new(None, 0)?)),
            dir: None,
            seq: Arc::new(AtomicU32::new(0)),
            acct: Arc::default(),
        })
    }

    /// The log tree of the database open now.
    fn tree(&self) -> sled::Tree {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tree
            .clone()
    }

    /// The database open now.
    fn db(&self) -> sled::Db {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .db
            .clone()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.db().flush()?;
        Ok(())
    }

    fn next_key(&self, time: Duration) -> [u8; KEY_LEN] {
        key(time, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Writes one record now (tests, tools; the daemon goes through [`LogWriter`]).
    pub fn insert(&self, record: &LogRecord) -> Result<(), LogError> {
        let value = serde_json::to_vec(record).map_err(|source| LogError::Encode { source })?;
        let cost = cap::record_cost(KEY_LEN, value.len());
        self.tree().insert(self.next_key(record.time), value)?;
        self.add(cost);
        Ok(())
    }

    /// Writes records in one sled batch.
    pub fn insert_batch(&self, records: &[LogRecord]) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        let mut cost = 0;
        for r in records {
            let value = serde_json::to_vec(r).map_err(|source| LogError::Encode { source })?;
            cost += cap::record_cost(KEY_LEN, value.len());
            batch.insert(&self.next_key(r.time), value);
        }
        self.tree().apply_batch(batch)?;
        self.add(cost);
        Ok(())
    }

    /// Number of records, counted up to the first read error (not `Tree::len`: after an I/O
    /// error sled's iterator can keep yielding the error, and counting it would never end).
    #[must_use]
    pub fn len(&self) -> usize {
        self.tree().iter().keys().take_while(Result::is_ok).count()
    }

    /// True when the log is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tree().is_empty()
    }

    /// Records matching `q`, oldest first (with a limit: the newest `limit`, still oldest first).
    pub fn query(&self, q: &LogQuery) -> Result<Vec<LogRecord>, LogError> {
        let since = q.since.unwrap_or(Duration::ZERO);
        if q.until.is_some_and(|until| until <= since) {
            return Ok(Vec::new());
        }
        let from = key(since, 0);
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let range = match q.until {
            Some(until) => self.tree().range(from..key(until, 0)),
            None => self.tree().range(from..),
        };
        for item in range.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let record: LogRecord =
                serde_json::from_slice(&v).map_err(|source| LogError::Decode {
                    key: k.to_vec(),
                    source,
                })?;
            if q.matches(&record) {
                out.push(record);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The time of the newest record, if there is one.
    #[must_use]
    pub fn newest_time(&self) -> Option<Duration> {
        let (k, _) = self.tree().last().ok()??;
        let nanos: [u8; 8] = k.get(..8)?.try_into().ok()?;
        Some(Duration::from_nanos(u64::from_be_bytes(nanos)))
    }

    /// Removes every record older than `time`; returns how many.
    pub fn prune_older_than(&self, time: Duration) -> Result<usize, LogError> {
        let end = key(time, 0);
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let (mut n, mut bytes) = (0, 0);
            for item in self.tree().range(..end).take(PRUNE_CHUNK) {
                let (k, v) = item?;
                bytes += cap::record_cost(k.len(), v.len());
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(removed);
            }
            self.tree().apply_batch(batch)?;
            self.forget(bytes);
            self.acct
                .expired_records
                .fetch_add(n as u64, Ordering::Relaxed);
            removed += n;
        }
    }
}

/// An open log database and its tree.
#[derive(Debug)]
struct Open {
    db: sled::Db,
    tree: sled::Tree,
    generation: u64,
}

impl Open {
    /// Opens generation `generation` of the log in `dir` (`None`: a temporary database).
    fn new(dir: Option<&std::path::Path>, generation: u64) -> Result<Self, LogError> {
        // sled's default page cache is 1 GiB: the log is written in batches and read by
        // `guard logs` queries, which a small cache serves as well.
        let config = sled::Config::new()
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(CACHE_BYTES);
        let db = match dir {
            Some(dir) => {
                let path = dir.join(generation.to_string());
                config
                    .path(&path)
                    .open()
                    .map_err(|source| LogError::Open { path, source })?
            }
            None => config.temporary(true).open()?,
        };
        Ok(Self {
            tree: db.open_tree(TREE)?,
            db,
            generation,
        })
    }
}
