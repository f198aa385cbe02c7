//! Keeping the ban and allowlist maps (exact, CIDR, dense tier) in step with the daemon's
//! tables, and reading a ban's counters back.
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use aya::maps::lpm_trie::Key;
use aya::maps::{IterableMap, MapError};
use guard_common::{
    BAN_CHECK_ALLOW, BanEntry, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_CIDR_V4,
    MAP_CIDR_V6,
};
use tracing::{debug, info, warn};

use super::{BanCounters, Which, Xdp, XdpError, batch, map_err, v4};
use crate::net::Net;

impl Xdp {
    /// Makes the maps hold exactly `bans` (with their monotonic deadlines) and `allows`,
    /// without ever removing an entry that stays: enforcement has no gap during a restart.
    /// What does not fit is skipped (each logged with its key, counted in [`Xdp::skipped`]):
    /// a start never fails because a map is full.
    pub fn reconcile(&mut self, bans: &[(Net, u64)], allows: &[Net]) -> Result<(), XdpError> {
        self.allows = self.allow_keys()?;
        self.cidrs = self.cidr_keys()?;
        // Exact bans (up to millions): the maps' entries, read in a few calls and sorted, are
        // walked beside the wanted bans in the same order.
        let have_v4 = self.host_entries_v4()?;
        let have_v6 = self.host_entries_v6()?;
        self.fill.set(Which::BansV4, have_v4.len());
        self.fill.set(Which::BansV6, have_v6.len());
        self.count_sets();
        self.skipped = 0;
        // The allowlist first: each ban's BAN_CHECK_ALLOW flag depends on it.
        let want: HashSet<Net> = allows.iter().copied().collect();
        for net in self.allows.clone().difference(&want) {
            self.remove_allow(net)?;
        }
        for net in allows {
            match self.put_allow(net) {
                Err(e @ XdpError::Full { .. }) => {
                    warn!(key = %net, "allowlist entry not enforced: {e}");
                    self.skipped += 1;
                }
                other => other?,
            }
        }
        // CIDR bans (a few): by set difference.
        let want: HashSet<Net> = bans
            .iter()
            .filter(|(n, _)| !n.is_host())
            .map(|(n, _)| *n)
            .collect();
        for net in self.cidrs.clone().difference(&want) {
            self.remove_ban(net)?;
        }
        let sorted;
        let bans = if bans.is_sorted_by_key(|(n, _)| *n) {
            bans
        } else {
            sorted = {
                let mut v = bans.to_vec();
                v.sort_by_key(|(n, _)| *n);
                v
            };
            &sorted
        };
        let mut left_out = HashSet::new();
        let (mut i4, mut i6) = (0, 0);
        for (net, deadline) in bans {
            let put = if net.is_host() {
                let old = match net.addr() {
                    IpAddr::V4(a) => {
                        while let Some(&(stale, _)) = have_v4.get(i4).filter(|(h, _)| *h < a) {
                            self.remove_ban(&Net::host(stale.into()))?;
                            i4 += 1;
                        }
                        have_v4.get(i4).filter(|(h, _)| *h == a).map(|&(_, e)| {
                            i4 += 1;
                            e
                        })
                    }
                    IpAddr::V6(a) => {
                        while let Some(&(stale, _)) = have_v6.get(i6).filter(|(h, _)| *h < a) {
                            self.remove_ban(&Net::host(stale.into()))?;
                            i6 += 1;
                        }
                        have_v6.get(i6).filter(|(h, _)| *h == a).map(|&(_, e)| {
                            i6 += 1;
                            e
                        })
                    }
                };
                self.restore_host(net, *deadline, old)
            } else {
                self.put_ban(net, *deadline)
            };
            match put {
                Err(e @ XdpError::Full { .. }) => {
                    warn!(key = %net, "ban not enforced: {e}");
                    left_out.insert(*net);
                }
                other => other?,
            }
        }
        for &(stale, _) in have_v4.get(i4..).unwrap_or_default() {
            self.remove_ban(&Net::host(stale.into()))?;
        }
        for &(stale, _) in have_v6.get(i6..).unwrap_or_default() {
            self.remove_ban(&Net::host(stale.into()))?;
        }
        drop((have_v4, have_v6));
        if !left_out.is_empty() {
            self.skipped += left_out.len() as u64;
            warn!(
                skipped = self.skipped,
                "the maps could not hold every stored ban and allowlist entry: see `guard status`"
            );
        }
        self.rebuild_dense(bans, &left_out)?;
        // Once for all the entries restored (not once per ban); the flags follow the maps.
        self.invalidate_hot()
    }

    /// Reads the CIDR bans and allowlist entries the (pinned) maps hold, and counts them.
    pub(super) fn read_cidrs_and_allows(&mut self) -> Result<(), XdpError> {
        self.cidrs = self.cidr_keys()?;
        self.allows = self.allow_keys()?;
        self.count_sets();
        Ok(())
    }

    /// Sets the CIDR and allowlist counts from their mirrored sets.
    fn count_sets(&mut self) {
        let v4 = |set: &HashSet<Net>| set.iter().filter(|n| n.addr().is_ipv4()).count();
        let (c4, a4) = (v4(&self.cidrs), v4(&self.allows));
        self.fill.set(Which::CidrV4, c4);
        self.fill.set(Which::CidrV6, self.cidrs.len() - c4);
        self.fill.set(Which::AllowV4, a4);
        self.fill.set(Which::AllowV6, self.allows.len() - a4);
    }

    /// Restores an exact ban at start, `old` being its entry in the map: one with the same
    /// allowlist flag and a deadline within a second (the same wall-clock deadline, converted
    /// again) is left as it is, so a restart with a million bans writes almost nothing. The
    /// dense tier and the hot cache are brought up to date by the caller, once.
    fn restore_host(
        &mut self,
        net: &Net,
        expires_ns: u64,
        old: Option<BanEntry>,
    ) -> Result<(), XdpError> {
        const SLACK_NS: u64 = 1_000_000_000;
        let expires_ns = expires_ns | self.allow_flag(net);
        let same = |old: &BanEntry| {
            let (flag, deadline) = (
                old.expires_ns & BAN_CHECK_ALLOW,
                old.expires_ns & !BAN_CHECK_ALLOW,
            );
            let want = expires_ns & !BAN_CHECK_ALLOW;
            flag == expires_ns & BAN_CHECK_ALLOW
                && (deadline == want
                    || (deadline != 0 && want != 0 && deadline.abs_diff(want) < SLACK_NS))
        };
        if old.as_ref().is_some_and(same) {
            return Ok(());
        }
        let which = Which::ban(net);
        if old.is_none() {
            self.fill.check(which)?;
        }
        let entry = BanEntry {
            expires_ns,
            ..old.unwrap_or_default()
        };
        match net.addr() {
            IpAddr::V4(a) => self
                .bans_v4
                .insert(v4(a), entry, 0)
                .map_err(map_err(MAP_BANS_V4, "insert"))?,
            IpAddr::V6(a) => self
                .bans_v6
                .insert(a.octets(), entry, 0)
                .map_err(map_err(MAP_BANS_V6, "insert"))?,
        }
        if old.is_none() {
            self.fill.added(which);
        }
        Ok(())
    }

    /// The exact IPv4 bans in the map with their entries, in address order.
    fn host_entries_v4(&self) -> Result<Vec<(Ipv4Addr, BanEntry)>, XdpError> {
        let raw: Vec<(u32, BanEntry)> = match batch::dump(self.bans_v4.map().fd().as_fd()) {
            Ok(all) => all,
            Err(e) => {
                debug!("batch lookup of {MAP_BANS_V4} refused ({e}); reading it key by key");
                self.bans_v4
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(map_err(MAP_BANS_V4, "iterate"))?
            }
        };
        let mut out: Vec<(Ipv4Addr, BanEntry)> = raw
            .into_iter()
            .map(|(k, e)| (Ipv4Addr::from(k.to_ne_bytes()), e))
            .collect();
        out.sort_unstable_by_key(|(a, _)| *a);
        Ok(out)
    }

    /// The exact IPv6 bans in the map with their entries, in address order.
    fn host_entries_v6(&self) -> Result<Vec<(Ipv6Addr, BanEntry)>, XdpError> {
        let raw: Vec<([u8; 16], BanEntry)> = match batch::dump(self.bans_v6.map().fd().as_fd()) {
            Ok(all) => all,
            Err(e) => {
                debug!("batch lookup of {MAP_BANS_V6} refused ({e}); reading it key by key");
                self.bans_v6
                    .iter()
                    .collect::<Result<_, _>>()
                    .map_err(map_err(MAP_BANS_V6, "iterate"))?
            }
        };
        let mut out: Vec<(Ipv6Addr, BanEntry)> = raw
            .into_iter()
            .map(|(k, e)| (Ipv6Addr::from(k), e))
            .collect();
        out.sort_unstable_by_key(|(a, _)| *a);
        Ok(out)
    }

    fn cidr_keys(&self) -> Result<HashSet<Net>, XdpError> {
        let mut out = HashSet::new();
        for k in self.cidr_v4.keys() {
            out.insert(v4_prefix(k.map_err(map_err(MAP_CIDR_V4, "iterate"))?));
        }
        for k in self.cidr_v6.keys() {
            out.insert(v6_prefix(k.map_err(map_err(MAP_CIDR_V6, "iterate"))?));
        }
        Ok(out)
    }

    /// Recomputes the dense tier from the exact IPv4 bans in `bans` (all of them but those in
    /// `left_out`, which are not in the exact map).
    fn rebuild_dense(
        &mut self,
        bans: &[(Net, u64)],
        left_out: &HashSet<Net>,
    ) -> Result<(), XdpError> {
        let v4: Vec<(u32, u64)> = bans
            .iter()
            .filter(|(net, _)| net.is_host() && !left_out.contains(net))
            .filter_map(|(net, deadline)| match net.addr() {
                IpAddr::V4(a) => Some((v4(a), *deadline | self.allow_flag(net))),
                IpAddr::V6(_) => None,
            })
            .collect();
        self.dense.rebuild(&mut self.bans_v4, v4.iter().copied())?;
        info!(
            blocks = self.dense.blocks(),
            "dense tier: /24 blocks with at least {} bans",
            guard_common::DENSE_MIN
        );
        Ok(())
    }

    /// `BAN_CHECK_ALLOW` if `net` overlaps the allowlist, else 0.
    fn allow_flag(&self, net: &Net) -> u64 {
        if self.allows.iter().any(|a| a.overlaps(net)) {
            BAN_CHECK_ALLOW
        } else {
            0
        }
    }

    fn allow_keys(&self) -> Result<HashSet<Net>, XdpError> {
        let mut out = HashSet::new();
        for k in self.allow_v4.keys() {
            out.insert(v4_prefix(k.map_err(map_err(MAP_ALLOW_V4, "iterate"))?));
        }
        for k in self.allow_v6.keys() {
            out.insert(v6_prefix(k.map_err(map_err(MAP_ALLOW_V6, "iterate"))?));
        }
        Ok(out)
    }

    /// Inserts or updates a ban; an existing entry keeps its counters.
    pub fn put_ban(&mut self, net: &Net, expires_ns: u64) -> Result<(), XdpError> {
        // Only a ban that overlaps the allowlist makes the program look the allowlist up.
        let expires_ns = expires_ns | self.allow_flag(net);
        let fresh = |old: Option<BanEntry>| BanEntry {
            expires_ns,
            ..old.unwrap_or_default()
        };
        match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => {
                let old = self.bans_v4.get(&v4(a), 0).ok();
                if old.is_none() {
                    self.fill.check(Which::BansV4)?;
                }
                self.bans_v4
                    .insert(v4(a), fresh(old), 0)
                    .map_err(map_err(MAP_BANS_V4, "insert"))?;
                if old.is_none() {
                    self.fill.added(Which::BansV4);
                }
                let was_active = self.dense.active();
                self.dense.added(
                    &mut self.bans_v4,
                    v4(a),
                    expires_ns,
                    old.map(|e| e.expires_ns),
                )?;
                // A changed ban (deadline, allowlist flag) must not stay cached per CPU.
                if old.is_some() {
                    self.invalidate_hot()?;
                } else if was_active != self.dense.active() {
                    self.write_config()?;
                }
                Ok(())
            }
            (IpAddr::V6(a), true) => {
                let old = self.bans_v6.get(&a.octets(), 0).ok();
                if old.is_none() {
                    self.fill.check(Which::BansV6)?;
                }
                self.bans_v6
                    .insert(a.octets(), fresh(old), 0)
                    .map_err(map_err(MAP_BANS_V6, "insert"))?;
                if old.is_none() {
                    self.fill.added(Which::BansV6);
                }
                Ok(())
            }
            (IpAddr::V4(a), false) => {
                let key = Key::new(u32::from(net.prefix()), v4(a));
                let present = self.cidrs.contains(net);
                if !present {
                    self.fill.check(Which::CidrV4)?;
                }
                let old = present.then(|| self.cidr_v4.get(&key, 0).ok()).flatten();
                self.cidr_v4
                    .insert(&key, fresh(old), 0)
                    .map_err(map_err(MAP_CIDR_V4, "insert"))?;
                if self.cidrs.insert(*net) {
                    self.fill.added(Which::CidrV4);
                }
                self.write_config()
            }
            (IpAddr::V6(a), false) => {
                let key = Key::new(u32::from(net.prefix()), a.octets());
                let present = self.cidrs.contains(net);
                if !present {
                    self.fill.check(Which::CidrV6)?;
                }
                let old = present.then(|| self.cidr_v6.get(&key, 0).ok()).flatten();
                self.cidr_v6
                    .insert(&key, fresh(old), 0)
                    .map_err(map_err(MAP_CIDR_V6, "insert"))?;
                if self.cidrs.insert(*net) {
                    self.fill.added(Which::CidrV6);
                }
                self.write_config()
            }
        }
    }

    /// Removes a ban; absent is not an error.
    pub fn remove_ban(&mut self, net: &Net) -> Result<(), XdpError> {
        let r = match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => {
                // The dense bit goes first: a set bit must always have its exact ban.
                let old = self.bans_v4.get(&v4(a), 0).ok().map(|e| e.expires_ns);
                self.dense.removing(&mut self.bans_v4, v4(a), old)?;
                self.bans_v4.remove(&v4(a))
            }
            (IpAddr::V6(a), true) => self.bans_v6.remove(&a.octets()),
            (IpAddr::V4(a), false) => {
                self.cidrs.remove(net);
                self.cidr_v4
                    .remove(&Key::new(u32::from(net.prefix()), v4(a)))
            }
            (IpAddr::V6(a), false) => {
                self.cidrs.remove(net);
                self.cidr_v6
                    .remove(&Key::new(u32::from(net.prefix()), a.octets()))
            }
        };
        if r.is_ok() {
            self.fill.removed(Which::ban(net));
        }
        ignore_missing(r, "remove ban")?;
        self.invalidate_hot()
    }

    /// Bumps the generation that every CPU's hot-ban cache is checked against.
    fn invalidate_hot(&mut self) -> Result<(), XdpError> {
        self.settings.generation = self.settings.generation.wrapping_add(1);
        self.write_config()
    }

    /// Drops a CPU has counted against a cached ban but not yet added to its entry.
    fn hot_pending(&self, net: &Net) -> (u64, u64) {
        let IpAddr::V4(a) = net.addr() else {
            return (0, 0);
        };
        if !net.is_host() {
            return (0, 0);
        }
        let Ok(per_cpu) = self.hot.get(&0, 0) else {
            return (0, 0);
        };
        per_cpu
            .iter()
            // Any generation: stale counts are still flushed into the ban (the map is pinned, so
            // this includes drops counted by an earlier instance's program).
            .filter(|h| h.valid != 0 && h.addr == v4(a))
            .fold((0, 0), |(p, b), h| {
                (p + h.pending_packets, b + h.pending_bytes)
            })
    }

    /// The monotonic deadline (ns) the maps hold for the ban of `net`: `Some(0)` for a
    /// permanent one, `None` when the maps hold none (the ban owner's expiry asks this, so
    /// that a replaced or lifted deadline is never acted on).
    #[must_use]
    pub fn ban_deadline(&self, net: &Net) -> Option<u64> {
        self.ban_entry(net).map(|e| e.expires_ns & !BAN_CHECK_ALLOW)
    }

    /// The map entry of the ban of `net` (an exact key, never a covering range).
    fn ban_entry(&self, net: &Net) -> Option<BanEntry> {
        if !net.is_host() && !self.cidrs.contains(net) {
            return None;
        }
        match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => self.bans_v4.get(&v4(a), 0).ok(),
            (IpAddr::V6(a), true) => self.bans_v6.get(&a.octets(), 0).ok(),
            (IpAddr::V4(a), false) => self
                .cidr_v4
                .get(&Key::new(u32::from(net.prefix()), v4(a)), 0)
                .ok(),
            (IpAddr::V6(a), false) => self
                .cidr_v6
                .get(&Key::new(u32::from(net.prefix()), a.octets()), 0)
                .ok(),
        }
    }

    /// The drop counters of a ban, if it is in the maps.
    #[must_use]
    pub fn ban_counters(&self, net: &Net) -> Option<BanCounters> {
        let e = self.ban_entry(net)?;
        let (pending_packets, pending_bytes) = self.hot_pending(net);
        let dense = match (net.addr(), net.is_host()) {
            (IpAddr::V4(a), true) => self.dense.hits(v4(a)).unwrap_or_default(),
            _ => guard_common::DenseHit::default(),
        };
        Some(BanCounters {
            packets: e.packets + pending_packets + dense.packets,
            bytes: e.bytes + pending_bytes + dense.bytes,
            last_hit_ns: e.last_hit_ns.max(dense.last_hit_ns),
        })
    }

    /// Adds an allowlist entry.
    pub fn put_allow(&mut self, net: &Net) -> Result<(), XdpError> {
        if !self.allows.contains(net) {
            self.fill.check(Which::allow(net))?;
        }
        match net.addr() {
            IpAddr::V4(a) => {
                let key = Key::new(u32::from(net.prefix()), v4(a));
                self.allow_v4
                    .insert(&key, 1, 0)
                    .map_err(map_err(MAP_ALLOW_V4, "insert"))?;
            }
            IpAddr::V6(a) => {
                let key = Key::new(u32::from(net.prefix()), a.octets());
                self.allow_v6
                    .insert(&key, 1, 0)
                    .map_err(map_err(MAP_ALLOW_V6, "insert"))?;
            }
        }
        if self.allows.insert(*net) {
            self.fill.added(Which::allow(net));
        }
        self.write_config()
    }

    /// Removes an allowlist entry; absent is not an error.
    pub fn remove_allow(&mut self, net: &Net) -> Result<(), XdpError> {
        let r = match net.addr() {
            IpAddr::V4(a) => self
                .allow_v4
                .remove(&Key::new(u32::from(net.prefix()), v4(a))),
            IpAddr::V6(a) => self
                .allow_v6
                .remove(&Key::new(u32::from(net.prefix()), a.octets())),
        };
        if self.allows.remove(net) && r.is_ok() {
            self.fill.removed(Which::allow(net));
        }
        ignore_missing(r, "remove allow")?;
        self.write_config()
    }

    /// /24 blocks in the dense tier, and how often a block qualified but every slot was taken.
    #[must_use]
    pub fn dense(&self) -> (usize, u64) {
        (self.dense.blocks(), self.dense.full())
    }
}

fn ignore_missing(r: Result<(), MapError>, op: &'static str) -> Result<(), XdpError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) =>
        {
            Ok(())
        }
        other => other.map_err(map_err("ban/allow", op)),
    }
}

/// The prefix an IPv4 LPM key stands for (the address is in network order in memory).
fn v4_prefix(k: Key<u32>) -> Net {
    Net::new(IpAddr::from(k.data().to_ne_bytes()), k.prefix_len() as u8)
}

/// The prefix an IPv6 LPM key stands for.
fn v6_prefix(k: Key<[u8; 16]>) -> Net {
    Net::new(IpAddr::from(k.data()), k.prefix_len() as u8)
}
