//! When timed bans end: their monotonic deadlines, soonest first, and the sweep that ends them
//! in the maps and the store together. The deadlines are kept compact (12 bytes for an IPv4
//! address, no index by key; see `guard_core::expiry::LazySchedule`): the XDP maps hold each
//! ban's current deadline, and an entry that no longer matches them (the ban was lifted,
//! replaced or made permanent) is dropped instead of acted on.
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;

use guard_core::expiry::{Jump, LazySchedule, wall_of};
use tracing::{info, warn};

use super::{BEAT_EVERY_MS, BanError, Bans};
use crate::clock::{mono_ns, now_ms};
use crate::net::Net;
use crate::xdp::Xdp;

/// Timed bans by monotonic deadline (ns), the same one the XDP map holds.
#[derive(Default)]
pub(super) struct Deadlines {
    /// Single IPv4 addresses (most bans), keyed by the address's bits.
    v4: LazySchedule<u32>,
    /// Everything else: IPv6 addresses and ranges.
    other: LazySchedule<Net>,
}

fn v4_net(bits: u32) -> Net {
    Net::host(IpAddr::V4(Ipv4Addr::from(bits)))
}

fn v4_key(net: &Net) -> Option<u32> {
    match net.addr() {
        IpAddr::V4(a) if net.is_host() => Some(u32::from(a)),
        _ => None,
    }
}

impl Deadlines {
    /// The deadlines of `live` (target, deadline; 0 = permanent), which the maps hold.
    pub(super) fn from_live(live: &[(Net, u64)]) -> Self {
        let timed = || live.iter().filter(|(_, d)| *d != 0);
        Self {
            v4: LazySchedule::from_entries(timed().filter_map(|(n, d)| Some((v4_key(n)?, *d)))),
            other: LazySchedule::from_entries(
                timed()
                    .filter(|(n, _)| v4_key(n).is_none())
                    .map(|(n, d)| (*n, *d)),
            ),
        }
    }

    /// Notes the deadline just put into the maps for `net`.
    pub(super) fn insert(&mut self, net: Net, deadline: u64, xdp: &Xdp) {
        match v4_key(&net) {
            Some(k) => self
                .v4
                .insert(k, deadline, |k| xdp.ban_deadline(&v4_net(*k))),
            None => self.other.insert(net, deadline, |n| xdp.ban_deadline(n)),
        }
    }

    /// The soonest deadline (possibly of a ban since lifted: the sweep then finds nothing).
    pub(super) fn next(&self) -> Option<u64> {
        match (self.v4.next(), self.other.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The targets whose deadline in the maps has passed at `now_ns`.
    fn pop_due(&mut self, now_ns: u64, xdp: &Xdp) -> Vec<Net> {
        let mut due: Vec<Net> = self
            .v4
            .pop_due(now_ns, |k| xdp.ban_deadline(&v4_net(*k)))
            .into_iter()
            .map(|(k, _)| v4_net(k))
            .collect();
        due.extend(
            self.other
                .pop_due(now_ns, |n| xdp.ban_deadline(n))
                .into_iter()
                .map(|(n, _)| n),
        );
        due
    }

    /// Every timed ban with its deadline.
    fn current(&self, xdp: &Xdp) -> Vec<(Net, u64)> {
        let mut all: Vec<(Net, u64)> = self
            .v4
            .current(|k| xdp.ban_deadline(&v4_net(*k)))
            .into_iter()
            .map(|(k, d)| (v4_net(k), d))
            .collect();
        all.extend(self.other.current(|n| xdp.ban_deadline(n)));
        all
    }
}

impl Bans {
    /// Ends the bans whose monotonic deadline has passed, in the maps and the store together
    /// (not flushed: an expired ban the disk still holds is dropped at the next start anyway),
    /// writes the heartbeat, and moves stored end times along with a wall-clock step.
    pub fn sweep(&mut self) -> Result<Vec<Net>, BanError> {
        let (now, mono) = (now_ms(), mono_ns());
        let mut gone = Vec::new();
        let mut failure = None;
        for target in self.deadlines.pop_due(mono, &self.xdp) {
            // The maps first: a store that cannot write must not keep an expired ban in them
            // (the program ignores it anyway, but the counters and `ban ls` would not).
            if let Err(e) = self.xdp.remove_ban(&target) {
                failure = failure.or(Some(BanError::from(e)));
            }
            if let Err(e) = self.store.remove_ban(&target) {
                failure = failure.or(Some(BanError::from(e)));
            }
            gone.push(target);
        }
        let (users_gone, user_failure) = self.sweep_users(mono);
        for id in &users_gone {
            info!(user = %id.escape_debug(), "user ban expired");
        }
        failure = failure.or(user_failure.map(BanError::from));
        self.expired
            .fetch_add((gone.len() + users_gone.len()) as u64, Ordering::Relaxed);
        if let Some(jump) = self.clock.observe(now, mono) {
            self.follow_jump(jump, now, mono);
        }
        if now.abs_diff(self.last_beat) >= BEAT_EVERY_MS
            && let Err(e) = self.beat(now)
        {
            failure = failure.or(Some(e.into()));
        }
        failure.map_or(Ok(gone), Err)
    }

    /// The wall clock stepped while guard ran: nothing ends sooner or later (deadlines are
    /// monotonic), but the stored end times move with it, so that `ban ls` and the next start
    /// read them on the clock of now.
    fn follow_jump(&mut self, jump: Jump, now: u64, mono: u64) {
        if jump.too_big() {
            warn!(%jump, "the wall clock jumped {jump}: not acting on it (bans end on the monotonic clock)");
        } else {
            info!(%jump, "the wall clock moved {jump}; bans end on the monotonic clock");
        }
        for (target, deadline) in self.deadlines.current(&self.xdp) {
            let rebased = self.store.ban(&target).and_then(|ban| match ban {
                Some(mut ban) => {
                    ban.expires_at = Some(wall_of(deadline, mono, now));
                    self.store.put_ban(&ban).map(|_| ())
                }
                None => Ok(()),
            });
            if let Err(e) = rebased {
                warn!(%target, "moving the stored end of a ban with the clock: {e}");
            }
        }
        self.follow_jump_users(now, mono);
    }
}
