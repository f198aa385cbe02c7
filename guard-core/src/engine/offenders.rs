//! Bounded memories kept beside the client table: how often each address was banned (for ban
//! escalation) and the triages waiting for an AI verdict (for the evidence of an AI ban). Both
//! forget their oldest entries first, in O(1) amortised time (an insertion-order queue checked
//! lazily against the map).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use super::Rule;

/// A map from address to a timed value, at most `max` entries; the least recently inserted go
/// first when it is full.
#[derive(Debug)]
struct Aged<V> {
    map: HashMap<IpAddr, (u32, V)>,
    /// (time, address) in insertion order; an entry whose time no longer matches the map's is
    /// stale and skipped.
    order: VecDeque<(u32, IpAddr)>,
    max: usize,
    evicted: u64,
}

impl<V> Aged<V> {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
            evicted: 0,
        }
    }

    fn is_current(&self, at: u32, ip: IpAddr) -> bool {
        self.map.get(&ip).is_some_and(|(a, _)| *a == at)
    }

    fn insert(&mut self, ip: IpAddr, at: u32, value: V) {
        self.map.insert(ip, (at, value));
        self.order.push_back((at, ip));
        while self.map.len() > self.max {
            let Some((a, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.is_current(a, oldest) {
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        if self.order.len() > 2 * self.max + 64 {
            // Mostly stale entries: rebuild the queue from the map.
            let mut live: Vec<(u32, IpAddr)> =
                self.map.iter().map(|(ip, (at, _))| (*at, *ip)).collect();
            live.sort_unstable();
            self.order = live.into();
        }
    }

    /// Drops the entries inserted before `cutoff`.
    fn expire(&mut self, cutoff: u32) {
        while let Some(&(at, ip)) = self.order.front() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            if self.is_current(at, ip) {
                self.map.remove(&ip);
            }
        }
    }
}

/// Ban counts per address, forgotten after `memory`, at most `max` addresses (the one banned
/// longest ago is forgotten first).
#[derive(Debug)]
pub struct Offenders {
    bans: Aged<u32>,
    memory: u32,
}

impl Offenders {
    pub fn new(memory: Duration, max: usize) -> Self {
        Self {
            bans: Aged::new(max),
            memory: secs(memory),
        }
    }

    pub fn len(&self) -> usize {
        self.bans.map.len()
    }

    pub fn evicted(&self) -> u64 {
        self.bans.evicted
    }

    /// Records a ban of `ip` at `t`; returns how many bans it had before (within the memory).
    pub fn record(&mut self, ip: IpAddr, t: u32) -> u32 {
        let before = match self.bans.map.get(&ip) {
            Some((last, bans)) if t.saturating_sub(*last) < self.memory => *bans,
            _ => 0,
        };
        self.bans.insert(ip, t, before + 1);
        before
    }

    /// Forgets the last recorded ban of `ip` (the operator lifted it): its next ban is escalated
    /// as if that one had not been. Returns the bans it still has.
    pub fn forget_one(&mut self, ip: IpAddr) -> u32 {
        let Some((_, bans)) = self.bans.map.get_mut(&ip) else {
            return 0;
        };
        *bans = bans.saturating_sub(1);
        let left = *bans;
        if left == 0 {
            // Its queue entry goes stale and is skipped.
            self.bans.map.remove(&ip);
        }
        left
    }

    /// Forgets bans older than the memory.
    pub fn expire(&mut self, t: u32) {
        self.bans.expire(t.saturating_sub(self.memory));
    }

    /// Restores what an earlier run knew: `count` bans of `ip`, the last at `t`.
    pub fn restore(&mut self, ip: IpAddr, t: u32, count: u32) {
        if count > 0 {
            self.bans.insert(ip, t, count);
        }
    }
}

/// A triage sent to the AI: what the engine saw, for the evidence of the ban a BLOCK makes.
#[derive(Debug, Clone)]
pub struct PendingTriage {
    pub at: u32,
    pub key: super::table::ClientKey,
    pub score: u32,
    pub rules: Vec<Rule>,
    /// The client's window counts at the triage.
    pub counts: super::Counts,
}

/// How long a triage waits for its verdict before it is forgotten.
pub const PENDING_TTL: u32 = 15 * 60;

/// Triages waiting for a verdict, one per address, at most `max`.
#[derive(Debug)]
pub struct Pending {
    triages: Aged<PendingTriage>,
}

impl Pending {
    pub fn new(max: usize) -> Self {
        Self {
            triages: Aged::new(max),
        }
    }

    pub fn len(&self) -> usize {
        self.triages.map.len()
    }

    pub fn evicted(&self) -> u64 {
        self.triages.evicted
    }

    pub fn insert(&mut self, ip: IpAddr, p: PendingTriage) {
        self.triages.insert(ip, p.at, p);
    }

    pub fn take(&mut self, ip: IpAddr, t: u32) -> Option<PendingTriage> {
        self.triages
            .map
            .remove(&ip)
            .map(|(_, p)| p)
            .filter(|p| t.saturating_sub(p.at) < PENDING_TTL)
    }

    pub fn expire(&mut self, t: u32) {
        self.triages.expire(t.saturating_sub(PENDING_TTL));
    }
}

/// Whole seconds of `d`, saturating at `u32::MAX`.
pub fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
