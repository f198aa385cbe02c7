//! Sources proven to be really talking: the addresses whose TCP handshake (or in-sequence
//! exchange) the HTTP tap saw recently. A rate event names a packet's source address, which
//! anyone can forge; it becomes a ban only for a source found here (see `xdp.rate_ban`), so a
//! spoofed flood cannot get its victim banned.
//!
//! Bounded and cheap: two generations of a set. An address is remembered at least
//! `window / 2` after it was last verified and at most `window`; when the current generation
//! holds `cap / 2` addresses it becomes the previous one early (a flood of real handshakes
//! shortens the memory, never grows it).
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a verified source is remembered (at least half of it).
pub const WINDOW: Duration = Duration::from_mins(10);
/// Most addresses remembered.
pub const CAP: usize = 65_536;

/// See the module documentation.
#[derive(Debug)]
pub struct VerifiedSources {
    window: Duration,
    cap: usize,
    gens: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    current: HashSet<IpAddr>,
    previous: HashSet<IpAddr>,
    since: Instant,
}

impl Default for VerifiedSources {
    fn default() -> Self {
        Self::new(WINDOW, CAP, Instant::now())
    }
}

impl VerifiedSources {
    #[must_use]
    pub fn new(window: Duration, cap: usize, now: Instant) -> Self {
        Self {
            window,
            cap: cap.max(2),
            gens: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                since: now,
            }),
        }
    }

    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Generations> {
        let mut g = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        let age = now.saturating_duration_since(g.since);
        if age >= self.window {
            g.current.clear();
            g.previous.clear();
            g.since = now;
        } else if age >= self.window / 2 || g.current.len() >= self.cap / 2 {
            g.previous = std::mem::take(&mut g.current);
            g.since = now;
        }
        g
    }

    /// Records sources verified at `now`.
    pub fn insert_all(&self, now: Instant, sources: impl IntoIterator<Item = IpAddr>) {
        let mut g = self.lock(now);
        for ip in sources {
            if g.current.len() >= self.cap / 2 {
                g.previous = std::mem::take(&mut g.current);
                g.since = now;
            }
            g.current.insert(ip);
        }
    }

    /// Whether `ip` was verified recently (see the module documentation).
    #[must_use]
    pub fn contains(&self, now: Instant, ip: IpAddr) -> bool {
        let g = self.lock(now);
        g.current.contains(&ip) || g.previous.contains(&ip)
    }

    /// Addresses remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        let g = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        g.current.len() + g.previous.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_source_is_remembered_at_least_half_the_window_and_at_most_the_window() {
        let t0 = Instant::now();
        let w = Duration::from_mins(10);
        let v = VerifiedSources::new(w, 1000, t0);
        v.insert_all(t0, [ip("192.0.2.1")]);
        assert!(v.contains(t0, ip("192.0.2.1")));
        assert!(!v.contains(t0, ip("192.0.2.2")));
        assert!(v.contains(t0 + Duration::from_mins(4), ip("192.0.2.1")));
        // Rotated at 5 min: still in the previous generation.
        assert!(v.contains(t0 + Duration::from_mins(5), ip("192.0.2.1")));
        assert!(v.contains(t0 + Duration::from_mins(9), ip("192.0.2.1")));
        // Rotated again at 10 min: gone.
        assert!(!v.contains(t0 + Duration::from_mins(10), ip("192.0.2.1")));
        // Verified again later: remembered again.
        v.insert_all(t0 + Duration::from_mins(11), [ip("192.0.2.1")]);
        assert!(v.contains(t0 + Duration::from_mins(12), ip("192.0.2.1")));
        // A long quiet spell forgets everything at once.
        assert!(!v.contains(t0 + Duration::from_hours(2), ip("192.0.2.1")));
    }

    #[test]
    fn memory_is_bounded_by_the_cap() {
        let t0 = Instant::now();
        let v = VerifiedSources::new(Duration::from_mins(10), 100, t0);
        v.insert_all(
            t0,
            (0..=255u8).flat_map(|a| (0..=255u8).map(move |b| IpAddr::from([10, 0, a, b]))),
        );
        assert!(v.len() <= 100, "{} remembered", v.len());
        // The newest are kept.
        assert!(v.contains(t0, IpAddr::from([10, 0, 255, 255])));
        assert!(!v.contains(t0, IpAddr::from([10, 0, 0, 0])));
    }
}
