//! How full the ban and allowlist maps are. The counts are kept as entries go in and out (set
//! once from the maps at start), so a ban never costs a walk over a map: an insert the map
//! cannot hold is refused with [`XdpError::Full`] before anything changes.
use guard_common::{ALLOW_CAPACITY, BANS_CAPACITY, CIDR_CAPACITY};
use tracing::warn;

use super::XdpError;
use crate::net::Net;

/// One of the maps whose fill is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    BansV4,
    BansV6,
    CidrV4,
    CidrV6,
    AllowV4,
    AllowV6,
}

impl Which {
    const ALL: [Self; 6] = [
        Self::BansV4,
        Self::BansV6,
        Self::CidrV4,
        Self::CidrV6,
        Self::AllowV4,
        Self::AllowV6,
    ];

    /// The map a ban of `net` goes into.
    pub(super) fn ban(net: &Net) -> Self {
        match (net.addr().is_ipv4(), net.is_host()) {
            (true, true) => Self::BansV4,
            (false, true) => Self::BansV6,
            (true, false) => Self::CidrV4,
            (false, false) => Self::CidrV6,
        }
    }

    /// The map an allowlist entry for `net` goes into.
    pub(super) fn allow(net: &Net) -> Self {
        if net.addr().is_ipv4() {
            Self::AllowV4
        } else {
            Self::AllowV6
        }
    }

    /// What the operator reads in `guard status` and in a refusal.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::BansV4 => "IPv4 bans",
            Self::BansV6 => "IPv6 bans",
            Self::CidrV4 => "IPv4 CIDR bans",
            Self::CidrV6 => "IPv6 CIDR bans",
            Self::AllowV4 => "IPv4 allowlist",
            Self::AllowV6 => "IPv6 allowlist",
        }
    }

    fn capacity(self) -> u32 {
        match self {
            Self::BansV4 | Self::BansV6 => BANS_CAPACITY,
            Self::CidrV4 | Self::CidrV6 => CIDR_CAPACITY,
            Self::AllowV4 | Self::AllowV6 => ALLOW_CAPACITY,
        }
    }
}

/// One map's entries against its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFill {
    /// `IPv4 bans`, `IPv4 CIDR bans`, `IPv4 allowlist`, … (IPv6 likewise).
    pub map: &'static str,
    pub entries: u32,
    pub capacity: u32,
}

/// A warning is logged when a map reaches this share of its capacity (per cent).
pub const WARN_PERCENT: u64 = 80;

/// Entries per map, their capacities, and which maps have been warned about.
#[derive(Debug, Clone)]
pub(super) struct Fill {
    entries: [u32; 6],
    capacity: [u32; 6],
    warned: [bool; 6],
}

impl Default for Fill {
    fn default() -> Self {
        Self::with_capacity(Which::ALL.map(Which::capacity))
    }
}

impl Fill {
    /// Counters over maps of the given capacities (in [`Which::ALL`] order; tests use small ones).
    pub(super) fn with_capacity(capacity: [u32; 6]) -> Self {
        Self {
            entries: [0; 6],
            capacity,
            warned: [false; 6],
        }
    }

    /// `Ok` if one more entry fits into `which`, else the refusal to return.
    pub(super) fn check(&self, which: Which) -> Result<(), XdpError> {
        let i = which as usize;
        if self.entries[i] >= self.capacity[i] {
            return Err(XdpError::Full {
                map: which.label(),
                capacity: self.capacity[i],
            });
        }
        Ok(())
    }

    /// Entries in `which`.
    pub(super) fn entries(&self, which: Which) -> u32 {
        self.entries[which as usize]
    }

    /// Records an entry that went in.
    pub(super) fn added(&mut self, which: Which) {
        let i = which as usize;
        self.entries[i] = self.entries[i].saturating_add(1);
        self.warn_if_high(which);
    }

    /// Records an entry that went out.
    pub(super) fn removed(&mut self, which: Which) {
        let i = which as usize;
        self.entries[i] = self.entries[i].saturating_sub(1);
        if !self.high(which) {
            self.warned[i] = false;
        }
    }

    /// Sets a count read from the map itself.
    pub(super) fn set(&mut self, which: Which, entries: usize) {
        self.entries[which as usize] = u32::try_from(entries).unwrap_or(u32::MAX);
        self.warn_if_high(which);
    }

    fn high(&self, which: Which) -> bool {
        let i = which as usize;
        u64::from(self.entries[i]) * 100 >= u64::from(self.capacity[i]) * WARN_PERCENT
    }

    /// Logs once per crossing of [`WARN_PERCENT`].
    fn warn_if_high(&mut self, which: Which) {
        let i = which as usize;
        if !self.warned[i] && self.high(which) {
            self.warned[i] = true;
            warn!(
                map = which.label(),
                entries = self.entries[i],
                capacity = self.capacity[i],
                "map {}% full: further entries are refused at {}",
                WARN_PERCENT,
                self.capacity[i]
            );
        }
    }

    /// Every map's fill, in a fixed order.
    pub(super) fn all(&self) -> Vec<MapFill> {
        Which::ALL
            .iter()
            .map(|&w| MapFill {
                map: w.label(),
                entries: self.entries[w as usize],
                capacity: self.capacity[w as usize],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        s.parse().expect("a valid network")
    }

    #[test]
    fn a_full_map_refuses_the_next_entry_with_its_name_and_capacity() {
        let mut f = Fill::with_capacity([2, 2, 3, 3, 1, 1]);
        let w = Which::ban(&net("10.0.0.0/24"));
        assert_eq!(w, Which::CidrV4);
        for _ in 0..3 {
            f.check(w).expect("room left");
            f.added(w);
        }
        let e = f.check(w).expect_err("the fourth CIDR ban does not fit");
        assert!(matches!(
            e,
            XdpError::Full {
                map: "IPv4 CIDR bans",
                capacity: 3
            }
        ));
        assert_eq!(e.to_string(), "IPv4 CIDR bans full: 3");
        // Other maps are not affected; a removal makes room again.
        f.check(Which::ban(&net("10.0.0.1")))
            .expect("exact map has room");
        f.check(Which::CidrV6).expect("IPv6 CIDR map has room");
        f.removed(w);
        f.check(w).expect("room after a removal");
    }

    #[test]
    fn fill_is_reported_per_map_and_counts_never_wrap() {
        let mut f = Fill::with_capacity([10, 10, 10, 10, 10, 10]);
        f.set(Which::AllowV6, 4);
        f.removed(Which::BansV4);
        f.added(Which::BansV6);
        let all = f.all();
        assert_eq!(all.len(), 6);
        assert_eq!(
            all[1],
            MapFill {
                map: "IPv6 bans",
                entries: 1,
                capacity: 10
            }
        );
        assert_eq!(all[0].entries, 0);
        assert_eq!(all[5].entries, 4);
        assert_eq!(Which::allow(&net("fd00::/64")), Which::AllowV6);
    }

    #[test]
    fn the_warning_is_armed_again_below_the_threshold() {
        let mut f = Fill::with_capacity([10, 10, 10, 10, 10, 10]);
        f.set(Which::BansV4, 7);
        assert!(!f.warned[0]);
        f.added(Which::BansV4);
        assert!(f.warned[0], "8 of 10 is 80 %");
        f.added(Which::BansV4);
        f.removed(Which::BansV4);
        assert!(f.warned[0], "still at 80 %");
        f.removed(Which::BansV4);
        assert!(!f.warned[0], "below 80 % the next crossing warns again");
    }
}
