//! One page of `guard logs`: the newest records a query matches, and how many older ones match
//! too, so that the CLI can say there is more rather than print the whole history.
use serde::{Deserialize, Serialize};

use super::{LogError, LogQuery, LogRecord, LogStore, key};

/// At most this many records past the page are read to count the older matches when the query
/// filters by content (address, path, status, blocked); past it the count is a lower bound.
/// Without such filters only keys are counted, to the end.
pub const MORE_SCAN: u64 = 1_000_000;

/// The newest records matching a query (oldest first) and the count of older matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub records: Vec<LogRecord>,
    /// Records matching the query that are older than the page (not in it).
    pub more: u64,
    /// True when counting stopped after [`MORE_SCAN`] records: at least `more` match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more_at_least: bool,
}

impl LogQuery {
    /// True when the query filters only by time (keys alone answer it).
    fn by_time_only(&self) -> bool {
        self.ip.is_none()
            && self.path_prefix.is_none()
            && self.status.is_none()
            && self.blocked.is_none()
    }
}

impl LogStore {
    /// The newest `q.limit` records matching `q` (oldest first), and how many older records
    /// match too (see [`LogPage`]).
    pub fn query_page(&self, q: &LogQuery) -> Result<LogPage, LogError> {
        self.page_scanning(q, MORE_SCAN)
    }

    /// [`LogStore::query_page`], reading at most `scan` records past the page to count a
    /// filtered query's older matches.
    pub(super) fn page_scanning(&self, q: &LogQuery, scan: u64) -> Result<LogPage, LogError> {
        let since = q.since.unwrap_or_default();
        let mut page = LogPage::default();
        if q.until.is_some_and(|until| until <= since) {
            return Ok(page);
        }
        let from = key(since, 0);
        let tree = self.tree();
        let mut range = match q.until {
            Some(until) => tree.range(from..key(until, 0)),
            None => tree.range(from..),
        }
        .rev();
        let limit = q.limit.unwrap_or(usize::MAX);
        let decode = |k: &[u8], v: &[u8]| {
            serde_json::from_slice::<LogRecord>(v).map_err(|source| LogError::Decode {
                key: k.to_vec(),
                source,
            })
        };
        while page.records.len() < limit {
            let Some(item) = range.next() else { break };
            let (k, v) = item?;
            let record = decode(&k, &v)?;
            if q.matches(&record) {
                page.records.push(record);
            }
        }
        page.records.reverse();
        if q.by_time_only() {
            for item in range {
                item?;
                page.more += 1;
            }
            return Ok(page);
        }
        for (scanned, item) in range.enumerate() {
            if scanned as u64 >= scan {
                page.more_at_least = true;
                break;
            }
            let (k, v) = item?;
            if q.matches(&decode(&k, &v)?) {
                page.more += 1;
            }
        }
        Ok(page)
    }
}
