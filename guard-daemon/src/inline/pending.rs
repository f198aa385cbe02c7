//! The log records of passed requests waiting for the upstream's answer (the reverse proxy
//! calls [`super::Gate::finished`] with its status): a record is written once its status is
//! known, like a tapped request's, or after `max_age` without it. Bounded: past `cap` records
//! waiting, a record is written at once without its status. The lock is held for a map
//! operation only; records are written after it is released.
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::logs::LogRecord;

/// Records waiting at most, by default.
pub const CAP: usize = 65_536;

/// See the module doc.
pub struct Pending {
    inner: Mutex<Inner>,
    cap: usize,
    max_age: Duration,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, (Instant, LogRecord)>,
    /// Ids in the order they came (ids already finished are skipped when met).
    order: VecDeque<(Instant, String)>,
}

impl Pending {
    #[must_use]
    pub fn new(cap: usize, max_age: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
            max_age,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `record` (request `id`) until [`Pending::finish`]; returns what is to be written
    /// now: records that waited past `max_age`, and `record` itself when `cap` are waiting.
    pub fn hold(&self, id: String, record: LogRecord, now: Instant) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let mut inner = self.inner();
        if inner.order.len() > self.cap * 2 {
            // Mostly ids already finished: keep those still waiting (amortised over `cap` holds).
            let Inner { records, order } = &mut *inner;
            order.retain(|(_, id)| records.contains_key(id));
        }
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.max_age {
                break;
            }
            if let Some((_, old)) = inner.order.pop_front()
                && let Some((_, r)) = inner.records.remove(&old)
            {
                out.push(r);
            }
        }
        if inner.records.len() >= self.cap {
            out.push(record);
        } else {
            inner.order.push_back((now, id.clone()));
            inner.records.insert(id, (now, record));
        }
        out
    }

    /// The record of `id` with the upstream's `status` and the time since it was held, if it
    /// is still waiting.
    pub fn finish(&self, id: &str, status: u16, now: Instant) -> Option<LogRecord> {
        let (at, mut record) = self.inner().records.remove(id)?;
        record.status = Some(status);
        record.latency_ms = Some(now.duration_since(at).as_secs_f64() * 1000.0);
        Some(record)
    }

    /// Every record still waiting (at shutdown).
    pub fn drain(&self) -> Vec<LogRecord> {
        let mut inner = self.inner();
        inner.order.clear();
        inner.records.drain().map(|(_, (_, r))| r).collect()
    }

    /// Records waiting now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner().records.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> LogRecord {
        LogRecord {
            time: Duration::from_secs(1),
            client: "192.0.2.1".parse().unwrap(),
            trust: crate::tap::Trust::Verified,
            user: None,
            method: "GET".into(),
            path: path.into(),
            query: None,
            status: None,
            latency_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            user_agent: None,
            host: None,
            blocked: false,
            reason: None,
            truncated: false,
            mode: crate::store::logs::Mode::Inline,
            request_id: None,
        }
    }

    #[test]
    fn a_finished_request_gets_its_status_and_latency() {
        let p = Pending::new(8, Duration::from_mins(1));
        let t = Instant::now();
        assert!(p.hold("a".into(), rec("/a"), t).is_empty());
        let r = p
            .finish("a", 502, t + Duration::from_millis(30))
            .expect("held");
        assert_eq!(r.status, Some(502));
        assert!((r.latency_ms.unwrap() - 30.0).abs() < 0.01);
        assert!(p.finish("a", 200, t).is_none(), "finished twice");
        assert!(p.is_empty());
    }

    #[test]
    fn records_never_finished_are_written_after_max_age() {
        let p = Pending::new(8, Duration::from_secs(10));
        let t = Instant::now();
        assert!(p.hold("a".into(), rec("/a"), t).is_empty());
        assert!(
            p.hold("b".into(), rec("/b"), t + Duration::from_secs(5))
                .is_empty()
        );
        let out = p.hold("c".into(), rec("/c"), t + Duration::from_secs(11));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/a");
        assert_eq!(out[0].status, None);
        assert_eq!(p.len(), 2);
        assert_eq!(p.drain().len(), 2);
        assert!(p.is_empty());
    }

    #[test]
    fn past_the_cap_a_record_is_written_at_once_and_order_stays_bounded() {
        let p = Pending::new(2, Duration::from_mins(1));
        let t = Instant::now();
        assert!(p.hold("a".into(), rec("/a"), t).is_empty());
        assert!(p.hold("b".into(), rec("/b"), t).is_empty());
        let out = p.hold("c".into(), rec("/c"), t);
        assert_eq!(
            out.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["/c"]
        );
        // Finished ids leave stale entries in the order; they are dropped as it grows.
        for i in 0..100 {
            let id = format!("x{i}");
            let _ = p.finish("a", 200, t);
            let _ = p.finish("b", 200, t);
            let _ = p.hold(id.clone(), rec("/x"), t);
            let _ = p.finish(&id, 200, t);
        }
        assert!(p.inner().order.len() <= 5, "{}", p.inner().order.len());
    }
}
