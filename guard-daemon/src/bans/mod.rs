//! Bans and the allowlist: sled's `bans` and `allow` trees, the XDP maps and the expiry
//! deadlines, owned by one thread ([`owner`]) that everything else sends typed commands to
//! through a [`BanHandle`]. [`Bans`] is that thread's state: a ban goes into the XDP maps first
//! (a ban the maps cannot hold is refused and never stored), then into sled; the owner flushes
//! sled once per batch of commands, and answers them after the flush. Timed bans end on the
//! monotonic clock, in the maps and the store together (see `guard_core::expiry`).
//!
//! User bans ([`users`]: the `user_bans` tree and the [`UserLookup`] the per-request paths
//! read) are owned by the same thread, expire the same way, and are restored at start.
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use guard_core::expiry::{ClockWatch, MAX_JUMP, mono_deadline, shift, start_reference};
use tracing::{info, warn};

use crate::clock::{format_utc, mono_ns, now_ms};
use crate::engine::Evidence;
use crate::net::Net;
use crate::protect::{ProtectList, Refusal};
use crate::store::{AllowRecord, BanRecord, Store, StoreError};
pub use crate::store::{Origin, UnknownOrigin};
use crate::xdp::{Xdp, XdpError};

mod allow;
mod expire;
mod filter;
mod lift;
pub mod lookup;
mod order;
pub mod owner;
pub mod users;

pub use filter::{BanFilter, BanSort, BanView};
pub use owner::{BanHandle, Command, Lift, Ordered, Owner};
pub use users::{UserBanRequest, UserBanned, UserLookup};

/// Errors of ban and allowlist operations.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error(
        "refusing to ban {target}: it overlaps allowlist entry {allow} (use --force to ban anyway; the allowlist still wins)"
    )]
    Allowlisted { target: Net, allow: Net },
    /// The target is, is inside or contains a protected address (see `protect`).
    #[error(transparent)]
    Protected(#[from] Refusal),
    #[error("{target} is not banned")]
    NotBanned { target: Net },
    /// The address is not banned itself, but wider bans cover it.
    #[error(
        "{target} is not banned itself, but {covering} covers it: lift that with `guard ban rm {covering}`"
    )]
    Covered { target: Net, covering: String },
    #[error("{target} is not in the allowlist")]
    NotAllowed { target: Net },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ban is enforced, but the store (disk full, I/O error) did not take it.
    #[error(
        "{target} is banned in XDP now, but the ban store could not record it ({source}); the ban is lost when guard restarts. Free disk space and restart guard: after a write error the store takes no more writes until then"
    )]
    NotSaved { target: Net, source: StoreError },
    /// Like `NotSaved`, for a batch.
    #[error(
        "{count} bans are enforced in XDP now, but the ban store could not record them ({source}); they are lost when guard restarts. Free disk space and restart guard"
    )]
    BatchNotSaved { count: usize, source: StoreError },
    /// Like `RemovalNotSaved`, for a batch.
    #[error(
        "{count} bans are lifted in XDP, but the ban store could not record the removals ({source}); they come back when guard restarts. Free disk space and restart guard"
    )]
    BatchRemovalNotSaved { count: usize, source: StoreError },
    /// The ban is lifted, but the store did not record it.
    #[error(
        "{target} is no longer banned in XDP, but the ban store could not record the removal ({source}); the ban comes back when guard restarts. Free disk space and restart guard"
    )]
    RemovalNotSaved { target: Net, source: StoreError },
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("cannot ban this user id: {source}")]
    BadUserId {
        #[source]
        source: guard_core::tap::identity::UserIdError,
    },
    #[error("user {id:?} is not banned")]
    UserNotBanned { id: String },
    /// The user ban is enforced, but the store did not take it.
    #[error(
        "user {id:?} is banned now, but the ban store could not record it ({source}); the ban is lost when guard restarts. Free disk space and restart guard"
    )]
    UserNotSaved { id: String, source: StoreError },
    /// The user ban is lifted, but the store did not record it.
    #[error(
        "user {id:?} is no longer banned, but the ban store could not record the removal ({source}); the ban comes back when guard restarts. Free disk space and restart guard"
    )]
    UserRemovalNotSaved { id: String, source: StoreError },
    /// The owner did not answer: it has stopped (guard is shutting down) or the command
    /// panicked inside it (logged).
    #[error(
        "the ban owner did not answer: guard is shutting down, or the command failed inside it (see guard's log)"
    )]
    OwnerGone,
}

/// A request to ban.
#[derive(Debug, Clone)]
pub struct BanRequest {
    pub target: Net,
    /// `None` = the configured default; `Some(ZERO)` = permanent.
    pub ttl: Option<Duration>,
    pub reason: String,
    pub origin: Origin,
    pub force: bool,
    pub evidence: Option<Evidence>,
    /// The verified user behind the client (engine orders only): banned too, with the same
    /// ttl and reason (see [`Bans::order`]).
    pub user: Option<String>,
}

/// Name of the tree of the ban owner's own facts (the heartbeat).
pub const TREE_META: &str = "meta";
/// Key of the heartbeat in [`TREE_META`]: the wall clock (ms since the epoch, big-endian u64)
/// the last time the owner swept, so that a start can tell a clock jump from time away.
pub const KEY_LAST_WALL: &[u8] = b"last_wall_ms";
/// The heartbeat is written at the first sweep after this much time since the last write, not
/// at every sweep (every 250 ms by default): each write makes sled's background flusher sync
/// the disk, and an idle daemon should not. Far finer than the one day a jump must exceed.
pub const BEAT_EVERY_MS: u64 = 10_000;

/// The wall clock (ms) the owner last saw, as stored in `store` (`None` before the first run).
pub fn heartbeat_of(store: &Store) -> Result<Option<u64>, StoreError> {
    Ok(store
        .db()
        .open_tree(TREE_META)?
        .get(KEY_LAST_WALL)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes))
}

/// Bans and allowlist, backed by sled and enforced by XDP: the owner thread's state.
pub struct Bans {
    store: Store,
    meta: sled::Tree,
    xdp: Xdp,
    default_ttl: Duration,
    /// Timed bans by monotonic deadline (ns), the same one the XDP map holds, so a sweep touches
    /// only what expires and ends the store's record when XDP stops enforcing it.
    deadlines: expire::Deadlines,
    /// The allowlist as stored (the owner is its only writer).
    allows: Vec<Net>,
    /// Never banned; also in the XDP allowlist, so a forced range ban around them spares them.
    protected: ProtectList,
    /// Bans refused because of `protected`.
    protect_refusals: u64,
    /// Sees wall-clock steps between sweeps (the stored end times are moved with them).
    clock: ClockWatch,
    /// sled was written since the last flush.
    dirty: bool,
    /// The wall clock of the last heartbeat written.
    last_beat: u64,
    /// Bans ended by expiry since start (shown by `guard stats`).
    expired: Arc<AtomicU64>,
    /// User bans: the lookup the per-request paths read and their deadlines.
    users: users::Users,
    /// New bans are offered here to be pushed to a CrowdSec LAPI (`crowdsec.machine_id`).
    feed: Option<crate::crowdsec::machine::Feed>,
}

impl Bans {
    /// Joins the store and the maps, and makes the maps match the store (dropping expired bans);
    /// `protected` is never banned, and is let through by the XDP allowlist.
    pub fn new(
        store: Store,
        xdp: Xdp,
        default_ttl: Duration,
        protected: ProtectList,
    ) -> Result<Self, BanError> {
        let meta = store.db().open_tree(TREE_META).map_err(StoreError::from)?;
        let mut bans = Self {
            store,
            meta,
            xdp,
            default_ttl,
            deadlines: expire::Deadlines::default(),
            allows: Vec::new(),
            protected,
            protect_refusals: 0,
            clock: ClockWatch::new(now_ms(), mono_ns()),
            dirty: false,
            last_beat: 0,
            expired: Arc::default(),
            users: users::Users::default(),
            feed: None,
        };
        bans.rebuild()?;
        Ok(bans)
    }

    /// The wall clock the last time the owner swept (`None` before the first run).
    pub fn heartbeat(&self) -> Result<Option<u64>, StoreError> {
        heartbeat_of(&self.store)
    }

    /// Writes the heartbeat now (at exit, so the next start measures from the last moment).
    pub fn beat_now(&mut self) -> Result<(), StoreError> {
        self.beat(now_ms())
    }

    fn beat(&mut self, wall_ms: u64) -> Result<(), StoreError> {
        // Not flushed on its own: sled's background flush takes it within half a second.
        self.meta.insert(KEY_LAST_WALL, &wall_ms.to_be_bytes())?;
        self.last_beat = wall_ms;
        Ok(())
    }

    /// Rebuilds the maps from the store; returns (bans, allowlist entries) enforced. What is
    /// left of each timed ban is measured from the heartbeat when the wall clock is more than a
    /// day past it (or behind it): such a jump is logged and not acted on.
    pub fn rebuild(&mut self) -> Result<(usize, usize), BanError> {
        let (now, mono) = (now_ms(), mono_ns());
        let heartbeat = self.heartbeat()?;
        let start = start_reference(now, heartbeat, MAX_JUMP);
        if let (Some(jump), Some(hb)) = (start.refused, heartbeat) {
            warn!(
                %jump,
                last_seen = %format_utc(hb),
                now = %format_utc(now),
                "the wall clock moved {jump} since guard last ran: not acting on it; timed bans keep \
                 what they had left then"
            );
        }
        let moved = start.shift_ms(now);
        let mut live = Vec::new();
        let mut expired = 0usize;
        self.deadlines = expire::Deadlines::default();
        let started = std::time::Instant::now();
        let mut ended = Vec::new();
        // Only each record's head is decoded (an undecodable one is skipped, logged and
        // counted); the whole record only when its stored end must move.
        for ban in self.store.ban_ends() {
            let (target, expires_at) = ban?;
            let deadline = match expires_at {
                None => 0,
                Some(t) => match mono_deadline(t, start.wall_ms, mono) {
                    None => {
                        ended.push(target);
                        expired += 1;
                        continue;
                    }
                    Some(d) => {
                        if moved != 0
                            && let Some(mut ban) = self.store.ban(&target)?
                        {
                            // Shown and stored on the clock of now, so the next start agrees.
                            ban.expires_at = Some(shift(t, moved));
                            self.store.put_ban(&ban)?;
                        }
                        d
                    }
                },
            };
            live.push((target, deadline));
        }
        for target in &ended {
            self.store.remove_ban(target)?;
        }
        if expired > 0 {
            info!(expired, "bans that ended while guard was stopped removed");
        }
        let read = started.elapsed();
        self.allows = self.store.allows()?.into_iter().map(|a| a.target).collect();
        let mut allows = self.allows.clone();
        allows.extend(
            self.protected
                .nets()
                .into_iter()
                .filter(|n| !self.allows.contains(n)),
        );
        self.xdp.reconcile(&live, &allows)?;
        self.deadlines = expire::Deadlines::from_live(&live);
        let count = live.len();
        let user_bans = self.rebuild_users(start.wall_ms, moved, mono)?;
        info!(
            user_bans,
            bans = count,
            expired,
            skipped = self.store.bad_records(),
            read_ms = read.as_millis() as u64,
            maps_ms = started.elapsed().saturating_sub(read).as_millis() as u64,
            "bans read from the store and the maps brought in line"
        );
        drop(live);
        crate::memory::give_back();
        self.beat(now)?;
        self.clock = ClockWatch::new(now, mono);
        self.store.flush()?;
        Ok((count, self.allows.len()))
    }

    /// Offers every ban made from now on to `feed` (never waiting on it).
    pub fn set_feed(&mut self, feed: crate::crowdsec::machine::Feed) {
        self.feed = Some(feed);
    }

    /// The XDP layer.
    #[must_use]
    pub fn xdp(&self) -> &Xdp {
        &self.xdp
    }

    /// The XDP layer, for the tap's ports.
    pub fn xdp_mut(&mut self) -> &mut Xdp {
        &mut self.xdp
    }

    /// Gives up the store side, keeping the XDP layer (for detaching at exit).
    #[must_use]
    pub fn into_xdp(self) -> Xdp {
        self.xdp
    }

    /// What is never banned.
    #[must_use]
    pub fn protected(&self) -> &ProtectList {
        &self.protected
    }

    /// Bans refused because they touched a protected address, since start.
    #[must_use]
    pub fn protect_refusals(&self) -> u64 {
        self.protect_refusals
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The count of bans ended by expiry, shared with the handles.
    #[must_use]
    pub fn expired_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.expired)
    }

    /// Whether sled was written since the last flush.
    #[must_use]
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Makes every write so far durable.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.dirty = false;
        self.store.flush()
    }

    /// The next monotonic deadline (ns) of a timed ban.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.deadlines.next(), self.users.deadlines.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bans (or re-bans, replacing reason and deadline) a target: into the maps first (a ban
    /// they cannot hold is refused and not stored), then into sled (not flushed: the owner
    /// flushes once per batch).
    pub fn ban(&mut self, req: BanRequest) -> Result<BanView, BanError> {
        let record = self.enforce(req)?;
        // A store that cannot write (disk full) does not undo the ban: it is enforced, and the
        // caller is told it is not saved.
        self.dirty = true;
        if let Err(source) = self.store.put_ban(&record) {
            return Err(BanError::NotSaved {
                target: record.target,
                source,
            });
        }
        Ok(self.view(record))
    }

    /// Checks a ban (protected, allowlisted) and puts it into the maps and the schedule; the
    /// record to store is returned.
    fn enforce(&mut self, req: BanRequest) -> Result<BanRecord, BanError> {
        // Only an operator can force, and only past a range that contains protected addresses.
        let force = req.force && matches!(req.origin, Origin::Cli | Origin::Import);
        if let Err(refusal) = self.protected.check(&req.target, force) {
            self.protect_refusals += 1;
            warn!(target = %req.target, origin = %req.origin, reason = %req.reason, "ban refused: {refusal}");
            return Err(refusal.into());
        }
        if !req.force
            && let Some(allow) = self.allows.iter().find(|a| a.overlaps(&req.target))
        {
            return Err(BanError::Allowlisted {
                target: req.target,
                allow: *allow,
            });
        }
        let (now, mono) = (now_ms(), mono_ns());
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let record = BanRecord {
            target: req.target,
            reason: req.reason,
            origin: req.origin,
            created_at: now,
            expires_at: (!ttl.is_zero()).then(|| now.saturating_add(ttl_ms)),
            evidence: req.evidence,
        };
        // One monotonic deadline for the map and the schedule: they end the ban together.
        let deadline = if ttl.is_zero() {
            0
        } else {
            mono.saturating_add(ttl_ms.saturating_mul(1_000_000)).max(1)
        };
        self.xdp.put_ban(&record.target, deadline)?;
        if deadline != 0 {
            // A deadline replaced here (or lifted below) stays in the schedule until it comes
            // up, then is dropped: the maps no longer hold it.
            self.deadlines.insert(record.target, deadline, &self.xdp);
        }
        if let Some(feed) = &self.feed {
            feed.offer(&record, false);
        }
        Ok(record)
    }

    /// Bans many targets. Returns per-line results: a line refused (it overlaps the allowlist,
    /// is protected, or the maps are full) or enforced but not saved is an error of its own,
    /// other errors stop the import.
    pub fn import(
        &mut self,
        reqs: Vec<BanRequest>,
    ) -> Result<Vec<Result<Net, BanError>>, BanError> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut records = Vec::with_capacity(reqs.len());
        for req in reqs {
            let target = req.target;
            match self.enforce(req) {
                Ok(record) => {
                    out.push(Ok(target));
                    records.push(record);
                }
                Err(
                    e @ (BanError::Allowlisted { .. } | BanError::Protected(_) | BanError::Xdp(_)),
                ) => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        // The records in one pass in key order (see `Store::put_bans`); the owner flushes.
        self.dirty = true;
        let count = records.len();
        let saved = self.store.put_bans(&records);
        drop(records);
        crate::memory::give_back();
        saved.map_err(|source| BanError::BatchNotSaved { count, source })?;
        Ok(out)
    }

    /// How many bans there are.
    pub fn count(&self) -> Result<usize, BanError> {
        Ok(self.store.ban_count()?)
    }

    /// The bans `filter` selects, with their counters, in its order.
    pub fn list(&self, filter: &BanFilter) -> Result<Vec<BanView>, BanError> {
        // Records in key order, decoded as they are read; a range reads only its keys.
        let records = match &filter.range {
            Some(range) => self.store.bans_within(range),
            None => self.store.ban_iter(),
        };
        let mut matching =
            records.filter(|b| b.as_ref().is_err() || b.as_ref().is_ok_and(|b| filter.matches(b)));
        let limit = filter.limit.unwrap_or(usize::MAX);
        let views = match filter.sort {
            // The store's own order: stop after the limit.
            BanSort::Addr => {
                let mut views = Vec::new();
                for b in matching.by_ref().take(limit) {
                    views.push(self.view(b?));
                }
                views
            }
            // Counters decide the order: every match needs its counters.
            BanSort::Packets => matching
                .map(|b| b.map(|b| self.view(b)))
                .collect::<Result<_, _>>()?,
            // The record decides: sort the records, read counters for those shown only.
            BanSort::Created | BanSort::Expires => {
                let mut records: Vec<BanRecord> = matching.collect::<Result<_, _>>()?;
                if filter.sort == BanSort::Created {
                    records.sort_by_key(|b| std::cmp::Reverse(b.created_at));
                } else {
                    records.sort_by_key(|b| b.expires_at.unwrap_or(u64::MAX));
                }
                records.truncate(limit);
                records.into_iter().map(|b| self.view(b)).collect()
            }
        };
        Ok(filter.arrange(views))
    }

    fn view(&self, b: BanRecord) -> BanView {
        let c = self.xdp.ban_counters(&b.target).unwrap_or_default();
        let last_hit = (c.last_hit_ns != 0).then(|| {
            let ago_ms = mono_ns().saturating_sub(c.last_hit_ns) / 1_000_000;
            now_ms().saturating_sub(ago_ms)
        });
        BanView {
            addr: b.target,
            reason: b.reason,
            origin: b.origin,
            created_at: b.created_at,
            expires_at: b.expires_at,
            packets: c.packets,
            bytes: c.bytes,
            last_hit,
            evidence: b.evidence,
        }
    }
}
