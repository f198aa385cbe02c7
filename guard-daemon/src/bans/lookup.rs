//! The inline mode's address-ban lookup: is the client of this request banned? It must answer
//! in memory, quickly, and never wait for the ban owner (whose answers come after an fsync).
//!
//! It reads the XDP ban maps themselves ([`crate::xdp::BanMaps`]: the exact hash maps and the
//! CIDR LPM tries, one `bpf` syscall each, two to four per lookup) rather than a copy of the
//! bans: the maps are what enforcement already holds, the owner writes them before it answers
//! (so a ban is seen by the lookup as soon as XDP drops its packets, before sled has it), and a
//! second copy of a million bans would cost tens of megabytes of the daemon's memory budget.
//! Nothing has to be told "after a batch": there is no copy to refresh.
//!
//! User bans (`UserLookup`) are separate; see `inline::gate` for where both are asked.
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::xdp::{BanHit, BanMaps};

/// Answers whether an address is banned, for one request. Fails open: a lookup that cannot be
/// made answers "not banned" (XDP still drops a banned source's packets).
pub trait AddrLookup: Send + Sync + 'static {
    /// The ban that covers `ip` now, if any.
    fn banned(&self, ip: IpAddr) -> Option<BanHit>;

    /// Lookups that failed and were answered "not banned".
    fn errors(&self) -> u64 {
        0
    }
}

/// [`AddrLookup`] in the XDP maps.
pub struct MapLookup {
    maps: BanMaps,
    /// Lookups that failed (a syscall error): answered "not banned".
    errors: AtomicU64,
}

impl MapLookup {
    #[must_use]
    pub fn new(maps: BanMaps) -> Self {
        Self {
            maps,
            errors: AtomicU64::new(0),
        }
    }
}

impl AddrLookup for MapLookup {
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn banned(&self, ip: IpAddr) -> Option<BanHit> {
        match self.maps.banned(ip, crate::clock::mono_ns()) {
            Ok(hit) => hit,
            Err(e) => {
                // Logged on the first failure and then once in 1024, not per request.
                if self
                    .errors
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1024)
                {
                    warn!(client = %ip, "ban lookup failed, the request is judged as not banned: {e}");
                }
                None
            }
        }
    }
}

/// No address is banned (no XDP maps: tests, tools).
pub struct NoBans;

impl AddrLookup for NoBans {
    fn banned(&self, _: IpAddr) -> Option<BanHit> {
        None
    }
}
