//! User bans: sled's `user_bans` tree, their expiry deadlines and the [`UserLookup`] the
//! per-request paths read, all owned by the ban owner thread like address bans.
//!
//! A user ban has no XDP side (a packet carries no user): it is enforced per request, by the
//! inline proxy and the forward-auth endpoint, which ask [`UserLookup::is_banned`]. The owner
//! changes the lookup as it applies each command (before the batch's flush: like a ban that is
//! in the XDP maps before it is on disk, a user ban is enforced as soon as it is made), and
//! ends timed bans on the monotonic clock, in the lookup and the store together.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use guard_core::expiry::{mono_deadline, shift, wall_of};
use guard_core::tap::identity::check_user_id;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{BanError, Bans, Origin};
use crate::clock::{mono_ns, now_ms};
use crate::net::Net;
use crate::store::{StoreError, UserBanRecord};

/// A request to ban a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBanRequest {
    /// The user id (checked: not empty, at most 256 bytes, no control characters).
    pub id: String,
    /// `None` = the configured default (`bans.default_ttl`); `Some(ZERO)` = permanent.
    pub ttl: Option<Duration>,
    pub reason: String,
    pub origin: Origin,
    /// The address banned together with the user (engine bans), shown next to it.
    pub addr: Option<Net>,
}

/// What [`UserLookup::is_banned`] answers for a banned user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBanned {
    /// The ban's reason, as stored.
    pub reason: Arc<str>,
    /// Wall-clock ms since the epoch when the ban ends; `None` = permanent.
    pub expires_at: Option<u64>,
    /// Monotonic deadline (ns) at which the ban ends; 0 = permanent.
    deadline: u64,
}

/// The banned users, for the per-request paths (the inline proxy, the forward-auth endpoint):
/// a read lock on a hash map, never a message to the owner, so a request never waits for
/// the owner or the disk.
///
/// Get one from [`super::BanHandle::users`]; it is cheap to clone (one `Arc`), and every clone
/// sees the owner's changes at once. Only the owner writes it, for a few microseconds per
/// change; readers share the lock.
#[derive(Debug, Clone, Default)]
pub struct UserLookup {
    map: Arc<RwLock<HashMap<Box<str>, UserBanned>>>,
}

impl UserLookup {
    /// The ban of user `id`, if it is banned now. A ban whose deadline has passed is not
    /// reported, even before the owner's sweep removes it. Any string can be asked (an id
    /// over 256 bytes or with control characters is never banned, so it answers `None`).
    #[must_use]
    pub fn is_banned(&self, id: &str) -> Option<UserBanned> {
        self.is_banned_at(id, mono_ns())
    }

    /// [`UserLookup::is_banned`] at the monotonic time `mono` (ns).
    #[must_use]
    pub fn is_banned_at(&self, id: &str, mono: u64) -> Option<UserBanned> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(id)
            .filter(|b| b.deadline == 0 || b.deadline > mono)
            .cloned()
    }

    /// Users banned (including any whose deadline passed since the last sweep).
    #[must_use]
    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no user is banned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, id: &str, reason: &str, expires_at: Option<u64>, deadline: u64) {
        let entry = UserBanned {
            reason: reason.into(),
            expires_at,
            deadline,
        };
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.into(), entry);
    }

    fn remove(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn clear(&self) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Timed user bans by monotonic deadline (ns), soonest first.
#[derive(Debug, Default)]
pub(super) struct UserSchedule {
    by_time: BTreeSet<(u64, Box<str>)>,
    by_id: HashMap<Box<str>, u64>,
}

impl UserSchedule {
    fn insert(&mut self, id: &str, deadline: u64) {
        if let Some(old) = self.by_id.insert(id.into(), deadline) {
            self.by_time.remove(&(old, id.into()));
        }
        self.by_time.insert((deadline, id.into()));
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_time.remove(&(old, id.into()));
        }
    }

    pub(super) fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(d, _)| *d)
    }

    fn pop_due(&mut self, mono: u64) -> Vec<Box<str>> {
        let mut due = Vec::new();
        while let Some((d, _)) = self.by_time.first()
            && *d <= mono
        {
            if let Some((_, id)) = self.by_time.pop_first() {
                self.by_id.remove(&id);
                due.push(id);
            }
        }
        due
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_id.iter().map(|(id, d)| (&**id, *d))
    }

    fn clear(&mut self) {
        self.by_time.clear();
        self.by_id.clear();
    }
}

/// The user bans' part of the owner's state.
#[derive(Debug, Default)]
pub(super) struct Users {
    pub(super) lookup: UserLookup,
    pub(super) deadlines: UserSchedule,
}

impl Bans {
    /// The lookup the per-request paths read.
    #[must_use]
    pub fn user_lookup(&self) -> UserLookup {
        self.users.lookup.clone()
    }

    /// Reads the user bans from the store into the lookup and the schedule at start, dropping
    /// those that ended while guard was stopped; `start_wall` is the wall clock timed bans are
    /// measured from and `moved` the wall-clock step to apply to their stored ends (see
    /// [`Bans::rebuild`]). Returns the count enforced.
    pub(super) fn rebuild_users(
        &mut self,
        start_wall: u64,
        moved: i64,
        mono: u64,
    ) -> Result<usize, BanError> {
        self.users.lookup.clear();
        self.users.deadlines.clear();
        let mut expired = 0usize;
        let mut live = 0usize;
        for mut ban in self.store.user_bans()? {
            if check_user_id(&ban.id).is_err() {
                warn!(id = %ban.id.escape_debug(), "skipping a stored user ban with an invalid id");
                continue;
            }
            let deadline = match ban.expires_at {
                None => 0,
                Some(t) => {
                    let Some(d) = mono_deadline(t, start_wall, mono) else {
                        self.store.remove_user_ban(&ban.id)?;
                        expired += 1;
                        continue;
                    };
                    if moved != 0 {
                        ban.expires_at = Some(shift(t, moved));
                        self.store.put_user_ban(&ban)?;
                    }
                    self.users.deadlines.insert(&ban.id, d);
                    d
                }
            };
            self.users
                .lookup
                .insert(&ban.id, &ban.reason, ban.expires_at, deadline);
            live += 1;
        }
        if expired > 0 {
            info!(
                expired,
                "user bans that ended while guard was stopped removed"
            );
        }
        Ok(live)
    }

    /// Bans (or re-bans, replacing reason and end) a user: into the lookup at once, then into
    /// sled (not flushed: the owner flushes once per batch).
    pub fn ban_user(&mut self, req: UserBanRequest) -> Result<UserBanRecord, BanError> {
        check_user_id(&req.id).map_err(|source| BanError::BadUserId { source })?;
        let (now, mono) = (now_ms(), mono_ns());
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let record = UserBanRecord {
            id: req.id,
            reason: req.reason,
            origin: req.origin,
            created_at: now,
            expires_at: (!ttl.is_zero()).then(|| now.saturating_add(ttl_ms)),
            addr: req.addr,
        };
        let deadline = if ttl.is_zero() {
            0
        } else {
            mono.saturating_add(ttl_ms.saturating_mul(1_000_000)).max(1)
        };
        self.users
            .lookup
            .insert(&record.id, &record.reason, record.expires_at, deadline);
        if deadline == 0 {
            self.users.deadlines.remove(&record.id);
        } else {
            self.users.deadlines.insert(&record.id, deadline);
        }
        self.dirty = true;
        if let Err(source) = self.store.put_user_ban(&record) {
            return Err(BanError::UserNotSaved {
                id: record.id,
                source,
            });
        }
        Ok(record)
    }

    /// A user ban the engine orders: a ban of the user that lasts at least as long is left as
    /// it is (an operator's longer ban is not shortened); a shorter one is replaced. Returns
    /// `None` when it was left.
    pub fn order_user(&mut self, req: UserBanRequest) -> Result<Option<UserBanRecord>, BanError> {
        check_user_id(&req.id).map_err(|source| BanError::BadUserId { source })?;
        if let Some(existing) = self.store.user_ban(&req.id)? {
            let wanted = req
                .ttl
                .unwrap_or(self.default_ttl)
                .as_millis()
                .try_into()
                .map_or(u64::MAX, |ms: u64| now_ms().saturating_add(ms));
            if existing.expires_at.is_none_or(|t| t >= wanted) {
                return Ok(None);
            }
        }
        self.ban_user(req).map(Some)
    }

    /// Lifts a user ban.
    pub fn unban_user(&mut self, id: &str) -> Result<UserBanRecord, BanError> {
        self.users.lookup.remove(id);
        self.users.deadlines.remove(id);
        self.dirty = true;
        match self.store.remove_user_ban(id) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => Err(BanError::UserNotBanned { id: id.to_owned() }),
            Err(source) => Err(BanError::UserRemovalNotSaved {
                id: id.to_owned(),
                source,
            }),
        }
    }

    /// Every user ban, by id.
    pub fn list_users(&self) -> Result<Vec<UserBanRecord>, BanError> {
        Ok(self.store.user_bans()?)
    }

    /// Ends the user bans due at `mono`, in the lookup and the store; returns their ids.
    pub(super) fn sweep_users(&mut self, mono: u64) -> (Vec<Box<str>>, Option<StoreError>) {
        let mut failure = None;
        let due = self.users.deadlines.pop_due(mono);
        for id in &due {
            self.users.lookup.remove(id);
            if let Err(e) = self.store.remove_user_ban(id) {
                failure = failure.or(Some(e));
            }
        }
        (due, failure)
    }

    /// The wall clock stepped: the stored ends of timed user bans move with it (see
    /// [`Bans::follow_jump`]).
    pub(super) fn follow_jump_users(&mut self, now: u64, mono: u64) {
        let timed: Vec<(Box<str>, u64)> = self
            .users
            .deadlines
            .iter()
            .map(|(id, d)| (id.into(), d))
            .collect();
        for (id, deadline) in timed {
            let expires_at = wall_of(deadline, mono, now);
            let rebased = self.store.user_ban(&id).and_then(|ban| match ban {
                Some(mut ban) => {
                    ban.expires_at = Some(expires_at);
                    self.store.put_user_ban(&ban).map(|_| ())
                }
                None => Ok(()),
            });
            match rebased {
                Ok(()) => {
                    let reason = self
                        .users
                        .lookup
                        .is_banned_at(&id, 0)
                        .map(|b| b.reason)
                        .unwrap_or_default();
                    self.users
                        .lookup
                        .insert(&id, &reason, Some(expires_at), deadline);
                }
                Err(e) => {
                    warn!(id = %id.escape_debug(), "moving the stored end of a user ban with the clock: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_answers_until_the_deadline_and_not_after() {
        let lookup = UserLookup::default();
        lookup.insert("alice", "sqli", Some(99), 1_000);
        lookup.insert("root", "manual", None, 0);
        assert_eq!(
            lookup.is_banned_at("alice", 999).unwrap().reason.as_ref(),
            "sqli"
        );
        assert_eq!(lookup.is_banned_at("alice", 1_000), None);
        assert!(lookup.is_banned_at("root", u64::MAX).is_some());
        assert_eq!(lookup.is_banned_at("bob", 0), None);
        let clone = lookup.clone();
        lookup.remove("root");
        assert_eq!(clone.is_banned_at("root", 0), None, "clones share the map");
    }

    /// What a lookup costs a request: 100,000 banned users, 4 readers, and a writer changing
    /// a ban every millisecond (as a busy owner would).
    /// `cargo test -p guard-daemon --release --lib user_lookup_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn user_lookup_cost() {
        let lookup = UserLookup::default();
        for i in 0..100_000 {
            lookup.insert(&format!("user-{i}"), "r", None, 0);
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    lookup.insert(&format!("new-{i}"), "r", None, 0);
                    i += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            let readers: Vec<_> = (0..4)
                .map(|t| {
                    let lookup = &lookup;
                    s.spawn(move || {
                        let n = 1_000_000u32;
                        let start = std::time::Instant::now();
                        let mut hits = 0u32;
                        for i in 0..n {
                            let id = if i % 2 == 0 {
                                "user-4242"
                            } else {
                                "nobody-at-all"
                            };
                            hits += u32::from(lookup.is_banned(id).is_some());
                        }
                        assert_eq!(hits, n / 2, "reader {t}");
                        start.elapsed() / n
                    })
                })
                .collect();
            for r in readers {
                println!("is_banned: {:?} per lookup", r.join().unwrap());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    #[test]
    fn the_schedule_pops_what_is_due_in_order() {
        let mut s = UserSchedule::default();
        s.insert("b", 20);
        s.insert("a", 10);
        s.insert("c", 30);
        s.insert("a", 25);
        assert_eq!(s.next(), Some(20));
        assert_eq!(s.pop_due(26), vec![Box::from("b"), Box::from("a")]);
        s.remove("c");
        assert_eq!(s.next(), None);
    }
}
