//! The ban service: every change to bans and the allowlist goes through here, first into sled
//! (the source of truth), then into the XDP maps (the cache that enforces it).
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use tracing::warn;

use crate::clock::{mono_ns, now_ms, wall_to_mono};
use crate::engine::Evidence;
use crate::net::Net;
use crate::protect::{ProtectList, Refusal};
use crate::store::{AllowRecord, BanRecord, Store, StoreError};
pub use crate::store::{Origin, UnknownOrigin};
use crate::xdp::{Xdp, XdpError};

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
}

/// Which bans `guard ban ls` shows, in what order, how many.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BanFilter {
    /// Only bans that cover this address (its exact ban and every CIDR containing it).
    pub ip: Option<IpAddr>,
    /// Only bans inside this network.
    pub range: Option<Net>,
    /// Only bans of this origin.
    pub origin: Option<Origin>,
    /// Only bans whose reason contains this text (case-insensitive).
    pub reason: Option<String>,
    pub sort: BanSort,
    /// At most this many, after sorting.
    pub limit: Option<usize>,
}

/// Order of `guard ban ls`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum BanSort {
    /// By address (IPv4 first), then prefix length.
    #[default]
    Addr,
    /// Most packets dropped first.
    Packets,
    /// Newest first.
    Created,
    /// Soonest to expire first; permanent bans last.
    Expires,
}

impl BanFilter {
    /// Whether `b` passes the filters (the order and the limit apply to the result).
    #[must_use]
    pub fn matches(&self, b: &BanRecord) -> bool {
        self.ip.is_none_or(|ip| b.target.contains(ip))
            && self
                .range
                .is_none_or(|r| r.contains(b.target.addr()) && b.target.prefix() >= r.prefix())
            && self.origin.is_none_or(|o| b.origin == o)
            && self
                .reason
                .as_deref()
                .is_none_or(|text| b.reason.to_lowercase().contains(&text.to_lowercase()))
    }

    /// Sorts and truncates the matching bans.
    #[must_use]
    pub fn arrange(&self, mut views: Vec<BanView>) -> Vec<BanView> {
        match self.sort {
            // The store's own order: family, address, prefix.
            BanSort::Addr => {}
            BanSort::Packets => views.sort_by_key(|v| std::cmp::Reverse(v.packets)),
            BanSort::Created => views.sort_by_key(|v| std::cmp::Reverse(v.created_at)),
            BanSort::Expires => views.sort_by_key(|v| v.expires_at.unwrap_or(u64::MAX)),
        }
        if let Some(n) = self.limit {
            views.truncate(n);
        }
        views
    }
}

/// A ban as shown by `guard ban ls`: the stored record joined with the XDP counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BanView {
    pub addr: Net,
    pub reason: String,
    pub origin: Origin,
    /// Wall-clock ms since the epoch.
    pub created_at: u64,
    /// Wall-clock ms since the epoch; `null` = permanent.
    pub expires_at: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Wall-clock ms of the last dropped packet; `null` = never hit.
    pub last_hit: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::engine::deserialize_stored"
    )]
    pub evidence: Option<Evidence>,
}

/// Bans and allowlist, backed by sled and enforced by XDP.
pub struct Bans {
    store: Store,
    xdp: Xdp,
    default_ttl: Duration,
    /// Timed bans by deadline (wall-clock ms), so a sweep touches only what expires.
    deadlines: BTreeSet<(u64, Net)>,
    /// Never banned; also in the XDP allowlist, so a forced range ban around them spares them.
    protected: ProtectList,
    /// Bans refused because of `protected`.
    protect_refusals: u64,
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
        let mut bans = Self {
            store,
            xdp,
            default_ttl,
            deadlines: BTreeSet::new(),
            protected,
            protect_refusals: 0,
        };
        bans.rebuild()?;
        Ok(bans)
    }

    /// Rebuilds the maps from the store; returns (bans, allowlist entries) enforced.
    pub fn rebuild(&mut self) -> Result<(usize, usize), BanError> {
        let now = now_ms();
        let mono = mono_ns();
        let mut live = Vec::new();
        self.deadlines.clear();
        for ban in self.store.bans()? {
            if ban.expired(now) {
                self.store.remove_ban(&ban.target)?;
            } else {
                if let Some(t) = ban.expires_at {
                    self.deadlines.insert((t, ban.target));
                }
                live.push((
                    ban.target,
                    ban.expires_at.map_or(0, |t| wall_to_mono(t, now, mono)),
                ));
            }
        }
        let stored: Vec<Net> = self.store.allows()?.into_iter().map(|a| a.target).collect();
        let mut allows = stored.clone();
        allows.extend(
            self.protected
                .nets()
                .into_iter()
                .filter(|n| !stored.contains(n)),
        );
        self.xdp.reconcile(&live, &allows)?;
        Ok((live.len(), stored.len()))
    }

    /// The XDP layer, for stats and the event reader.
    pub fn xdp_mut(&mut self) -> &mut Xdp {
        &mut self.xdp
    }

    /// The XDP layer.
    #[must_use]
    pub fn xdp(&self) -> &Xdp {
        &self.xdp
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

    /// Replaces what is never banned (the host's facts were read again): the XDP allowlist
    /// gains the new protected networks and loses those no longer protected (unless the
    /// operator allowlisted them), and the bans overlapping either are re-written so that their
    /// allowlist flag follows (a ban made before an address became protected no longer drops
    /// it). The bans themselves stay in the store.
    pub fn set_protected(&mut self, list: ProtectList) -> Result<(), BanError> {
        let (old, new) = (self.protected.nets(), list.nets());
        let added: Vec<Net> = new.iter().filter(|n| !old.contains(n)).copied().collect();
        let stored: Vec<Net> = self.store.allows()?.into_iter().map(|a| a.target).collect();
        let removed: Vec<Net> = old
            .iter()
            .filter(|n| !new.contains(n) && !stored.contains(n))
            .copied()
            .collect();
        for net in &added {
            self.xdp.put_allow(net)?;
        }
        for net in &removed {
            self.xdp.remove_allow(net)?;
        }
        self.protected = list;
        for net in added.iter().chain(&removed) {
            self.refresh_overlapping(net)?;
        }
        Ok(())
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

    /// The allowlist entry covering `ip`, if any.
    pub fn allowlisted(&self, ip: IpAddr) -> Result<Option<Net>, BanError> {
        Ok(self
            .store
            .allows()?
            .into_iter()
            .map(|a| a.target)
            .find(|n| n.contains(ip)))
    }

    /// Bans (or re-bans, replacing reason and deadline) a target.
    pub fn ban(&mut self, req: BanRequest) -> Result<BanView, BanError> {
        let target = req.target;
        self.ban_no_flush(req).and_then(|v| {
            self.store
                .flush()
                .map_err(|source| BanError::NotSaved { target, source })?;
            Ok(v)
        })
    }

    fn ban_no_flush(&mut self, req: BanRequest) -> Result<BanView, BanError> {
        // Only an operator can force, and only past a range that contains protected addresses.
        let force = req.force && matches!(req.origin, Origin::Cli | Origin::Import);
        if let Err(refusal) = self.protected.check(&req.target, force) {
            self.protect_refusals += 1;
            warn!(target = %req.target, origin = %req.origin, reason = %req.reason, "ban refused: {refusal}");
            return Err(refusal.into());
        }
        if !req.force
            && let Some(allow) = self
                .store
                .allows()?
                .into_iter()
                .find(|a| a.target.overlaps(&req.target))
        {
            return Err(BanError::Allowlisted {
                target: req.target,
                allow: allow.target,
            });
        }
        let now = now_ms();
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        let record = BanRecord {
            target: req.target,
            reason: req.reason,
            origin: req.origin,
            created_at: now,
            expires_at: (!ttl.is_zero()).then(|| now.saturating_add(ttl.as_millis() as u64)),
            evidence: req.evidence,
        };
        // A store that cannot write (disk full) does not stop the ban: it is enforced, and the
        // caller is told it is not saved.
        let saved = match self.store.put_ban(&record) {
            Ok(old) => {
                if let Some(old) = old
                    && let Some(t) = old.expires_at
                {
                    self.deadlines.remove(&(t, old.target));
                }
                Ok(())
            }
            Err(source) => Err(BanError::NotSaved {
                target: record.target,
                source,
            }),
        };
        if let Some(t) = record.expires_at {
            self.deadlines.insert((t, record.target));
        }
        let deadline = record
            .expires_at
            .map_or(0, |t| wall_to_mono(t, now, mono_ns()));
        self.xdp.put_ban(&record.target, deadline)?;
        saved?;
        Ok(self.view(record))
    }

    /// Bans many targets, flushing once. Returns per-line results: a line refused (it overlaps
    /// the allowlist) or enforced but not saved is an error of its own, the others stop the
    /// import.
    pub fn import(
        &mut self,
        reqs: Vec<BanRequest>,
    ) -> Result<Vec<Result<Net, BanError>>, BanError> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut refused = 0;
        for req in reqs {
            let target = req.target;
            match self.ban_no_flush(req) {
                Ok(_) => out.push(Ok(target)),
                Err(e @ (BanError::Allowlisted { .. } | BanError::Protected(_))) => {
                    refused += 1;
                    out.push(Err(e));
                }
                Err(e @ BanError::NotSaved { .. }) => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        if let Err(source) = self.store.flush() {
            // Every line but the refused ones is enforced; none is known to be on disk.
            let count = out.len() - refused;
            return Err(BanError::BatchNotSaved { count, source });
        }
        Ok(out)
    }

    /// Lifts a ban.
    pub fn unban(&mut self, target: &Net) -> Result<BanView, BanError> {
        let not_saved = |source| BanError::RemovalNotSaved {
            target: *target,
            source,
        };
        let record = match self.store.remove_ban(target) {
            Ok(record) => record.ok_or(BanError::NotBanned { target: *target })?,
            Err(source) => {
                // The operator wants it lifted: lift it, and say the store did not follow.
                self.xdp.remove_ban(target)?;
                return Err(not_saved(source));
            }
        };
        if let Some(t) = record.expires_at {
            self.deadlines.remove(&(t, record.target));
        }
        let view = self.view(record);
        self.xdp.remove_ban(target)?;
        self.store.flush().map_err(not_saved)?;
        Ok(view)
    }

    /// Lifts every ban `filter` selects (its order and limit apply), with one store flush for
    /// all; returns the targets lifted.
    pub fn unban_matching(&mut self, filter: &BanFilter) -> Result<Vec<Net>, BanError> {
        let targets: Vec<Net> = self.list(filter)?.into_iter().map(|v| v.addr).collect();
        let mut failure = None;
        for target in &targets {
            match self.store.remove_ban(target) {
                Ok(Some(record)) => {
                    if let Some(t) = record.expires_at {
                        self.deadlines.remove(&(t, record.target));
                    }
                }
                Ok(None) => {}
                // Lifted anyway; the error is reported once for the batch.
                Err(e) => failure = failure.or(Some(e)),
            }
            self.xdp.remove_ban(target)?;
        }
        let flushed = self.store.flush();
        if let Some(source) = failure.or(flushed.err()) {
            return Err(BanError::BatchRemovalNotSaved {
                count: targets.len(),
                source,
            });
        }
        Ok(targets)
    }

    /// How many bans there are.
    pub fn count(&self) -> Result<usize, BanError> {
        Ok(self.store.ban_count()?)
    }

    /// The bans `filter` selects, with their counters, in its order.
    pub fn list(&self, filter: &BanFilter) -> Result<Vec<BanView>, BanError> {
        let views = self
            .store
            .bans()?
            .into_iter()
            .filter(|b| filter.matches(b))
            .map(|b| self.view(b))
            .collect();
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

    /// Removes bans whose deadline has passed from the store and the maps; returns them.
    pub fn sweep(&mut self) -> Result<Vec<Net>, BanError> {
        let now = now_ms();
        let mut gone = Vec::new();
        while let Some(&(t, target)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            // The stored record decides: it may have been replaced by a later ban.
            if self.store.ban(&target)?.is_some_and(|b| b.expired(now)) {
                // The maps first: a store that cannot write must not keep an expired ban in
                // them (the program ignores it anyway, but the counters and `ban ls` would not).
                self.xdp.remove_ban(&target)?;
                self.store.remove_ban(&target)?;
                gone.push(target);
            }
        }
        Ok(gone)
    }

    /// Adds an allowlist entry.
    pub fn allow(&mut self, target: Net, reason: String) -> Result<AllowRecord, BanError> {
        let rec = AllowRecord {
            target,
            reason,
            created_at: now_ms(),
        };
        self.store.put_allow(&rec)?;
        self.xdp.put_allow(&target)?;
        self.refresh_overlapping(&target)?;
        self.store.flush()?;
        Ok(rec)
    }

    /// Re-writes the bans that overlap `net` so their allowlist flag follows the allowlist.
    fn refresh_overlapping(&mut self, net: &Net) -> Result<(), BanError> {
        let (now, mono) = (now_ms(), mono_ns());
        for ban in self.store.bans()? {
            if ban.target.overlaps(net) && !ban.expired(now) {
                let deadline = ban.expires_at.map_or(0, |t| wall_to_mono(t, now, mono));
                self.xdp.put_ban(&ban.target, deadline)?;
            }
        }
        Ok(())
    }

    /// Removes an allowlist entry.
    pub fn disallow(&mut self, target: &Net) -> Result<AllowRecord, BanError> {
        let rec = self
            .store
            .remove_allow(target)?
            .ok_or(BanError::NotAllowed { target: *target })?;
        // A protected network stays in the XDP allowlist.
        if !self.protected.nets().contains(target) {
            self.xdp.remove_allow(target)?;
        }
        self.refresh_overlapping(target)?;
        self.store.flush()?;
        Ok(rec)
    }

    /// The allowlist.
    pub fn allows(&self) -> Result<Vec<AllowRecord>, BanError> {
        Ok(self.store.allows()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, origin: Origin, reason: &str) -> BanRecord {
        BanRecord {
            target: target.parse().unwrap(),
            reason: reason.into(),
            origin,
            created_at: 0,
            expires_at: None,
            evidence: None,
        }
    }

    fn view(addr: &str, packets: u64, created_at: u64, expires_at: Option<u64>) -> BanView {
        BanView {
            addr: addr.parse().unwrap(),
            reason: String::new(),
            origin: Origin::Cli,
            created_at,
            expires_at,
            packets,
            bytes: 0,
            last_hit: None,
            evidence: None,
        }
    }

    #[test]
    fn filters_select_by_covering_address_range_origin_and_reason() {
        let bans = [
            record("192.0.2.7", Origin::Engine, "SQL injection: 3 hits"),
            record("192.0.2.0/24", Origin::Import, "blocklist"),
            record("198.51.100.9", Origin::Cli, "manual"),
            record("2001:db8::1", Origin::RateLimit, "flood"),
        ];
        let pick = |f: BanFilter| -> Vec<String> {
            bans.iter()
                .filter(|b| f.matches(b))
                .map(|b| b.target.to_string())
                .collect()
        };
        let all = pick(BanFilter::default());
        assert_eq!(all.len(), 4);
        assert_eq!(
            pick(BanFilter {
                ip: Some("192.0.2.7".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7", "192.0.2.0/24"]
        );
        assert_eq!(
            pick(BanFilter {
                ip: Some("192.0.2.8".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.0/24"]
        );
        // Inside a range: the /24 itself and its host, not a wider or foreign ban.
        assert_eq!(
            pick(BanFilter {
                range: Some("192.0.2.0/25".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7"]
        );
        assert_eq!(
            pick(BanFilter {
                range: Some("192.0.0.0/16".parse().unwrap()),
                ..BanFilter::default()
            }),
            ["192.0.2.7", "192.0.2.0/24"]
        );
        assert_eq!(
            pick(BanFilter {
                origin: Some(Origin::RateLimit),
                ..BanFilter::default()
            }),
            ["2001:db8::1"]
        );
        assert_eq!(
            pick(BanFilter {
                reason: Some("sql INJECTION".into()),
                origin: Some(Origin::Engine),
                ..BanFilter::default()
            }),
            ["192.0.2.7"]
        );
    }

    #[test]
    fn sorting_and_limit() {
        let views = || {
            vec![
                view("192.0.2.1", 5, 100, None),
                view("192.0.2.2", 50, 300, Some(9_000)),
                view("192.0.2.3", 0, 200, Some(1_000)),
            ]
        };
        let order = |sort, limit| -> Vec<String> {
            BanFilter {
                sort,
                limit,
                ..BanFilter::default()
            }
            .arrange(views())
            .iter()
            .map(|v| v.addr.to_string())
            .collect()
        };
        assert_eq!(
            order(BanSort::Packets, None),
            ["192.0.2.2", "192.0.2.1", "192.0.2.3"]
        );
        assert_eq!(
            order(BanSort::Created, None),
            ["192.0.2.2", "192.0.2.3", "192.0.2.1"]
        );
        // Soonest first, permanent last.
        assert_eq!(
            order(BanSort::Expires, None),
            ["192.0.2.3", "192.0.2.2", "192.0.2.1"]
        );
        assert_eq!(order(BanSort::Packets, Some(1)), ["192.0.2.2"]);
        assert_eq!(order(BanSort::Addr, Some(2)), ["192.0.2.1", "192.0.2.2"]);
    }
}
