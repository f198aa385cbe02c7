//! Bounded memories kept beside the client table: how often each address was banned (for ban
//! escalation) and the triages waiting for an AI verdict (for the evidence of an AI ban).
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::Rule;

/// Past bans of one address.
#[derive(Debug, Clone, Copy)]
struct Offender {
    bans: u32,
    last: u32,
}

/// Ban counts per address, forgotten after `memory`, at most `max` addresses (the one banned
/// longest ago is forgotten first).
#[derive(Debug)]
pub struct Offenders {
    map: HashMap<IpAddr, Offender>,
    memory: u32,
    max: usize,
    pub evicted: u64,
}

impl Offenders {
    pub fn new(memory: Duration, max: usize) -> Self {
        Self {
            map: HashMap::new(),
            memory: secs(memory),
            max: max.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Records a ban of `ip` at `t`; returns how many bans it had before (within the memory).
    pub fn record(&mut self, ip: IpAddr, t: u32) -> u32 {
        let memory = self.memory;
        if let Some(o) = self.map.get_mut(&ip) {
            let before = if t.saturating_sub(o.last) < memory {
                o.bans
            } else {
                0
            };
            *o = Offender {
                bans: before + 1,
                last: t,
            };
            return before;
        }
        if self.map.len() >= self.max {
            // Bans are rare next to requests: a scan for the oldest is affordable here.
            if let Some(oldest) = self.map.iter().min_by_key(|(_, o)| o.last).map(|(k, _)| *k) {
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.map.insert(ip, Offender { bans: 1, last: t });
        0
    }

    /// Forgets bans older than the memory.
    pub fn expire(&mut self, t: u32) {
        let memory = self.memory;
        self.map.retain(|_, o| t.saturating_sub(o.last) < memory);
    }
}

/// A triage sent to the AI: what the engine saw, for the evidence of the ban a BLOCK makes.
#[derive(Debug, Clone)]
pub struct PendingTriage {
    pub at: u32,
    pub key: super::table::ClientKey,
    pub score: u32,
    pub rules: Vec<Rule>,
    pub evidence: serde_json::Value,
}

/// How long a triage waits for its verdict before it is forgotten.
pub const PENDING_TTL: u32 = 15 * 60;

/// Triages waiting for a verdict, one per address, at most `max`.
#[derive(Debug)]
pub struct Pending {
    map: HashMap<IpAddr, PendingTriage>,
    max: usize,
    pub evicted: u64,
}

impl Pending {
    pub fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            max: max.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(&mut self, ip: IpAddr, p: PendingTriage) {
        if !self.map.contains_key(&ip) && self.map.len() >= self.max {
            let t = p.at;
            self.expire(t);
            if self.map.len() >= self.max
                && let Some(oldest) = self.map.iter().min_by_key(|(_, p)| p.at).map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.map.insert(ip, p);
    }

    pub fn take(&mut self, ip: IpAddr, t: u32) -> Option<PendingTriage> {
        self.map
            .remove(&ip)
            .filter(|p| t.saturating_sub(p.at) < PENDING_TTL)
    }

    pub fn expire(&mut self, t: u32) {
        self.map.retain(|_, p| t.saturating_sub(p.at) < PENDING_TTL);
    }
}

/// Whole seconds of `d`, saturating at `u32::MAX`.
pub fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
