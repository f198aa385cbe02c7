//! The daily report's figures: one pass over one local day's log records, in bounded memory.
//!
//! The caller gives the day as a window of wall-clock time ([`Window`]: its start and end since
//! the epoch, 23 or 25 hours long on a DST day, which the caller works out for its time zone)
//! and feeds records one at a time to a [`DayAggregate`]; nothing is kept per record. Memory is
//! bounded by the latency histogram (a fixed ~140 KB, see [`latency`]), the endpoints and
//! block reasons held (at most [`Limits`]; past it they are counted together as `(other)`) and
//! one counter triple per hour.
//!
//! Figures, as the seed's report had them and more: total requests, 4xx and 5xx and their
//! share of the total, the mean latency and its p50/p95/p99 (nearest rank, to within 1/512),
//! blocked requests by reason, status classes, the top 5 slowest endpoints (by mean latency)
//! and the top 5 most hit, grouped by normalised path ([`path`]), and an hourly series of
//! requests, blocked and errors (5xx), and the top offenders (addresses or users with the most
//! blocked requests, counted in bounded memory by [`top`]).
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

pub mod latency;
pub mod path;
pub mod top;

#[cfg(test)]
mod tests;

/// How many endpoints the top lists show.
pub const TOP: usize = 5;

/// How many offenders the report names.
pub const TOP_OFFENDERS: usize = 10;

/// What stands for the endpoints and reasons past [`Limits`].
pub const OTHER: &str = "(other)";

/// One log record, as much of it as the report reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry<'a> {
    /// When the request came, since the Unix epoch.
    pub time: Duration,
    /// The path, without the query.
    pub path: &'a str,
    /// `None` when no response was seen.
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub blocked: bool,
    pub reason: Option<&'a str>,
    /// Who a blocked request is held against (its user, else its address, as text), for the
    /// top offenders.
    pub offender: Option<&'a str>,
}

/// The day: `[start, end)` since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

impl Window {
    /// Hours in the window (23, 24 or 25 for a local day), the last one possibly partial.
    #[must_use]
    pub fn hours(&self) -> usize {
        let secs = self.end.saturating_sub(self.start).as_secs();
        secs.div_ceil(3600) as usize
    }

    /// Whether `t` is inside.
    #[must_use]
    pub fn contains(&self, t: Duration) -> bool {
        t >= self.start && t < self.end
    }
}

/// The bounds on what one report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct endpoints (normalised paths) kept; later ones count as [`OTHER`].
    pub max_endpoints: usize,
    /// Distinct block reasons kept; later ones count as [`OTHER`].
    pub max_reasons: usize,
    /// Offenders held to find the top ones (see [`top`]: exact below it).
    pub max_offenders: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_endpoints: 10_000,
            max_reasons: 1_000,
            max_offenders: 1_000,
        }
    }
}

/// One endpoint's figures while the day is read.
#[derive(Debug, Clone, Copy, Default)]
struct EndpointAcc {
    hits: u64,
    latency_us: u128,
    latency_n: u64,
}

/// One hour's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hour {
    /// The hour's start, seconds since the Unix epoch.
    pub start: u64,
    pub requests: u64,
    pub blocked: u64,
    /// Responses with a 5xx status.
    pub errors: u64,
}

/// The day's figures while records come in.
#[derive(Debug)]
pub struct DayAggregate {
    window: Window,
    limits: Limits,
    total: u64,
    /// `None`, 1xx, 2xx, 3xx, 4xx, 5xx, other (a status outside 100–599).
    classes: [u64; 7],
    blocked: u64,
    reasons: HashMap<String, u64>,
    offenders: top::SpaceSaving,
    latency: latency::Histogram,
    endpoints: HashMap<String, EndpointAcc>,
    other: EndpointAcc,
    hours: Vec<Hour>,
    outside: u64,
    /// The current record's normalised path (one allocation for the whole day).
    scratch: String,
}

/// The status class names, in the order of `DayAggregate::classes`.
const CLASSES: [&str; 7] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn class(status: Option<u16>) -> usize {
    match status {
        None => 0,
        Some(s @ 100..=599) => usize::from(s / 100),
        Some(_) => 6,
    }
}

impl DayAggregate {
    #[must_use]
    pub fn new(window: Window, limits: Limits) -> Self {
        let hours = (0..window.hours())
            .map(|h| Hour {
                start: window.start.as_secs() + h as u64 * 3600,
                ..Hour::default()
            })
            .collect();
        Self {
            window,
            limits,
            total: 0,
            classes: [0; 7],
            blocked: 0,
            reasons: HashMap::new(),
            offenders: top::SpaceSaving::new(limits.max_offenders),
            latency: latency::Histogram::default(),
            endpoints: HashMap::new(),
            other: EndpointAcc::default(),
            hours,
            outside: 0,
            scratch: String::new(),
        }
    }

    /// Counts one record; a record outside the window is only counted as such (`false`).
    pub fn add(&mut self, e: &Entry<'_>) -> bool {
        if !self.window.contains(e.time) {
            self.outside += 1;
            return false;
        }
        self.total += 1;
        let c = class(e.status);
        self.classes[c] += 1;
        let hour = (e.time.saturating_sub(self.window.start).as_secs() / 3600) as usize;
        let last = self.hours.len() - 1;
        let h = &mut self.hours[hour.min(last)];
        h.requests += 1;
        h.errors += u64::from(c == 5);
        if e.blocked {
            self.blocked += 1;
            if let Some(o) = e.offender {
                self.offenders.add(o);
            }
            h.blocked += 1;
            let reason = e.reason.unwrap_or("");
            if let Some(n) = self.reasons.get_mut(reason) {
                *n += 1;
            } else if self.reasons.len() < self.limits.max_reasons {
                self.reasons.insert(reason.to_owned(), 1);
            } else {
                *self.reasons.entry(OTHER.to_owned()).or_default() += 1;
            }
        }
        let micros = e
            .latency_ms
            .filter(|l| l.is_finite() && *l >= 0.0)
            .map(|l| (l * 1000.0).round() as u64);
        if let Some(us) = micros {
            self.latency.record(us);
        }
        path::normalise_into(e.path, &mut self.scratch);
        let acc = if self.endpoints.contains_key(self.scratch.as_str()) {
            self.endpoints
                .get_mut(self.scratch.as_str())
                .unwrap_or(&mut self.other)
        } else if self.endpoints.len() < self.limits.max_endpoints {
            self.endpoints.entry(self.scratch.clone()).or_default()
        } else {
            &mut self.other
        };
        acc.hits += 1;
        if let Some(us) = micros {
            acc.latency_us += u128::from(us);
            acc.latency_n += 1;
        }
        true
    }

    /// The day's figures.
    #[must_use]
    pub fn finish(self) -> DayReport {
        let share = |n: u64| {
            if self.total == 0 {
                0.0
            } else {
                n as f64 / self.total as f64
            }
        };
        let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
        let mut reasons: Vec<Count> = self
            .reasons
            .into_iter()
            .map(|(name, count)| Count { name, count })
            .collect();
        reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        let stats: Vec<EndpointStat> = self
            .endpoints
            .into_iter()
            .map(|(path, a)| EndpointStat {
                path,
                hits: a.hits,
                mean_latency_ms: (a.latency_n > 0)
                    .then(|| a.latency_us as f64 / a.latency_n as f64 / 1000.0),
            })
            .collect();
        let mut most_hit = stats.clone();
        most_hit.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.path.cmp(&b.path)));
        most_hit.truncate(TOP);
        let mut slowest: Vec<EndpointStat> = stats
            .into_iter()
            .filter(|s| s.mean_latency_ms.is_some())
            .collect();
        slowest.sort_by(|a, b| {
            b.mean_latency_ms
                .partial_cmp(&a.mean_latency_ms)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.path.cmp(&b.path))
        });
        slowest.truncate(TOP);
        DayReport {
            start: self.window.start.as_secs(),
            end: self.window.end.as_secs(),
            total: self.total,
            status_4xx: self.classes[4],
            status_5xx: self.classes[5],
            share_4xx: share(self.classes[4]),
            share_5xx: share(self.classes[5]),
            blocked: self.blocked,
            blocked_by_reason: reasons,
            latency_count: self.latency.count(),
            mean_latency_ms: self.latency.mean().map(|us| us / 1000.0),
            p50_ms: ms(self.latency.percentile(50.0)),
            p95_ms: ms(self.latency.percentile(95.0)),
            p99_ms: ms(self.latency.percentile(99.0)),
            status_classes: CLASSES
                .iter()
                .zip(self.classes)
                .map(|(n, c)| ((*n).to_owned(), c))
                .collect(),
            slowest,
            most_hit,
            other_endpoint_hits: self.other.hits,
            hourly: self.hours,
            outside: self.outside,
            top_offenders: self.offenders.top(TOP_OFFENDERS),
        }
    }
}

/// A name and how often it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub name: String,
    pub count: u64,
}

/// One endpoint in a top list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStat {
    /// The normalised path (`/users/{id}`).
    pub path: String,
    pub hits: u64,
    /// Over the requests with a latency; `None` when none had one.
    pub mean_latency_ms: Option<f64>,
}

/// One day's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayReport {
    /// The window, seconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    pub total: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Of the total (0 without requests).
    pub share_4xx: f64,
    pub share_5xx: f64,
    pub blocked: u64,
    /// Most frequent first, then by name; a record without a reason counts under `""`.
    pub blocked_by_reason: Vec<Count>,
    /// Requests with a latency (the percentiles are over these).
    pub latency_count: u64,
    pub mean_latency_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// `none` (no response seen), `1xx` … `5xx`, `other`.
    pub status_classes: BTreeMap<String, u64>,
    /// By mean latency, slowest first (ties by path); at most [`TOP`].
    pub slowest: Vec<EndpointStat>,
    /// By requests, most first (ties by path); at most [`TOP`].
    pub most_hit: Vec<EndpointStat>,
    /// Requests to endpoints past [`Limits::max_endpoints`], not in the top lists.
    pub other_endpoint_hits: u64,
    pub hourly: Vec<Hour>,
    /// Records given that were outside the window (not counted anywhere else).
    pub outside: u64,
    /// The addresses or users with the most blocked requests, most first; at most
    /// [`TOP_OFFENDERS`].
    pub top_offenders: Vec<top::Top>,
}
