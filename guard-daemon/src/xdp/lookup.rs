//! Read-only lookups in the ban maps for the inline mode: is this address banned, exactly or by
//! CIDR, as the XDP program would decide? Each lookup is one `BPF_MAP_LOOKUP_ELEM` syscall on the
//! maps the program itself reads (no copy of the bans in the daemon's memory: with a million bans
//! a copy would cost tens of megabytes). The handles are duplicates of the owner's map file
//! descriptors, so they see every change the ban owner makes, the moment it makes it, without
//! waiting for its flush; they never write.
use std::net::IpAddr;
use std::os::fd::AsFd as _;

use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, IterableMap, LpmTrie, MapData, MapError};
use guard_common::{
    BAN_CHECK_ALLOW, BanEntry, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_CIDR_V4,
    MAP_CIDR_V6,
};

use super::{Xdp, XdpError, map_err, v4};

/// Which map banned an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanHit {
    /// An exact ban of the address.
    Exact,
    /// A CIDR ban containing it (the longest prefix that matches).
    Cidr,
}

/// Read-only handles on the ban and allowlist maps (see the module doc).
pub struct BanMaps {
    bans_v4: HashMap<MapData, u32, BanEntry>,
    bans_v6: HashMap<MapData, [u8; 16], BanEntry>,
    cidr_v4: LpmTrie<MapData, u32, BanEntry>,
    cidr_v6: LpmTrie<MapData, [u8; 16], BanEntry>,
    allow_v4: LpmTrie<MapData, u32, u32>,
    allow_v6: LpmTrie<MapData, [u8; 16], u32>,
}

/// A second handle on the map behind `map` (a duplicate of its file descriptor).
fn dup(map: &MapData, name: &'static str) -> Result<MapData, XdpError> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| XdpError::Bpffs {
            message: format!("cannot duplicate the descriptor of map {name}: {e}"),
        })?;
    MapData::from_fd(fd).map_err(map_err(name, "open"))
}

impl Xdp {
    /// Read-only handles on the ban maps for the inline mode's per-request lookups.
    pub fn ban_maps(&self) -> Result<BanMaps, XdpError> {
        let hash = |m: &MapData, name| -> Result<_, XdpError> {
            let data = dup(m, name)?;
            Ok(aya::maps::Map::HashMap(data))
        };
        let lpm = |m: &MapData, name| -> Result<_, XdpError> {
            let data = dup(m, name)?;
            Ok(aya::maps::Map::LpmTrie(data))
        };
        Ok(BanMaps {
            bans_v4: HashMap::try_from(hash(self.bans_v4.map(), MAP_BANS_V4)?)
                .map_err(map_err(MAP_BANS_V4, "open"))?,
            bans_v6: HashMap::try_from(hash(self.bans_v6.map(), MAP_BANS_V6)?)
                .map_err(map_err(MAP_BANS_V6, "open"))?,
            cidr_v4: LpmTrie::try_from(lpm(self.cidr_v4.map(), MAP_CIDR_V4)?)
                .map_err(map_err(MAP_CIDR_V4, "open"))?,
            cidr_v6: LpmTrie::try_from(lpm(self.cidr_v6.map(), MAP_CIDR_V6)?)
                .map_err(map_err(MAP_CIDR_V6, "open"))?,
            allow_v4: LpmTrie::try_from(lpm(self.allow_v4.map(), MAP_ALLOW_V4)?)
                .map_err(map_err(MAP_ALLOW_V4, "open"))?,
            allow_v6: LpmTrie::try_from(lpm(self.allow_v6.map(), MAP_ALLOW_V6)?)
                .map_err(map_err(MAP_ALLOW_V6, "open"))?,
        })
    }
}

/// True when a ban entry with `expires` still applies at `now` (monotonic ns), as the program
/// decides it.
fn live(expires: u64, now: u64) -> bool {
    let expires = expires & !BAN_CHECK_ALLOW;
    expires == 0 || expires > now
}

/// A lookup's answer: `Ok(None)` for a missing key, the entry, or the error.
fn found<V>(r: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl BanMaps {
    /// Whether `ip` is banned at `now_ns` (`CLOCK_MONOTONIC`), exactly or by CIDR, with the
    /// program's rules: an expired entry does not count, and a ban flagged as overlapping the
    /// allowlist does not count for an allowlisted address. Two to four syscalls.
    pub fn banned(&self, ip: IpAddr, now_ns: u64) -> Result<Option<BanHit>, XdpError> {
        match ip {
            IpAddr::V4(a) => {
                let key = v4(a);
                let allowed = || -> Result<bool, XdpError> {
                    Ok(found(self.allow_v4.get(&Key::new(32, key), 0))
                        .map_err(map_err(MAP_ALLOW_V4, "get"))?
                        .is_some())
                };
                let exact =
                    found(self.bans_v4.get(&key, 0)).map_err(map_err(MAP_BANS_V4, "get"))?;
                if let Some(e) = exact.filter(|e| live(e.expires_ns, now_ns)) {
                    if e.expires_ns & BAN_CHECK_ALLOW == 0 || !allowed()? {
                        return Ok(Some(BanHit::Exact));
                    }
                    return Ok(None);
                }
                // A lookup of a full-length key in an LPM trie answers its longest match.
                cidr(
                    found(self.cidr_v4.get(&Key::new(32, key), 0))
                        .map_err(map_err(MAP_CIDR_V4, "get"))?,
                    now_ns,
                    allowed,
                )
            }
            IpAddr::V6(a) => {
                let key = a.octets();
                let allowed = || -> Result<bool, XdpError> {
                    Ok(found(self.allow_v6.get(&Key::new(128, key), 0))
                        .map_err(map_err(MAP_ALLOW_V6, "get"))?
                        .is_some())
                };
                let exact =
                    found(self.bans_v6.get(&key, 0)).map_err(map_err(MAP_BANS_V6, "get"))?;
                if let Some(e) = exact.filter(|e| live(e.expires_ns, now_ns)) {
                    if e.expires_ns & BAN_CHECK_ALLOW == 0 || !allowed()? {
                        return Ok(Some(BanHit::Exact));
                    }
                    return Ok(None);
                }
                cidr(
                    found(self.cidr_v6.get(&Key::new(128, key), 0))
                        .map_err(map_err(MAP_CIDR_V6, "get"))?,
                    now_ns,
                    allowed,
                )
            }
        }
    }
}

/// The answer for a CIDR entry found for an address (if any).
fn cidr(
    entry: Option<BanEntry>,
    now_ns: u64,
    allowed: impl FnOnce() -> Result<bool, XdpError>,
) -> Result<Option<BanHit>, XdpError> {
    let Some(e) = entry.filter(|e| live(e.expires_ns, now_ns)) else {
        return Ok(None);
    };
    if e.expires_ns & BAN_CHECK_ALLOW != 0 && allowed()? {
        return Ok(None);
    }
    Ok(Some(BanHit::Cidr))
}
