//! Per-client state: fixed-size bucketed counters for the rate and error windows, a ring of the
//! last requests (path hash, numeric id, probe flag) in time order, leaky buckets for the probing
//! scenarios and block strikes, and a few recent paths as text for the AI and the evidence.
//! Times are whole seconds since the Unix epoch (`u32`, good until 2106).
use std::collections::VecDeque;

/// Counts per bucket of `unit` seconds over the last `N` buckets (the current one included):
/// a sliding window with the granularity of one bucket.
#[derive(Debug, Clone)]
pub struct Buckets<const N: usize> {
    /// Index (time / unit) of the newest bucket.
    head: u32,
    counts: [u16; N],
}

impl<const N: usize> Buckets<N> {
    const fn new() -> Self {
        Self {
            head: 0,
            counts: [0; N],
        }
    }

    /// Moves the window forward to bucket `index`, clearing the buckets it passes. An index in
    /// the past (an event out of order) counts in the newest bucket.
    fn advance(&mut self, index: u32) {
        if index <= self.head {
            return;
        }
        let gap = index - self.head;
        if gap as usize >= N {
            self.counts = [0; N];
        } else {
            for i in self.head + 1..=index {
                self.counts[i as usize % N] = 0;
            }
        }
        self.head = index;
    }

    /// Adds one at bucket `index`.
    pub fn add(&mut self, index: u32) {
        self.advance(index);
        let slot = &mut self.counts[self.head as usize % N];
        *slot = slot.saturating_add(1);
    }

    /// The count over the window ending at bucket `index`.
    pub fn sum(&mut self, index: u32) -> u32 {
        self.advance(index);
        self.counts.iter().map(|&c| u32::from(c)).sum()
    }
}

/// A leaky bucket: each hit adds one, one leaks out every `leak` whole seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leaky {
    level: u32,
    /// When the next leak is counted from.
    at: u32,
}

impl Leaky {
    /// Adds a hit at `t` and returns the level after it.
    pub fn hit(&mut self, t: u32, leak_secs: u32) -> u32 {
        let leak = leak_secs.max(1);
        if self.level > 0 && t > self.at {
            let leaked = (t - self.at) / leak;
            self.level = self.level.saturating_sub(leaked);
            self.at += leaked * leak;
        }
        if self.level == 0 {
            self.at = t;
        }
        self.level += 1;
        self.level
    }

    /// Empties the bucket (after it made a ban).
    pub fn reset(&mut self) {
        self.level = 0;
    }
}

/// The request has a trailing numeric id.
pub const HAS_ID: u8 = 1;
/// The request was answered 400, 403 or 404 (probing).
pub const PROBE: u8 = 2;

/// One remembered request (static assets are not remembered).
#[derive(Debug, Clone, Copy, Default)]
pub struct Entry {
    pub t: u32,
    /// Keyed hash of the raw path.
    pub path: u32,
    /// Low 32 bits of the trailing id.
    pub id: u32,
    /// Keyed hash of the path before the id.
    pub prefix: u16,
    pub flags: u8,
}

/// The last `capacity` entries, oldest overwritten first.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: Box<[Entry]>,
    /// Where the next entry goes.
    next: u8,
    len: u8,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            entries: vec![Entry::default(); capacity.clamp(1, 255)].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    fn push(&mut self, e: Entry) {
        let cap = self.entries.len();
        self.entries[usize::from(self.next)] = e;
        self.next = ((usize::from(self.next) + 1) % cap) as u8;
        self.len = (usize::from(self.len) + 1).min(cap) as u8;
    }

    /// Entries from oldest to newest.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        let cap = self.entries.len();
        let start = (usize::from(self.next) + cap - usize::from(self.len)) % cap;
        (0..usize::from(self.len)).map(move |i| &self.entries[(start + i) % cap])
    }

    /// Entries newer than `window` seconds before `t`, oldest first.
    pub fn within(&self, t: u32, window: u32) -> impl DoubleEndedIterator<Item = &Entry> {
        self.iter().filter(move |e| e.t.saturating_add(window) > t)
    }

    /// Distinct paths among the entries within `window` having all of `flags`.
    pub fn distinct(&self, t: u32, window: u32, flags: u8) -> u32 {
        let mut seen = [0u32; 255];
        let mut n = 0;
        for e in self.within(t, window).filter(|e| e.flags & flags == flags) {
            seen[n] = e.path;
            n += 1;
        }
        let seen = &mut seen[..n];
        seen.sort_unstable();
        let mut distinct = 0;
        for (i, p) in seen.iter().enumerate() {
            if i == 0 || seen[i - 1] != *p {
                distinct += 1;
            }
        }
        distinct
    }

    /// The longest run of ids each one above (or each one below) the previous, in time order,
    /// among the entries within `window` that share the prefix of the newest id. Repeats of the
    /// same id (a reload) neither extend nor break a run.
    pub fn sequential_run(&self, t: u32, window: u32) -> u32 {
        let Some(newest) = self.within(t, window).rev().find(|e| e.flags & HAS_ID != 0) else {
            return 0;
        };
        let prefix = newest.prefix;
        let mut best = 0;
        let mut run = 0u32;
        let mut dir = 0i8;
        let mut prev: Option<u32> = None;
        for e in self
            .within(t, window)
            .filter(|e| e.flags & HAS_ID != 0 && e.prefix == prefix)
        {
            let step = prev.map(|p| {
                if e.id == p.wrapping_add(1) {
                    1
                } else if e.id == p.wrapping_sub(1) {
                    -1
                } else if e.id == p {
                    0
                } else {
                    2
                }
            });
            match step {
                None | Some(2) => {
                    run = 1;
                    dir = 0;
                }
                Some(0) => {}
                Some(s) if dir == 0 || dir == s => {
                    run += 1;
                    dir = s;
                }
                Some(s) => {
                    run = 2;
                    dir = s;
                }
            }
            prev = Some(e.id);
            best = best.max(run);
        }
        best
    }
}

/// Everything the engine keeps about one client.
#[derive(Debug, Clone)]
pub struct ClientState {
    /// Requests of any kind per second, last 10 s (the flood rule).
    pub all_10s: Buckets<10>,
    /// Non-static requests per second, last 10 s.
    pub req_10s: Buckets<10>,
    /// Non-static requests per 10 s, last 2 min.
    pub req_2min: Buckets<12>,
    /// Non-static 4xx/5xx answers per 10 s, last 2 min.
    pub err_2min: Buckets<12>,
    /// Non-static requests per hour, last 24 h (the grace period).
    pub req_24h: Buckets<24>,
    pub ring: Ring,
    /// Recent non-static paths (cut) with their time, oldest first.
    pub samples: VecDeque<(u32, Box<str>)>,
    pub last_seen: u32,
    /// First request after a silence of at least `idle_gap`; 0 = none.
    pub resumed_at: u32,
    pub sensitive: Leaky,
    pub backdoor: Leaky,
    pub traversal: Leaky,
    pub brute_force: Leaky,
    pub strikes: Leaky,
    /// Last request that did harm (a sensitive file, backdoor or traversal, or a probe among
    /// several): the client's rate counts for a minute after it. 0 = never.
    pub harm_at: u32,
    /// Last triage; 0 = never.
    pub last_triage: u32,
    /// The client's ban lasts until then: the shell confirmed it is enforced (or, in shadow
    /// mode, the engine decided it).
    pub banned_until: u32,
    /// The ban ordered and not yet confirmed (or failed: ordered again on the next request).
    pub order: Option<Box<Order>>,
    /// A request of this client named its user without proof (`trust_unverified_users` keys
    /// such clients by user too): the user is then never banned, only the address, since a
    /// claim can name anyone.
    pub unverified_user_seen: bool,
}

/// A ban the engine ordered, kept until the shell says how it went, so that an order that was
/// dropped or failed can be given again.
#[derive(Debug, Clone)]
pub struct Order {
    /// When it was (last) ordered.
    pub at: u32,
    /// The shell reported that it could not enforce it (or the queue was full).
    pub failed: bool,
    pub target: crate::net::Net,
    pub ttl: std::time::Duration,
    pub reason: String,
    pub evidence: Box<super::Evidence>,
    /// The verified user banned with the address.
    pub user: Option<String>,
}

impl ClientState {
    pub fn new(history: usize) -> Self {
        Self {
            all_10s: Buckets::new(),
            req_10s: Buckets::new(),
            req_2min: Buckets::new(),
            err_2min: Buckets::new(),
            req_24h: Buckets::new(),
            ring: Ring::new(history),
            samples: VecDeque::new(),
            last_seen: 0,
            resumed_at: 0,
            sensitive: Leaky::default(),
            backdoor: Leaky::default(),
            traversal: Leaky::default(),
            brute_force: Leaky::default(),
            strikes: Leaky::default(),
            harm_at: 0,
            last_triage: 0,
            banned_until: 0,
            order: None,
            unverified_user_seen: false,
        }
    }

    /// Records a request at `t`: `entry` is `None` for a static asset.
    pub fn record(&mut self, t: u32, idle_gap: u32, entry: Option<Entry>, error: bool) {
        if self.last_seen != 0 && t.saturating_sub(self.last_seen) >= idle_gap {
            self.resumed_at = t;
        }
        self.last_seen = self.last_seen.max(t);
        self.all_10s.add(t);
        if let Some(entry) = entry {
            self.req_10s.add(t);
            self.req_2min.add(t / 10);
            if error {
                self.err_2min.add(t / 10);
            }
            self.req_24h.add(t / 3600);
            self.ring.push(entry);
        }
    }

    /// Keeps `path` as a sample, at most `keep` of them.
    pub fn sample(&mut self, t: u32, path: &str, keep: usize) {
        if keep == 0 {
            return;
        }
        if self.samples.back().is_some_and(|(_, p)| **p == *path) {
            if let Some(last) = self.samples.back_mut() {
                last.0 = t;
            }
            return;
        }
        while self.samples.len() >= keep {
            self.samples.pop_front();
        }
        self.samples.push_back((t, path.into()));
    }

    /// Sample paths newer than `window` seconds, oldest first.
    pub fn recent_paths(&self, t: u32, window: u32) -> Vec<String> {
        self.samples
            .iter()
            .filter(|(at, _)| at.saturating_add(window) > t)
            .map(|(_, p)| p.to_string())
            .collect()
    }

    /// Bytes this state owns on the heap (ring and samples), for size accounting.
    pub fn heap_bytes(&self) -> usize {
        self.ring.entries.len() * size_of::<Entry>()
            + self.samples.capacity() * size_of::<(u32, Box<str>)>()
            + self.samples.iter().map(|(_, p)| p.len()).sum::<usize>()
    }
}
