//! Keeping the ban and allowlist maps (exact, CIDR, dense tier) in step with the daemon's
//! tables, and reading a ban's counters back.
use std::collections::HashSet;
use std::net::IpAddr;

use aya::maps::MapError;
use aya::maps::lpm_trie::Key;
use guard_common::{
    BAN_CHECK_ALLOW, BanEntry, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_CIDR_V4,
    MAP_CIDR_V6,
};
use tracing::{info, warn};

use super::{BanCounters, Which, Xdp, XdpError, map_err, v4};
use crate::net::Net;

impl Xdp {
    /// Makes the maps hold exactly `bans` (with their monotonic deadlines) and `allows`,
    /// without ever removing an entry that stays: enforcement has no gap during a restart.
    /// What does not fit is skipped (each logged with its key, counted in [`Xdp::skipped`]):
    /// a start never fails because a map is full.
    pub fn reconcile(&mut self, bans: &[(Net, u64)], allows: &[Net]) -> Result<(), XdpError> {
        let have = self.ban_keys()?;
        self.cidrs = have.iter().filter(|n| !n.is_host()).copied().collect();
        self.allows = self.allow_keys()?;
        self.count_from(&have);
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
        let want: HashSet<Net> = bans.iter().map(|(n, _)| *n).collect();
        for net in have.difference(&want) {
            self.remove_ban(net)?;
        }
        let mut left_out = HashSet::new();
        for (net, deadline) in bans {
            match self.put_ban(net, *deadline) {
                Err(e @ XdpError::Full { .. }) => {
                    warn!(key = %net, "ban not enforced: {e}");
                    left_out.insert(*net);
                }
                other => other?,
            }
        }
        if !left_out.is_empty() {
            self.skipped += left_out.len() as u64;
            warn!(
                skipped = self.skipped,
                "the maps could not hold every stored ban and allowlist entry: see `guard status`"
            );
        }
        self.rebuild_dense(bans, &left_out)?;
        self.write_config()
    }

    /// Reads the CIDR bans and allowlist entries the (pinned) maps hold, and counts them.
    pub(super) fn read_cidrs_and_allows(&mut self) -> Result<(), XdpError> {
        let mut cidrs = HashSet::new();
        for k in self.cidr_v4.keys() {
            cidrs.insert(v4_prefix(k.map_err(map_err(MAP_CIDR_V4, "iterate"))?));
        }
        for k in self.cidr_v6.keys() {
            cidrs.insert(v6_prefix(k.map_err(map_err(MAP_CIDR_V6, "iterate"))?));
        }
        self.cidrs = cidrs;
        self.allows = self.allow_keys()?;
        self.count_sets();
        Ok(())
    }

    /// Sets every map's count from the keys the maps hold.
    fn count_from(&mut self, have: &HashSet<Net>) {
        let exact_v4 = have
            .iter()
            .filter(|n| n.is_host() && n.addr().is_ipv4())
            .count();
        let exact_v6 = have
            .iter()
            .filter(|n| n.is_host() && n.addr().is_ipv6())
            .count();
        self.fill.set(Which::BansV4, exact_v4);
        self.fill.set(Which::BansV6, exact_v6);
        self.count_sets();
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

    fn ban_keys(&self) -> Result<HashSet<Net>, XdpError> {
        let mut out = HashSet::new();
        for k in self.bans_v4.keys() {
            out.insert(Net::host(IpAddr::from(
                k.map_err(map_err(MAP_BANS_V4, "iterate"))?.to_ne_bytes(),
            )));
        }
        for k in self.bans_v6.keys() {
            out.insert(Net::host(IpAddr::from(
                k.map_err(map_err(MAP_BANS_V6, "iterate"))?,
            )));
        }
        for k in self.cidr_v4.keys() {
            out.insert(v4_prefix(k.map_err(map_err(MAP_CIDR_V4, "iterate"))?));
        }
        for k in self.cidr_v6.keys() {
            out.insert(v6_prefix(k.map_err(map_err(MAP_CIDR_V6, "iterate"))?));
        }
        Ok(out)
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

    /// The drop counters of a ban, if it is in the maps.
    #[must_use]
    pub fn ban_counters(&self, net: &Net) -> Option<BanCounters> {
        if !net.is_host() && !self.cidrs.contains(net) {
            return None;
        }
        let e = match (net.addr(), net.is_host()) {
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
        }?;
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
